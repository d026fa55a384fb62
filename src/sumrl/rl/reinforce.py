"""REINFORCE with a moving-average baseline (Ahmadian et al. 2024, "Back to Basics").

The whole completion is one action: A = R - b, with R = score - beta * KL(pi || pi_ref) of the
completion and b a moving average of past batches' mean R.
"""

from __future__ import annotations

from sumrl.config import RLConfig
from sumrl.rl import advantages as F
from sumrl.rl.method import Method, Rollout


class Reinforce(Method):
    name = "reinforce"

    def __init__(self, cfg: RLConfig):
        super().__init__(cfg)
        self.baseline: float | None = None

    def advantages(self, batch: Rollout):
        returns = F.kl_shaped_return(batch.scores, F.sequence_kl(batch.logp, batch.ref_logp, batch.mask),
                                     batch.kl_coef)
        if self.baseline is None:  # the first batch has no past: its own mean is the only baseline there is
            self.baseline = returns.mean().item()
        adv = returns - self.baseline
        self.baseline = F.moving_average(self.baseline, returns.mean().item(), self.cfg.reinforce.baseline_decay)
        if self.cfg.variance_regularized:
            adv = F.variance_regularize(adv, batch.sigma)
        return adv, {"returns": returns, "baseline": self.baseline}

    def loss(self, logp, batch, idx, adv, extra, values=None):
        return F.sequence_pg_loss(logp, batch.logp[idx], batch.mask[idx], adv[idx]), {}

    def state_dict(self) -> dict:
        return {"baseline": self.baseline}

    def load_state_dict(self, state: dict) -> None:
        self.baseline = state["baseline"]
