"""The math of the RL methods, as small pure functions on tensors (unit-tested by hand in tests/test_rl_math.py).

Shapes: N completions, T completion tokens; `mask` [N, T] is 1 up to and including the first EOS.
"""

from __future__ import annotations

import torch


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    return (x * mask).sum() if dim is None else (x * mask).sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    if dim is None:
        return masked_sum(x, mask) / mask.sum().clamp_min(1)
    return masked_sum(x, mask, dim) / mask.sum(dim).clamp_min(1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


# --- KL between the policy and the reference, estimated on the policy's own samples -----------------

def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token log-ratio log pi/pi_ref: unbiased for KL(pi || pi_ref) summed over a sampled completion."""
    return logp - ref_logp


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 = (r - 1) - log r with r = pi_ref/pi: unbiased, non-negative, lower variance."""
    log_r = ref_logp - logp
    return torch.expm1(log_r) - log_r


def sequence_kl(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL of the whole completion (one action): sum_t log pi(y_t)/pi_ref(y_t) over valid tokens -> [N]."""
    return masked_sum(kl_k1(logp, ref_logp), mask, dim=1)


# --- Sequence-level returns (the completion is one action: Ahmadian et al. 2024) ---------------------

def penalized_scores(scores: torch.Tensor, has_eos: torch.Tensor, missing_eos_penalty: float) -> torch.Tensor:
    """A completion that ran out of tokens before EOS loses `missing_eos_penalty` from its score."""
    return scores - missing_eos_penalty * (~has_eos).float()


def kl_shaped_return(scores: torch.Tensor, seq_kl: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """R(x, y) = r_phi(x, y) - beta * log(pi(y|x) / pi_ref(y|x))."""
    return scores - kl_coef * seq_kl


def moving_average(baseline: float | None, batch_mean: float, decay: float) -> float:
    """b <- decay * b + (1 - decay) * mean(R); the first batch initializes b to its own mean."""
    if baseline is None:
        return batch_mean
    return decay * baseline + (1 - decay) * batch_mean


def running_mean(baseline: float | None, count: int, batch: torch.Tensor) -> tuple[float, int]:
    """b <- the mean of every return seen so far (count of them); the paper's "moving average" read literally."""
    total = (baseline or 0.0) * count + batch.sum().item()
    count += batch.numel()
    return total / count, count


def group_advantages(returns: torch.Tensor, k: int, scale: bool, eps: float = 1e-4) -> torch.Tensor:
    """GRPO (Shao et al. 2024): (r - mean of its group of k) / (std of the group + eps); scale=False drops the
    division (Dr. GRPO, Liu et al. 2025). `returns` is prompt-major [P*k]; std is the unbiased sample std."""
    grouped = returns.view(-1, k)
    adv = grouped - grouped.mean(1, keepdim=True)
    if scale:
        adv = adv / (grouped.std(1, keepdim=True) + eps)
    return adv.reshape(-1)


def leave_one_out_baseline(returns: torch.Tensor, k: int) -> torch.Tensor:
    """RLOO: b_i = mean of the other k-1 returns of the same prompt. `returns` is prompt-major [P*k]."""
    grouped = returns.view(-1, k)
    baseline = (grouped.sum(1, keepdim=True) - grouped) / (k - 1)
    return baseline.reshape(-1)


def variance_regularize(advantages: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """A = (R - b) / (1 + sigma): trust a reward less where the probabilistic RM is unsure."""
    return advantages / (1 + sigma)


# --- Token-level returns for PPO ------------------------------------------------------------------

def per_token_rewards(scores: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor,
                      kl_coef: float) -> torch.Tensor:
    """r_t = -beta * log(pi/pi_ref)(y_t) at every valid token, plus the RM score at the last valid token."""
    rewards = -kl_coef * kl_k1(logp, ref_logp) * mask
    last = (mask.sum(1) - 1).clamp_min(0).long()
    rewards[torch.arange(len(scores)), last] += scores
    return rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation. delta_t = r_t + gamma V_{t+1} - V_t, A_t = delta_t + gamma lam A_{t+1};
    V is 0 after the last valid token. Returns (advantages, returns = A + V), zero on masked positions."""
    values = values * mask
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros(rewards.size(0), dtype=rewards.dtype, device=rewards.device)
    next_adv = torch.zeros_like(next_value)
    for t in reversed(range(rewards.size(1))):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = (delta + gamma * lam * next_adv) * mask[:, t]
        next_value = values[:, t]
        advantages[:, t] = next_adv
    return advantages, (advantages + values) * mask


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - Var(returns - V) / Var(returns) over valid tokens: 1 is a perfect value model, <= 0 a useless one."""
    var = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    residual = returns - values
    var_residual = masked_mean((residual - masked_mean(residual, mask)) ** 2, mask)
    return 1 - var_residual / var.clamp_min(1e-12)


# --- Losses ---------------------------------------------------------------------------------------

def clipped_sequence_pg_loss(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor,
                             advantages: torch.Tensor, clip_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE on the whole completion with PPO's trust region per token: -sum_t min(A r_t, A clip(r_t, 1 +- eps))
    averaged over completions, with r_t = pi/pi_old; also the fraction of clipped tokens.

    On-policy r_t = 1 and nothing is clipped, so the gradient is A_i * grad log pi(y_i|x_i); later mini-batches
    and epochs of the same rollout are importance-weighted, and held near pi_old by the clip.
    """
    ratio = torch.exp(logp - old_logp)
    adv = advantages.unsqueeze(1)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1 - clip_range, 1 + clip_range)
    loss = masked_sum(torch.maximum(unclipped, clipped), mask, dim=1).mean()
    return loss, masked_mean((clipped > unclipped).float(), mask)


def token_mean_clipped_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor,
                            mask: torch.Tensor, advantages: torch.Tensor, clip_range: float,
                            kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO's objective: per completion, the token mean of max(-A r_t, -A clip(r_t)) + beta * k3(pi, pi_ref)_t,
    then the mean over completions (kl_coef 0: KL is in the reward instead). Also the clipped fraction."""
    ratio = torch.exp(logp - old_logp)
    adv = advantages.unsqueeze(1)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1 - clip_range, 1 + clip_range)
    per_token = torch.maximum(unclipped, clipped)
    if kl_coef:
        per_token = per_token + kl_coef * kl_k3(logp, ref_logp)
    loss = masked_mean(per_token, mask, dim=1).mean()
    return loss, masked_mean((clipped > unclipped).float(), mask)


def clipped_pg_loss(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor,
                    clip_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO: mean over tokens of max(-A r, -A clip(r, 1-eps, 1+eps)); also the fraction of clipped tokens."""
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_frac = masked_mean((clipped > unclipped).float(), mask)
    return loss, clip_frac


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                       value_clip: float) -> torch.Tensor:
    """0.5 * max((V - R)^2, (clip(V, V_old +- eps) - R)^2), the value update held near the rollout's values."""
    clipped = old_values + (values - old_values).clamp(-value_clip, value_clip)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)
