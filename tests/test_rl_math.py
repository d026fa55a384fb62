"""The RL math against values computed by hand on small tensors."""

import math

import pytest
import torch

from sumrl.generation import completion_mask
from sumrl.models.scoring import probabilistic_preference_loss, score_distribution
from sumrl.rl import advantages as F


def test_leave_one_out_baseline_by_hand():
    # two prompts, k = 3: returns 1, 2, 6 | 0, 0, 3
    returns = torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0])
    baseline = F.leave_one_out_baseline(returns, k=3)
    assert baseline.tolist() == [4.0, 3.5, 1.5, 1.5, 1.5, 0.0]
    # with k = 2 the baseline is simply the other sample
    assert F.leave_one_out_baseline(torch.tensor([1.0, 5.0]), k=2).tolist() == [5.0, 1.0]


def test_moving_average_baseline():
    b = F.moving_average(None, 2.0, decay=0.9)
    assert b == 2.0  # the first batch initializes it
    b = F.moving_average(b, 4.0, decay=0.9)
    assert b == pytest.approx(0.9 * 2.0 + 0.1 * 4.0)
    b = F.moving_average(b, 0.0, decay=0.5)
    assert b == pytest.approx(0.5 * 2.2)


def test_gae_by_hand():
    # one completion of 3 tokens, gamma 0.9, lambda 0.5
    r = torch.tensor([[0.0, 1.0, 2.0]])
    v = torch.tensor([[0.5, 1.0, 1.5]])
    m = torch.ones(1, 3)
    adv, ret = F.gae(r, v, m, gamma=0.9, lam=0.5)
    d2 = 2.0 + 0.9 * 0.0 - 1.5           # 0.5
    d1 = 1.0 + 0.9 * 1.5 - 1.0           # 1.35
    d0 = 0.0 + 0.9 * 1.0 - 0.5           # 0.4
    a2 = d2
    a1 = d1 + 0.45 * a2
    a0 = d0 + 0.45 * a1
    assert adv[0].tolist() == pytest.approx([a0, a1, a2])
    assert ret[0].tolist() == pytest.approx([a0 + 0.5, a1 + 1.0, a2 + 1.5])


def test_gae_stops_at_the_mask():
    r = torch.tensor([[1.0, 1.0, 9.0]])
    v = torch.tensor([[0.0, 0.0, 7.0]])
    m = torch.tensor([[1.0, 1.0, 0.0]])  # the third token is after EOS
    adv, ret = F.gae(r, v, m, gamma=1.0, lam=1.0)
    assert adv[0].tolist() == pytest.approx([2.0, 1.0, 0.0])
    assert ret[0, 2].item() == 0.0


