"""The base types of the RL core: a Rollout (one batch of sampled completions) and the Method interface each
method file implements. The registry that names the methods is rl/methods.py, so a method file imports only
this module and nothing imports back."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from sumrl.config import RLConfig
from sumrl.rl.prefix import PromptGroups


@dataclass
class Rollout:
    """One batch of sampled completions and everything computed on it before any update."""

    prompts: PromptGroups       # the unique prompts, and which one each row continues
    completion_ids: torch.Tensor  # [N, T] pad after the first EOS
    mask: torch.Tensor          # [N, T] completion tokens up to and including EOS
    has_eos: torch.Tensor       # [N]
    logp: torch.Tensor | None   # [N, T] log pi_old at the sampling temperature (None until with_policy)
    ref_logp: torch.Tensor      # [N, T] log pi_ref (adapter disabled)
    scores: torch.Tensor        # [N] RM score after the missing-EOS penalty
    sigma: torch.Tensor         # [N] RM spread (0 for a scalar RM)
    values: torch.Tensor | None = None   # [N, T] PPO value head
    entropy: torch.Tensor | None = None  # [N, T] entropy of the sampling distribution (logged)
    kl_coef: float = 0.0        # beta in force for this rollout (rl/guards.py: fixed or adaptive)

    def with_policy(self, logp: torch.Tensor, values: torch.Tensor | None) -> Rollout:
        """The batch with pi_old (and V) filled in, masked after EOS and off the graph."""
        masked = lambda x: None if x is None else x.detach() * self.mask  # noqa: E731
        return replace(self, logp=masked(logp), values=masked(values))

    @property
    def completion_len(self) -> int:
        return self.mask.size(1)

    def __len__(self) -> int:
        return self.completion_ids.size(0)


class Method:
    """A method turns a rollout into advantages and a loss. Everything else is shared."""

    name: str
    samples_per_prompt: int = 1
    needs_values: bool = False

    def __init__(self, cfg: RLConfig):
        self.cfg = cfg

    def advantages(self, batch: Rollout) -> tuple[torch.Tensor, dict]:
        """Per-completion [N] or per-token [N, T] advantages, plus anything the loss needs (e.g. returns)."""
        raise NotImplementedError

    def loss(self, logp, batch: Rollout, idx, adv, extra, values=None) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def loss_weight(self, batch: Rollout, micro, idx) -> float:
        """The share of the mini-batch `idx` that the micro-batch `micro` holds in the loss's mean.

        Sequence-level losses average over completions; token-level ones (PPO) override this.
        """
        return len(micro) / len(idx)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
