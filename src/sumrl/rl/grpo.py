"""GRPO (Shao et al. 2024, DeepSeekMath): k completions per prompt, each advantage its return's distance from
the group mean over the group's std (rl.grpo.scale_rewards: group), or over nothing (none: Dr. GRPO, Liu et al.
2025); no value model. The loss is PPO's clipped surrogate (rl.clip_range) averaged over each completion's
tokens, then over completions.

The KL to the reference (rl.grpo.kl) is either in the reward, as the other methods have it (R = score - beta *
KL of the completion), or GRPO's own: beta * k3(pi, pi_ref) per token in the loss, the reward left alone.
Beta is rl.kl_coef, or the adaptive controller's (rl.kl_control) in both cases.
"""

from __future__ import annotations

from sumrl.config import RLConfig
from sumrl.rl import advantages as F
from sumrl.rl.method import Method, Rollout


class GRPO(Method):
    name = "grpo"

    def __init__(self, cfg: RLConfig):
        super().__init__(cfg)
        self.samples_per_prompt = cfg.grpo.k
        self.kl_in_loss = cfg.grpo.kl == "loss"

    def advantages(self, batch: Rollout):
        seq_kl = F.sequence_kl(batch.logp, batch.ref_logp, batch.mask)
        returns = batch.scores if self.kl_in_loss else F.kl_shaped_return(batch.scores, seq_kl, batch.kl_coef)
        adv = F.group_advantages(returns, self.samples_per_prompt, self.cfg.grpo.scale_rewards == "group")
        if self.cfg.variance_regularized:
            adv = F.variance_regularize(adv, batch.sigma)
        return adv, {"returns": returns}

    def loss(self, logp, batch, idx, adv, extra, values=None):
        beta = batch.kl_coef if self.kl_in_loss else 0.0
        loss, clip_frac = F.token_mean_clipped_loss(logp, batch.logp[idx], batch.ref_logp[idx], batch.mask[idx],
                                                    adv[idx], self.cfg.clip_range, beta)
        return loss, {"clip_frac": clip_frac.item()}