def test_per_token_rewards_put_the_score_on_the_last_valid_token():
    logp = torch.tensor([[-1.0, -1.0, -1.0], [-2.0, -2.0, -2.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-2.0, -2.0, -2.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    r = F.per_token_rewards(torch.tensor([3.0, 5.0]), logp, ref, mask, kl_coef=0.1)
    assert r[0].tolist() == pytest.approx([-0.05, 0.0, 0.05 + 3.0])
    assert r[1].tolist() == pytest.approx([5.0, 0.0, 0.0])


def test_ppo_clipping():
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    old = torch.zeros(1, 4)
    new = torch.log(torch.tensor([[1.5, 0.9, 0.5, 1.1]]))  # ratios
    mask = torch.ones(1, 4)
    loss, frac = F.clipped_pg_loss(new, old, mask, adv, clip_range=0.2)
    # token 0: A>0, r=1.5 -> clipped to 1.2; token 1: r=0.9 within; token 2: A<0, r=0.5 -> clip 0.8;
    # token 3: A<0, r=1.1 within. max(-A r, -A clip(r)):
    expected = [-1.2, -0.9, 0.8, 1.1]
    assert loss.item() == pytest.approx(sum(expected) / 4)
    assert frac.item() == pytest.approx(0.5)


def test_clipped_value_loss():
    v = torch.tensor([[2.0, 0.0]])
    old = torch.tensor([[1.0, 0.0]])
    ret = torch.tensor([[3.0, 1.0]])
    mask = torch.ones(1, 2)
    loss = F.clipped_value_loss(v, old, ret, mask, value_clip=0.5)
    # token 0: (2-3)^2 = 1 vs (1.5-3)^2 = 2.25 -> 2.25; token 1: 1 vs 1 -> 1
    assert loss.item() == pytest.approx(0.5 * (2.25 + 1.0) / 2)


def test_kl_estimators():
    logp = torch.tensor([[-1.0, -2.0, -3.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    assert F.sequence_kl(logp, ref, mask).tolist() == pytest.approx([0.5])
    k3 = F.kl_k3(logp, ref)
    assert k3[0, 0].item() == pytest.approx(math.exp(-0.5) - 1 + 0.5)
    assert (k3 >= 0).all()


def test_kl_shaped_return_and_eos_penalty():
    scores = torch.tensor([1.0, 2.0])
    pen = F.penalized_scores(scores, torch.tensor([True, False]), missing_eos_penalty=1.5)
    assert pen.tolist() == [1.0, 0.5]
    assert F.kl_shaped_return(pen, torch.tensor([2.0, 0.0]), kl_coef=0.1).tolist() == pytest.approx([0.8, 0.5])


def test_variance_regularization():
    adv = torch.tensor([2.0, -2.0, 1.0])
    sigma = torch.tensor([1.0, 0.0, 3.0])
    assert F.variance_regularize(adv, sigma).tolist() == pytest.approx([1.0, -2.0, 0.25])


def test_masking_after_eos():
    ids = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 9, 9, 9]])
    mask, has_eos = completion_mask(ids, eos_token_id=2)
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert has_eos.tolist() == [True, False, True]
    logp = torch.full((3, 4), -1.0)
    assert F.masked_sum(logp, mask.float(), dim=1).tolist() == [-2.0, -4.0, -1.0]


def test_sequence_pg_loss_gradient_is_reinforce_on_policy():
    # on-policy (old == new) the gradient w.r.t. each token log-prob is -A_i / N on valid tokens; nothing clips
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -0.5]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    adv = torch.tensor([2.0, -1.0])
    loss, clip_frac = F.clipped_sequence_pg_loss(logp, logp.detach(), mask, adv, clip_range=0.2)
    loss.backward()
    assert logp.grad.flatten().tolist() == pytest.approx([-1.0, -1.0, 0.5, 0.0])
    assert clip_frac.item() == 0.0


def test_clipped_sequence_pg_loss_stops_a_reused_rollout_past_the_trust_region():
    # one completion, A = +1, two tokens with ratios 1.5 (past 1.2: clipped, no gradient) and 0.5 (below: kept)
    old = torch.log(torch.tensor([[0.2, 0.4]]))
    logp = torch.log(torch.tensor([[0.3, 0.2]])).requires_grad_(True)
    loss, clip_frac = F.clipped_sequence_pg_loss(logp, old, torch.ones(1, 2), torch.tensor([1.0]), clip_range=0.2)
    assert loss.item() == pytest.approx(-(1.2 + 0.5))
    loss.backward()
    assert logp.grad.flatten().tolist() == pytest.approx([0.0, -0.5])  # d(-r)/dlogp = -r on the kept token
    assert clip_frac.item() == 0.5
    # A < 0 flips which side clips: the 0.5 ratio is held at 0.8, the 1.5 one is kept
    logp.grad = None
    loss, _ = F.clipped_sequence_pg_loss(logp, old, torch.ones(1, 2), torch.tensor([-1.0]), clip_range=0.2)
    assert loss.item() == pytest.approx(1.5 + 0.8)
    loss.backward()
    assert logp.grad.flatten().tolist() == pytest.approx([1.5, 0.0])


def test_running_mean_baseline_by_hand():
    b, n = F.running_mean(None, 0, torch.tensor([1.0, 3.0]))
    assert (b, n) == (2.0, 2)
    b, n = F.running_mean(b, n, torch.tensor([8.0]))
    assert (b, n) == (pytest.approx(4.0), 3)  # (1 + 3 + 8) / 3


def test_group_advantages_grpo_and_dr_grpo_by_hand():
    returns = torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0, 5.0])  # two groups of k = 3
    grpo = F.group_advantages(returns, k=3, scale=True)
    assert grpo.tolist() == pytest.approx([-1 / (1 + 1e-4), 0.0, 1 / (1 + 1e-4), 0.0, 0.0, 0.0])  # std 1, then 0
    assert F.group_advantages(returns, k=3, scale=False).tolist() == [-1.0, 0.0, 1.0, 0.0, 0.0, 0.0]


