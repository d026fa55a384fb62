"""The shared RL machinery: one rollout path, one scoring path, one log-prob path, all reading each
prompt once however many completions it has (rl/prefix.py).

The policy is the SFT model with a fresh LoRA adapter; the reference is the same weights with the
adapter disabled, so there is never a second copy of the policy in memory. (This is right only because
the SFT adapter was merged into the SFT weights by `consolidate` before RL starts.)
"""

from __future__ import annotations

import os

import torch
from peft import get_peft_model

from sumrl.config import LoraSettings, RLConfig
from sumrl.data.prompts import PromptFormat
from sumrl.generation import finish_completions
from sumrl.models.load import lora_config
from sumrl.models.scoring import rewards_from_logits, score_texts, token_logprobs
from sumrl.rl.advantages import penalized_scores
from sumrl.rl.method import Rollout
from sumrl.rl.prefix import PromptGroups, continue_prompts, hidden_after_prompts, prompt_cache, sample, unwrap


def add_lora(model, lora: LoraSettings):
    return get_peft_model(model, lora_config(lora, "CAUSAL_LM"))


class ValueHead(torch.nn.Module):
    """V(s_t) from the policy's last hidden state (a shared trunk, as in Stiennon et al. and trlx)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.float()).squeeze(-1)


def forward_completion(policy, groups: PromptGroups, completion_ids: torch.Tensor, temperature: float,
                       value_head: ValueHead | None = None):
    """log pi(y_t | x, y_<t) for every completion token [N, T], plus V(s_t) when there is a value head.

    Only completion positions reach the vocabulary projection; each prompt runs once (rl/prefix.py).
    The pass feeds the prompt's last token with y_<T, so position t predicts y_t.
    """
    inputs = torch.cat([groups.last_tokens().to(completion_ids.device), completion_ids[:, :-1]], dim=1)
    # Both passes go through the model's own forward (under DeepSpeed, the engine's: ZeRO-3 needs its hooks).
    # The prompt pass keeps one logit, by index: a slice there makes torch copy the vocabulary matrix.
    last = torch.tensor([-1], device=inputs.device)
    state = prompt_cache(policy, groups.drop_last_token(), logits_to_keep=last)
    out = continue_prompts(policy, state, inputs, output_hidden_states=value_head is not None)
    logits = out.logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    values = value_head(out.hidden_states[-1]) if value_head is not None else None
    return token_logprobs(logits, completion_ids), values


@torch.no_grad()
def score_completions(reward_model, rm_tokenizer, prompts: list[str], texts: list[str], kind: str
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Reward and sigma for each prompt + completion text, each prompt's tokens run once.

    A row shares the tokens its full text has in common with its prompt alone, so the result is that of
    `score_texts` on the same texts whatever the tokenizer does at the seam. A reward model without a
    `score` head (not a transformers sequence classifier) is scored on the whole texts.
    """
    full = [p + t for p, t in zip(prompts, texts)]
    head = getattr(unwrap(reward_model), "score", None)
    if head is None:
        return score_texts(reward_model, rm_tokenizer, full, kind, batch_size=len(full))
    encode = lambda batch: rm_tokenizer(batch, add_special_tokens=False).input_ids  # noqa: E731
    unique = list(dict.fromkeys(prompts))
    ids, alone = encode(full), dict(zip(unique, encode(unique)))
    prefix = [min(len(os.path.commonprefix([row, alone[p]])), len(row) - 1) for row, p in zip(ids, prompts)]
    groups = PromptGroups.from_token_lists([row[:n] for row, n in zip(ids, prefix)])
    tails = [row[n:] for row, n in zip(ids, prefix)]
    width = max(len(t) for t in tails)
    pad = rm_tokenizer.pad_token_id if rm_tokenizer.pad_token_id is not None else 0
    hidden = hidden_after_prompts(reward_model, groups, torch.tensor([t + [pad] * (width - len(t)) for t in tails]))
    last = torch.tensor([len(t) - 1 for t in tails], device=hidden.device)
    r, s = rewards_from_logits(head(hidden[torch.arange(len(tails), device=hidden.device), last]), kind)
    return r, s


@torch.no_grad()
def rollout(policy, fmt: PromptFormat, reward_model, rm_tokenizer, rm_kind: str, prompts: list[str], cfg: RLConfig,
            value_head: ValueHead | None = None, with_pi_old: bool = True) -> tuple[Rollout, dict]:
    """Sample, then score: pi_old (unless the update's own forward will be it) and pi_ref log-probs,
    values (PPO), RM scores with the EOS penalty.

    The RM scores every completion closed by EOS (`fmt.completion`), as it was trained and as `evaluate`
    scores it: a cut-off completion is not shown to the RM in a shape it never saw; it pays the
    missing-EOS penalty instead.
    """
    tokenizer = fmt.tokenizer
    groups = PromptGroups.from_token_lists(tokenizer(prompts, add_special_tokens=False).input_ids)
    policy.eval()
    sampled, entropy = sample(policy, groups, cfg.max_new_tokens, cfg.temperature, tokenizer.eos_token_id,
                              tokenizer.pad_token_id)
    completion_ids, mask, has_eos, texts = finish_completions(tokenizer, sampled)
    mask = mask.float()
    with policy.disable_adapter():
        ref_logp, _ = forward_completion(policy, groups, completion_ids, cfg.temperature)
    raw_scores, sigma = score_completions(reward_model, rm_tokenizer, prompts, [fmt.completion(t) for t in texts],
                                          rm_kind)
    scores = penalized_scores(raw_scores, has_eos, cfg.missing_eos_penalty)
    batch = Rollout(groups, completion_ids, mask, has_eos, None, ref_logp * mask, scores, sigma, entropy=entropy * mask,
                    kl_coef=cfg.kl_coef)
    if with_pi_old:
        batch = batch.with_policy(*forward_completion(policy, groups, completion_ids, cfg.temperature, value_head))
    stats = {"score_mean": raw_scores.mean().item(), "length": mask.sum(1).mean().item(),
             "eos_rate": has_eos.float().mean().item()}
    return batch, stats
