"""Guardrails between the reward model and the RL update, shared by every method.

- **KL control** (`rl.kl_control`): `fixed` keeps beta = rl.kl_coef; `adaptive` is Ziegler et al. 2019's
  controller: after each rollout, beta <- beta * (1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon), with
  KL the batch's mean sequence KL and n its completions, so the measured KL tracks `target`.
- **Reward normalization** (`rl.reward_normalization`): scores minus the running mean, over the running
  standard deviation of every score seen so far (this batch included), as OpenRLHF and trlx whiten rewards.
  The statistics are saved with the checkpoint, so a resumed run normalizes as the uninterrupted one did.
- **Length penalty** (`rl.length_penalty`): score - c * |log(length / reference length)|, with the prompt's
  human reference as the target length: a policy gains nothing by drifting shorter or longer than people write.

Applied in that order to the scores after the missing-EOS penalty, before the method's advantages.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from sumrl.config import RLConfig
from sumrl.rl.method import Rollout

ADAPTIVE_CLIP = 0.2


def adaptive_kl_update(coef: float, kl: float, target: float, n: int, horizon: int) -> float:
    """Ziegler et al. 2019: a proportional controller on log beta."""
    error = min(max(kl / target - 1.0, -ADAPTIVE_CLIP), ADAPTIVE_CLIP)
    return coef * (1.0 + error * n / horizon)


def merge_moments(count: int, mean: float, m2: float, batch: torch.Tensor) -> tuple[int, float, float]:
    """Chan et al.'s parallel update of (count, mean, sum of squared deviations) with one batch."""
    b = batch.double()
    n_b = b.numel()
    if not n_b:
        return count, mean, m2
    mean_b = b.mean().item()
    m2_b = ((b - mean_b) ** 2).sum().item()
    total = count + n_b
    delta = mean_b - mean
    return total, mean + delta * n_b / total, m2 + m2_b + delta**2 * count * n_b / total


def length_penalty(lengths: torch.Tensor, reference_lengths: torch.Tensor, coef: float) -> torch.Tensor:
    """c * |log(length / reference length)| per completion."""
    ratio = lengths.clamp_min(1).double() / reference_lengths.clamp_min(1).double()
    return (coef * ratio.log().abs()).to(lengths.dtype if lengths.is_floating_point() else torch.float32)


class Guards:
    """The KL coefficient in force, and the score shaping above; one per RL run, checkpointed with it."""

    def __init__(self, cfg: RLConfig):
        self.control = cfg.kl_control
        self.kl_coef = float(cfg.kl_coef)
        self.normalize = cfg.reward_normalization
        self.length_coef = cfg.length_penalty
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count > 1 else 1.0

    def shape(self, batch: Rollout, reference_lengths: torch.Tensor | None) -> Rollout:
        """The rollout with shaped scores and the KL coefficient the methods fold into their returns."""
        scores = batch.scores
        if self.normalize:
            self.count, self.mean, self.m2 = merge_moments(self.count, self.mean, self.m2, scores)
            scores = (scores - self.mean) / max(self.std, 1e-6)
        if self.length_coef:
            if reference_lengths is None:
                raise ValueError("rl.length_penalty needs the reference length of every RL prompt")
            scores = scores - length_penalty(batch.mask.sum(1), reference_lengths.to(scores.device),
                                             self.length_coef).to(scores.dtype)
        return replace(batch, scores=scores, kl_coef=self.kl_coef)

    def update(self, kl: float, completions: int) -> None:
        """After a step: move beta toward the target KL (adaptive control only)."""
        if self.control.kind == "adaptive":
            self.kl_coef = adaptive_kl_update(self.kl_coef, kl, self.control.target, completions,
                                              self.control.horizon)

    def state_dict(self) -> dict:
        return {"kl_coef": self.kl_coef, "count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict) -> None:
        self.kl_coef, self.count, self.mean, self.m2 = state["kl_coef"], state["count"], state["mean"], state["m2"]
