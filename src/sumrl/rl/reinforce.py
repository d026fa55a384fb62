"""REINFORCE with a baseline (Ahmadian et al. 2024, "Back to Basics").

The whole completion is one action: A = R - b, with R = score - beta * KL(pi || pi_ref) of the
completion and b, by rl.reinforce.baseline, either an exponential moving average of past batches' mean R
(`ema`, decay rl.reinforce.baseline_decay; the default) or the mean of every R seen so far
(`running_mean`, the paper's "moving average of all rewards"). The batch being scored is not in its own
baseline, except the first batch, which has no past. A reused rollout is held to rl.clip_range.
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
        self.count = 0  # returns in the running mean

    def advantages(self, batch: Rollout):
        returns = F.kl_shaped_return(batch.scores, F.sequence_kl(batch.logp, batch.ref_logp, batch.mask),
                                     batch.kl_coef)
        if self.baseline is None:  # the first batch has no past: its own mean is the only baseline there is
            self.baseline = returns.mean().item()
        adv = returns - self.baseline
        if self.cfg.reinforce.baseline == "running_mean":
            self.baseline, self.count = F.running_mean(self.baseline if self.count else None, self.count, returns)
        else:
            self.baseline = F.moving_average(self.baseline, returns.mean().item(),
                                             self.cfg.reinforce.baseline_decay)
        if self.cfg.variance_regularized:
            adv = F.variance_regularize(adv, batch.sigma)
        return adv, {"returns": returns, "baseline": self.baseline}

    def loss(self, logp, batch, idx, adv, extra, values=None):
        loss, clip_frac = F.clipped_sequence_pg_loss(logp, batch.logp[idx], batch.mask[idx], adv[idx],
                                                     self.cfg.clip_range)
        return loss, {"clip_frac": clip_frac.item()}

    def state_dict(self) -> dict:
        return {"baseline": self.baseline, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.baseline, self.count = state["baseline"], state.get("count", 0)
