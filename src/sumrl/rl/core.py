"""The shared RL machinery: one rollout path, one scoring path, one log-prob path.

The policy is the SFT model with a fresh LoRA adapter; the reference is the same weights with the
adapter disabled, so there is never a second copy of the policy in memory. (This is right only because
the SFT adapter was merged into the SFT weights by `consolidate` before RL starts.)
"""

from __future__ import annotations

import torch
from peft import get_peft_model

from sumrl.data.prompts import PromptFormat
from sumrl.generation import Completions, generate
from sumrl.models.load import lora_config
from sumrl.models.scoring import score_texts, token_logprobs
from sumrl.rl.advantages import penalized_scores
from sumrl.rl.methods import Rollout


def add_lora(model, lora: dict):
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


def forward_completion(policy, input_ids, attention_mask, completion_len: int, temperature: float,
                       value_head: ValueHead | None = None, with_entropy: bool = False):
    """log pi(y_t) for completion tokens only (logits_to_keep), plus V(s_t) and entropy when asked."""
    out = policy(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=completion_len + 1,
                 output_hidden_states=value_head is not None, use_cache=False)
    logits = out.logits[:, :-1].float() / temperature  # position t predicts token t+1
    logp = token_logprobs(logits, input_ids[:, -completion_len:])
    values = None
    if value_head is not None:
        values = value_head(out.hidden_states[-1][:, -completion_len - 1:-1])
    entropy = None
    if with_entropy:
        log_probs = logits.log_softmax(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
    return logp, values, entropy


@torch.no_grad()
def rollout(policy, fmt: PromptFormat, reward_model, rm_tokenizer, rm_kind: str, prompts: list[str], cfg: dict,
            value_head: ValueHead | None = None) -> tuple[Rollout, Completions, dict]:
    """Sample, then score: pi_old and pi_ref log-probs, values (PPO), RM scores with the EOS penalty.

    The RM scores every completion closed by EOS (`fmt.completion`), as it was trained and as `evaluate`
    scores it: a cut-off completion is not shown to the RM in a shape it never saw; it pays the
    missing-EOS penalty instead.
    """
    tokenizer = fmt.tokenizer
    policy.eval()
    comp = generate(policy, tokenizer, prompts, cfg["max_new_tokens"], do_sample=True,
                    temperature=cfg["temperature"])
    ids, attn, T = comp.input_ids, comp.attention_mask, comp.completion_ids.size(1)
    logp, values, entropy = forward_completion(policy, ids, attn, T, cfg["temperature"], value_head, with_entropy=True)
    with policy.disable_adapter():
        ref_logp, _, _ = forward_completion(policy, ids, attn, T, cfg["temperature"])
    texts = [p + fmt.completion(t) for p, t in zip(prompts, comp.texts)]
    raw_scores, sigma = score_texts(reward_model, rm_tokenizer, texts, rm_kind, batch_size=len(texts))
    scores = penalized_scores(raw_scores, comp.has_eos, cfg["missing_eos_penalty"])
    mask = comp.completion_mask.float()
    batch = Rollout(ids, attn, mask, comp.has_eos, logp * mask, ref_logp * mask, scores, sigma,
                    None if values is None else values * mask)
    stats = {
        "score_mean": raw_scores.mean().item(),
        "entropy": (entropy * mask).sum().item() / mask.sum().clamp_min(1).item(),
        "length": mask.sum(1).mean().item(),
        "eos_rate": comp.has_eos.float().mean().item(),
    }
    return batch, comp, stats

