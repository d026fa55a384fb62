"""PPO (Schulman et al. 2017) as in Stiennon et al. 2020: per-token KL penalty, the RM score at the last
token, a value head on the policy's last hidden state, GAE, clipped ratio and clipped value loss."""

from __future__ import annotations

from sumrl.rl import advantages as F
from sumrl.rl.method import Method, Rollout


class PPO(Method):
    name = "ppo"
    needs_values = True

    def advantages(self, batch: Rollout):
        ppo = self.cfg.ppo
        rewards = F.per_token_rewards(batch.scores, batch.logp, batch.ref_logp, batch.mask, batch.kl_coef)
        adv, returns = F.gae(rewards, batch.values, batch.mask, ppo.gamma, ppo.lam)
        if self.cfg.variance_regularized:
            adv = F.variance_regularize(adv, batch.sigma.unsqueeze(1))
        explained = F.explained_variance(batch.values, returns, batch.mask).item()
        return F.masked_whiten(adv, batch.mask), {"returns": returns, "explained_variance": explained}

    def loss_weight(self, batch, micro, idx):
        """The losses are means over completion tokens: a micro-batch weighs its share of the tokens."""
        return (batch.mask[micro].sum() / batch.mask[idx].sum()).item()

    def loss(self, logp, batch, idx, adv, extra, values=None):
        ppo = self.cfg.ppo
        mask = batch.mask[idx]
        pg_loss, clip_frac = F.clipped_pg_loss(logp, batch.logp[idx], mask, adv[idx], ppo.clip_range)
        vf_loss = F.clipped_value_loss(values, batch.values[idx], extra["returns"][idx], mask, ppo.value_clip)
        return pg_loss + ppo.vf_coef * vf_loss, {"clip_frac": clip_frac.item(), "value_loss": vf_loss.item()}
