"""REINFORCE Leave-One-Out (Ahmadian et al. 2024): k completions per prompt, each baselined by the
mean return of the other k-1. The baseline needs no memory and no value model. A reused rollout (epochs > 1,
or a later mini-batch) is held to rl.clip_range, as trl's RLOOTrainer does."""

from __future__ import annotations

from sumrl.config import RLConfig
from sumrl.rl import advantages as F
from sumrl.rl.method import Method, Rollout


class RLOO(Method):
    name = "rloo"

    def __init__(self, cfg: RLConfig):
        super().__init__(cfg)
        self.samples_per_prompt = cfg.rloo.k

    def advantages(self, batch: Rollout):
        returns = F.kl_shaped_return(batch.scores, F.sequence_kl(batch.logp, batch.ref_logp, batch.mask),
                                     batch.kl_coef)
        adv = returns - F.leave_one_out_baseline(returns, self.samples_per_prompt)
        if self.cfg.variance_regularized:
            adv = F.variance_regularize(adv, batch.sigma)
        return adv, {"returns": returns}

    def loss(self, logp, batch, idx, adv, extra, values=None):
        loss, clip_frac = F.clipped_sequence_pg_loss(logp, batch.logp[idx], batch.mask[idx], adv[idx],
                                                     self.cfg.clip_range)
        return loss, {"clip_frac": clip_frac.item()}
