"""The two model-scoring paths every stage shares: reward-model scores and completion log-probs.

Reward models come in two kinds:
  scalar         one logit; reward = that logit, sigma = 0.
  probabilistic  `num_scores` logits = a distribution p(s) over scores s = 1..n; reward = E[s],
                 sigma = sqrt(Var[s]). Trained with -log sum_{i>j} p_chosen(i) p_rejected(j).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def score_distribution(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilistic head: logits [B, n] -> (E[s], sigma) with s in 1..n."""
    probs = logits.float().softmax(-1)
    scores = torch.arange(1, logits.size(-1) + 1, dtype=probs.dtype, device=probs.device)
    mean = (probs * scores).sum(-1)
    var = (probs * (scores - mean.unsqueeze(-1)) ** 2).sum(-1)
    return mean, var.clamp_min(0).sqrt()


def probabilistic_preference_loss(chosen_logits: torch.Tensor, rejected_logits: torch.Tensor) -> torch.Tensor:
    """-log P(s_chosen > s_rejected) = -log sum_{i>j} p_c(i) p_r(j), averaged over the batch.

    P(s_c > s_r) = sum_i p_c(i) * CDF_r(i-1), with CDF_r(i-1) = sum_{j<i} p_r(j).
    """
    log_pc = F.log_softmax(chosen_logits.float(), -1)
    pr = F.softmax(rejected_logits.float(), -1)
    cdf_below = torch.cumsum(pr, -1) - pr  # sum_{j<i} p_r(j)
    return -torch.logsumexp(log_pc + torch.log(cdf_below.clamp_min(1e-12)), dim=-1).mean()


def rewards_from_logits(logits: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    if kind == "scalar":
        r = logits[:, 0].float()
        return r, torch.zeros_like(r)
    if kind == "probabilistic":
        return score_distribution(logits)
    raise ValueError(f"unknown reward model kind '{kind}'")


@torch.no_grad()
def score_texts(reward_model, tokenizer, texts: list[str], kind: str, batch_size: int = 8,
                max_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Reward and sigma for full texts (prompt + completion, as formatted by PromptFormat)."""
    device = next(reward_model.parameters()).device
    tokenizer.padding_side = "left"  # the sequence-classification head reads the last non-pad token
    pad_id = reward_model.config.pad_token_id
    if pad_id is not None and tokenizer.pad_token_id != pad_id:  # pad exactly as the RM was trained
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad_id)
    rewards, sigmas = [], []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                        add_special_tokens=False, truncation=max_length is not None, max_length=max_length).to(device)
        r, s = rewards_from_logits(reward_model(**enc).logits, kind)
        rewards.append(r.cpu())
        sigmas.append(s.cpu())
    return torch.cat(rewards), torch.cat(sigmas)


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] per position: [B, T, V], [B, T] -> [B, T].

    As logit[target] - logsumexp(logits): the [B, T, V] log-softmax is never materialized (at a 50k
    vocabulary it is the largest tensor of the pass, and its backward another).
    """
    return torch.gather(logits, 2, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def completion_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_len: int,
                        temperature: float = 1.0) -> torch.Tensor:
    """Per-token log pi(y_t | x, y_<t) for the last `completion_len` positions, in fp32.

    Only completion positions get logits (`logits_to_keep`): the prompt's vocabulary projection is
    never computed. Returns [B, T].
    """
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        logits_to_keep=completion_len + 1,
        use_cache=False,
    )
    logits = out.logits[:, :-1].float() / temperature  # position t predicts token t+1
    return token_logprobs(logits, input_ids[:, -completion_len:])
