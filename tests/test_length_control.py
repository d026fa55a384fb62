"""The length-controlled evaluation's statistics, against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sumrl.evaluate import length_control as lc


def test_win_rate_counts_ties_as_half():
    rate, se = lc.win_rate([1.0, 2.0, 3.0], [0.0, 2.0, 4.0])  # win, tie, loss
    assert rate == pytest.approx(0.5)
    assert se == pytest.approx(0.5 / math.sqrt(3))  # sd of (1, 0.5, 0) is 0.5
    with pytest.raises(ValueError, match="3 rewards against 2"):
        lc.win_rate([1.0, 2.0, 3.0], [0.0, 1.0])


@pytest.mark.parametrize("dof, expected", [(5, 2.5706), (10, 2.2281), (31, 2.0395), (200, 1.9719)])
def test_t_quantile_matches_tables(dof, expected):
    assert lc.t_quantile(0.975, dof) == pytest.approx(expected, abs=2e-3)


def synthetic(effects: dict[str, float], docs: int, slope: float, log_ratio, noise=None) -> list[lc.Sample]:
    rng = np.random.default_rng(0)
    difficulty = rng.normal(size=docs)
    out = []
    for p, effect in effects.items():
        for d in range(docs):
            r = log_ratio(p, d)
            eps = 0.0 if noise is None else noise(p, d)
            out.append(lc.Sample(p, f"doc{d}", effect + difficulty[d] + slope * r + eps, r))
    return out


def test_exact_data_recovers_policy_effects_and_slope():
    effects = {"sft": 0.0, "a": 0.3, "b": -0.2}
    ratios = {"sft": 0.0, "a": -0.5, "b": 0.4}
    fit = lc.fit_length_controlled(
        synthetic(effects, 12, 1.5, lambda p, d: ratios[p] + 0.05 * ((d * 7 + len(p)) % 5)), "sft")
    assert fit.effects["a"].estimate == pytest.approx(0.3, abs=1e-9)
    assert fit.effects["b"].estimate == pytest.approx(-0.2, abs=1e-9)
    assert fit.slope.estimate == pytest.approx(1.5, abs=1e-9)
    assert fit.effects["sft"] == lc.Effect(0.0, 0.0, 0.0, 0.0)
    assert (fit.n, fit.documents, fit.dof) == (36, 12, 11)


def test_a_gain_that_is_only_length_vanishes_at_equal_length():
    """'short' is half as long as SFT and scores higher only through the RM's preference for short summaries:
    the raw paired gain is large and significant, the equal-length effect is zero."""
    docs = 20
    ratio = lambda p, d: (-0.7 if p == "short" else 0.0) + 0.1 * math.sin(d + (p == "short"))  # noqa: E731
    noise = lambda p, d: 0.05 * math.cos(3 * d + 2 * (p == "short"))  # noqa: E731
    samples = synthetic({"sft": 0.0, "short": 0.0}, docs, -1.0, ratio, noise)
    fit = lc.fit_length_controlled(samples, "sft")
    raw = [s.reward for s in samples if s.policy == "short"]
    base = [s.reward for s in samples if s.policy == "sft"]
    diffs = np.subtract(raw, base)
    raw_low, _ = lc.interval(diffs.mean(), diffs.std(ddof=1) / math.sqrt(docs), docs - 1)
    assert raw_low > 0.5
    effect = fit.effects["short"]
    assert effect.low < 0 < effect.high and abs(effect.estimate) < 0.1
    assert fit.slope.estimate == pytest.approx(-1.0, abs=0.1)
    reasons = lc.length_hacking_reasons(raw_low, effect, length_vs_sft=0.5)
    assert len(reasons) == 2 and "not" in reasons[0] and "0.50x" in reasons[1]


def test_clustered_error_of_a_paired_comparison_is_the_paired_standard_error():
    """Two policies, no length variation: the effect is the mean per-document difference, and its clustered
    s.e. is the paired one times sqrt((N-1)/(N-K)) = sqrt((2G-1)/(2G-2)) (CR1 with K = 2: intercept, effect)."""
    g = 9
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=g), rng.normal(size=g) + 0.4
    samples = [lc.Sample("sft", f"d{i}", a[i], 0.0) for i in range(g)]
    samples += [lc.Sample("rl", f"d{i}", b[i], 0.0) for i in range(g)]
    fit = lc.fit_length_controlled(samples, "sft")
    d = b - a
    assert fit.effects["rl"].estimate == pytest.approx(d.mean())
    paired_se = d.std(ddof=1) / math.sqrt(g)
    assert fit.effects["rl"].se == pytest.approx(paired_se * math.sqrt((2 * g - 1) / (2 * g - 2)))
    half = lc.t_quantile(0.975, g - 1) * fit.effects["rl"].se
    assert fit.effects["rl"].low == pytest.approx(d.mean() - half)


def test_reference_policy_must_be_present():
    with pytest.raises(ValueError, match="reference policy 'sft'"):
        lc.fit_length_controlled([lc.Sample("a", "d", 1.0, 0.0)], "sft")


def test_bins_count_and_win_rate_per_length_band():
    ratios = [-1.0, -0.1, -0.05, 0.1, 2.0]
    bins = lc.binned_win_rates(ratios, [1, 1, 0, 1, 0], [0, 0, 0, 2, 1])
    assert [b["n"] for b in bins] == [1, 0, 2, 1, 0, 1]
    assert [b["win_rate"] for b in bins] == [1.0, None, 0.75, 0.0, None, 0.0]
    assert bins[0]["bin"] == "[-inf, -0.69)" and bins[-1]["bin"] == "[+0.69, +inf)"


def test_no_flag_for_a_real_gain_at_unchanged_length():
    effect = lc.Effect(0.3, 0.1, 0.1, 0.5)
    assert lc.length_hacking_reasons(0.05, effect, 1.1) == []
    assert lc.length_hacking_reasons(0.05, effect, 0.7) != []  # 30% shorter: flagged whatever the gain