def test_grpo_loss_with_k3_kl_by_hand():
    # on-policy, A = 0: the loss is beta * mean_t k3, k3 = (e^(ref - logp) - 1) - (ref - logp)
    logp = torch.log(torch.tensor([[0.5, 0.25]])).requires_grad_(True)
    ref = torch.log(torch.tensor([[0.25, 0.25]]))
    loss, _ = F.token_mean_clipped_loss(logp, logp.detach(), ref, torch.ones(1, 2), torch.tensor([0.0]), 0.2, 0.1)
    k3 = (0.5 - 1) - math.log(0.5)  # first token: pi_ref / pi = 0.5; second: 1, k3 = 0
    assert loss.item() == pytest.approx(0.1 * k3 / 2)
    loss.backward()
    # d k3 / d logp = 1 - pi_ref / pi, times beta, over the 2 tokens of the mean
    assert logp.grad.flatten().tolist() == pytest.approx([0.1 * (1 - 0.5) / 2, 0.0])


def test_probabilistic_rm_expected_score_and_sigma():
    # p = 0.5 on score 2, 0.5 on score 4 -> E = 3, sigma = 1
    logits = torch.full((1, 10), -1e9)
    logits[0, 1] = 0.0
    logits[0, 3] = 0.0
    mean, sigma = score_distribution(logits)
    assert mean.item() == pytest.approx(3.0)
    assert sigma.item() == pytest.approx(1.0)


def test_probabilistic_rm_loss_by_hand():
    # 3 scores: p_c = (0.2, 0.3, 0.5), p_r = (0.6, 0.3, 0.1)
    pc = torch.tensor([[0.2, 0.3, 0.5]])
    pr = torch.tensor([[0.6, 0.3, 0.1]])
    # P(s_c > s_r) = p_c(2) p_r(1) + p_c(3) (p_r(1) + p_r(2)) = 0.3*0.6 + 0.5*0.9 = 0.63
    loss = probabilistic_preference_loss(pc.log(), pr.log())
    assert loss.item() == pytest.approx(-math.log(0.63), rel=1e-5)


def _rollout(scores: list[float], logp: float = -1.0, ref_logp: float = -1.5):
    """A rollout of len(scores) two-token completions with fixed log-probs (KL per completion = 2 * 0.5 = 1)."""
    from sumrl.rl.method import Rollout

    n = len(scores)
    full = lambda v: torch.full((n, 2), v)  # noqa: E731
    return Rollout(None, torch.zeros(n, 2, dtype=torch.long), torch.ones(n, 2), torch.ones(n, dtype=torch.bool),
                   full(logp), full(ref_logp), torch.tensor(scores), torch.zeros(n), kl_coef=0.5)


def _cfg(**rl):
    from sumrl.config import RLConfig
    from sumrl.params import load_params

    from conftest import ROOT

    params = load_params(ROOT / "params.yaml", check_files=False)
    for key, value in rl.items():
        section, _, field = key.partition("__")
        params["rl"][section] = {**params["rl"][section], field: value} if field else value
    return RLConfig.from_params(params)


@pytest.mark.parametrize("kl,expected", [
    ("reward", [-1.0, 1.0, -1.0, 1.0]),  # returns = score - 0.5 * KL 1: a constant shift, gone after the group mean
    ("loss", [-1.0, 1.0, -1.0, 1.0]),
])
def test_grpo_method_advantages(kl, expected):
    from sumrl.rl.grpo import GRPO

    method = GRPO(_cfg(grpo__k=2, grpo__kl=kl, grpo__scale_rewards="none"))
    adv, extra = method.advantages(_rollout([1.0, 3.0, 0.0, 2.0]))
    assert adv.tolist() == pytest.approx(expected)
    assert extra["returns"].tolist() == pytest.approx([1.0, 3.0, 0.0, 2.0] if kl == "loss" else [0.5, 2.5, -0.5, 1.5])


def test_reinforce_running_mean_baseline_through_the_method():
    from sumrl.rl.reinforce import Reinforce

    method = Reinforce(_cfg(reinforce__baseline="running_mean", kl_coef=0.0))
    first, _ = method.advantages(_rollout([1.0, 3.0]))   # returns 0.5, 2.5 (KL 1 at beta 0.5): own mean 1.5
    assert first.tolist() == pytest.approx([-1.0, 1.0])
    second, _ = method.advantages(_rollout([5.0, 5.0]))  # returns 4.5: baseline is the first batch's mean
    assert second.tolist() == pytest.approx([3.0, 3.0])
    resumed = Reinforce(_cfg(reinforce__baseline="running_mean"))
    resumed.load_state_dict(method.state_dict())
    assert resumed.state_dict() == {"baseline": pytest.approx((0.5 + 2.5 + 4.5 + 4.5) / 4), "count": 4}
