"""The RL guardrails (rl/guards.py) by hand, and in the loop: logged, checkpointed and resumed."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from sumrl.config import RLConfig
from sumrl.params import load_params
from sumrl.rl import advantages as F
from sumrl.rl.guards import Guards, adaptive_kl_update, length_penalty, merge_moments
from sumrl.rl.method import Rollout
from test_rl_loop import _params, _train

from conftest import ROOT


def cfg(**over) -> RLConfig:
    """The default rl params with the guard keys set (kl_coef 0.1, fixed control, no shaping) and `over` on top."""
    base = {"kl_coef": 0.1, "kl_control": {"kind": "fixed", "target": 4.0, "horizon": 100},
            "reward_normalization": False, "length_penalty": 0.0}
    rl = {**load_params(ROOT / "params.yaml", check_files=False)["rl"], **base, **over}
    return RLConfig.from_params({"rl": rl})


def rollout(scores, lengths) -> Rollout:
    n, t = len(scores), max(lengths)
    mask = torch.tensor([[1.0] * L + [0.0] * (t - L) for L in lengths])
    zeros = torch.zeros(n, t)
    return Rollout(None, torch.zeros(n, t, dtype=torch.long), mask, torch.ones(n, dtype=torch.bool), zeros, zeros,
                   torch.tensor(scores), torch.zeros(n))


def test_adaptive_kl_moves_beta_toward_the_target_by_ziegler_s_rule():
    # KL 6 against target 4: error 0.5 clipped to 0.2; 8 completions over a 100-completion horizon
    assert adaptive_kl_update(0.1, 6.0, 4.0, 8, 100) == pytest.approx(0.1 * (1 + 0.2 * 8 / 100))
    assert adaptive_kl_update(0.1, 3.6, 4.0, 8, 100) == pytest.approx(0.1 * (1 - 0.1 * 8 / 100))
    g = Guards(cfg(kl_control={"kind": "adaptive", "target": 4.0, "horizon": 100}))
    g.update(6.0, 8)
    assert g.kl_coef == pytest.approx(0.1016)
    fixed = Guards(cfg())
    fixed.update(60.0, 8)
    assert fixed.kl_coef == 0.1


def test_running_moments_equal_those_of_all_scores_seen():
    a, b = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, -4.0])
    count, mean, m2 = merge_moments(*merge_moments(0, 0.0, 0.0, a), b)
    everything = torch.cat([a, b]).double()
    assert count == 5 and mean == pytest.approx(everything.mean().item())
    assert m2 / count == pytest.approx(everything.var(unbiased=False).item())


def test_normalized_scores_use_the_statistics_including_this_batch():
    g = Guards(cfg(reward_normalization=True))
    first = g.shape(rollout([1.0, 3.0], [2, 2]), None)
    assert first.scores.tolist() == pytest.approx([-1.0, 1.0])  # mean 2, std 1
    second = g.shape(rollout([5.0, 7.0], [2, 2]), None)  # all four: mean 4, std sqrt(5)
    assert second.scores.tolist() == pytest.approx([1 / math.sqrt(5), 3 / math.sqrt(5)])
    resumed = Guards(cfg(reward_normalization=True))
    resumed.load_state_dict(g.state_dict())
    assert resumed.shape(rollout([4.0], [2]), None).scores.tolist() == pytest.approx(
        g.shape(rollout([4.0], [2]), None).scores.tolist())


def test_length_penalty_is_symmetric_in_log_length_ratio():
    pen = length_penalty(torch.tensor([5.0, 20.0, 10.0]), torch.tensor([10, 10, 10]), 0.5)
    assert pen.tolist() == pytest.approx([0.5 * math.log(2), 0.5 * math.log(2), 0.0])
    g = Guards(cfg(length_penalty=0.5))
    shaped = g.shape(rollout([1.0, 1.0], [5, 10]), torch.tensor([10, 10]))
    assert shaped.scores.tolist() == pytest.approx([1 - 0.5 * math.log(2), 1.0])
    assert shaped.kl_coef == 0.1
    with pytest.raises(ValueError, match="reference length"):
        g.shape(rollout([1.0], [3]), None)


def test_explained_variance_by_hand():
    returns = torch.tensor([[1.0, 3.0]])
    mask = torch.ones(1, 2)
    assert F.explained_variance(returns.clone(), returns, mask).item() == pytest.approx(1.0)
    assert F.explained_variance(torch.zeros(1, 2), returns, mask).item() == pytest.approx(0.0)
    assert F.explained_variance(torch.tensor([[2.0, 2.0]]), returns, mask).item() == pytest.approx(0.0)


def test_adaptive_run_logs_beta_k3_and_resumes_its_guard_state(tiny_model_dir, rl_inputs, tmp_path):
    params = _params(tiny_model_dir, "rl.total_episodes=16", "rl.checkpoint_every=2", "rl.reward_normalization=true",
                     "rl.kl_control={kind: adaptive, target: 0.5, horizon: 16}")
    _train(params, "ppo", rl_inputs, tmp_path, "whole")
    _train(params, "ppo", rl_inputs, tmp_path, "split", stop_after=3)
    _train(params, "ppo", rl_inputs, tmp_path, "split")
    whole = list(csv.DictReader(open(tmp_path / "whole" / "curve.csv")))
    split = list(csv.DictReader(open(tmp_path / "split" / "curve.csv")))
    betas = [float(r["kl_coef"]) for r in whole]
    assert betas[0] == params["rl"]["kl_coef"] and len(set(betas)) > 1  # beta moved
    assert all(float(r["kl_k3"]) >= 0 and r["explained_variance"] != "" for r in whole)
    # the resumed run had the same beta and normalization statistics: the same rewards and betas step by step
    for a, b in zip(whole, split):
        assert float(a["kl_coef"]) == pytest.approx(float(b["kl_coef"]), rel=1e-12)
        assert float(a["reward_mean"]) == pytest.approx(float(b["reward_mean"]), abs=1e-6)
