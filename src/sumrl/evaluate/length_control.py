"""Reward comparisons that hold length fixed: is a policy better, or only shorter (or longer)?

A reward model that learned a length preference rewards a policy for changing length alone (Singhal et al.
2023). So every policy's reward is read three ways here, all on the same test inputs:

- **win rates**: per input, does the policy's summary outscore SFT's / the human reference's (1, tie 0.5, 0)?
  Pairing removes the per-document difficulty that a difference of means keeps.
- **a length-controlled effect** (Stiennon et al. 2020, section 4.4; Dubois et al. 2024): one least-squares fit
  over every policy's samples of reward ~ policy + document + slope * log(length / reference length); a
  policy's effect is its coefficient minus SFT's, i.e. its reward gain over SFT *at equal length*, with a 95%
  interval from standard errors clustered by document (each document's summaries share its noise).
- **bins** of log(length / reference length), with the win rate against the reference in each.

Pure functions on lists of numbers: the report calls them, the tests check them by hand.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

# The length-hacking flag's second trigger: mean length moved this much from SFT's, in either direction.
LENGTH_MOVE = 0.25
# Edges of the log(length / reference length) bins: 0 is "as long as the reference"; +-0.29 is 0.75x / 1.33x.
LOG_RATIO_EDGES = (-0.69, -0.29, 0.0, 0.29, 0.69)


def t_quantile(p: float, dof: int) -> float:
    """Student-t quantile by the Cornish-Fisher expansion around the normal one (within 1e-3 for dof >= 4;
    numpy has no t distribution, and scipy is not worth installing for one number)."""
    z = NormalDist().inv_cdf(p)
    if dof <= 0:
        return math.nan
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / dof + g2 / dof**2 + g3 / dof**3 + g4 / dof**4


def interval(estimate: float, se: float | None, dof: int, level: float = 0.95) -> tuple[float, float]:
    if se is None or math.isnan(estimate):
        return math.nan, math.nan
    half = t_quantile(0.5 + level / 2, dof) * se
    return estimate - half, estimate + half


# ---- pairwise -----------------------------------------------------------------------------------------

def win_rate(rewards: Sequence[float], opponents: Sequence[float]) -> tuple[float, float | None]:
    """Mean and s.e. of 1 (win), 0.5 (tie), 0 (loss) over paired rewards."""
    if len(rewards) != len(opponents):
        raise ValueError(f"win_rate: {len(rewards)} rewards against {len(opponents)} opponents")
    wins = np.array([1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(rewards, opponents)])
    if not len(wins):
        return math.nan, None
    se = float(wins.std(ddof=1) / math.sqrt(len(wins))) if len(wins) > 1 else None
    return float(wins.mean()), se


def log_length_ratio(length: float, reference_length: float) -> float:
    return math.log(max(length, 1) / max(reference_length, 1))


# ---- the length-controlled fit ------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    policy: str
    document: str
    reward: float
    log_ratio: float  # log(length / reference length)


@dataclass(frozen=True)
class Effect:
    estimate: float
    se: float
    low: float
    high: float


@dataclass(frozen=True)
class LengthFit:
    """reward ~ policy + document + slope * log_ratio, fitted over every policy's samples."""

    effects: dict[str, Effect]  # policy -> its reward minus the reference policy's at equal length
    slope: Effect               # reward per unit of log(length / reference length): the RM's length preference
    n: int
    documents: int
    dof: int                    # documents - 1: the t distribution's degrees of freedom (clustered errors)


def fit_length_controlled(samples: Sequence[Sample], reference_policy: str) -> LengthFit:
    """Least squares with document fixed effects and standard errors clustered by document.

    The design: one column per policy other than `reference_policy` (its effect), one per document but the
    first (absorbs how hard each input is), the log length ratio, and an intercept.
    """
    policies = list(dict.fromkeys(s.policy for s in samples))
    documents = list(dict.fromkeys(s.document for s in samples))
    if reference_policy not in policies:
        raise ValueError(f"length-controlled fit: no samples of the reference policy '{reference_policy}'")
    others = [p for p in policies if p != reference_policy]
    x = np.zeros((len(samples), 2 + len(others) + len(documents) - 1))
    col_policy = {p: 2 + i for i, p in enumerate(others)}
    col_doc = {d: 2 + len(others) + i - 1 for i, d in enumerate(documents) if i > 0}
    for row, s in enumerate(samples):
        x[row, 0] = 1.0
        x[row, 1] = s.log_ratio
        if s.policy in col_policy:
            x[row, col_policy[s.policy]] = 1.0
        if s.document in col_doc:
            x[row, col_doc[s.document]] = 1.0
    y = np.array([s.reward for s in samples])
    # The document columns are nested in the clusters: they are not counted in the small-sample correction
    # (as Stata's xtreg, fe does); counting them would double the variance of a paired comparison.
    counted = int(np.linalg.matrix_rank(x[:, :2 + len(others)]))
    cov, beta, dof = _clustered_ols(x, y, [s.document for s in samples], counted)

    def effect(col: int) -> Effect:
        se = float(math.sqrt(max(cov[col, col], 0.0)))
        low, high = interval(float(beta[col]), se, dof)
        return Effect(float(beta[col]), se, low, high)

    effects = {reference_policy: Effect(0.0, 0.0, 0.0, 0.0), **{p: effect(c) for p, c in col_policy.items()}}
    return LengthFit({p: effects[p] for p in policies}, effect(1), len(samples), len(documents), dof)


def _clustered_ols(x: np.ndarray, y: np.ndarray, clusters: list[str], counted: int
                   ) -> tuple[np.ndarray, np.ndarray, int]:
    """OLS coefficients and their cluster-robust covariance (CR1: G/(G-1) * (N-1)/(N-K), K = `counted`)."""
    n, k = x.shape
    xtx_inv = np.linalg.pinv(x.T @ x)
    beta = xtx_inv @ x.T @ y
    residual = y - x @ beta
    groups = list(dict.fromkeys(clusters))
    index = {g: i for i, g in enumerate(groups)}
    scores = np.zeros((len(groups), k))
    for row, g in enumerate(clusters):
        scores[index[g]] += x[row] * residual[row]
    g = len(groups)
    correction = (g / max(g - 1, 1)) * ((n - 1) / max(n - counted, 1))
    cov = correction * xtx_inv @ (scores.T @ scores) @ xtx_inv
    return cov, beta, g - 1


# ---- bins ---------------------------------------------------------------------------------------------

def bin_labels(edges: Sequence[float] = LOG_RATIO_EDGES) -> list[str]:
    bounds = ["-inf", *(f"{e:+.2f}" for e in edges), "+inf"]
    return [f"[{lo}, {hi})" for lo, hi in zip(bounds, bounds[1:])]


def bin_index(log_ratio: float, edges: Sequence[float] = LOG_RATIO_EDGES) -> int:
    return int(np.searchsorted(np.asarray(edges), log_ratio, side="right"))


def binned_win_rates(log_ratios: Sequence[float], rewards: Sequence[float], opponents: Sequence[float],
                     edges: Sequence[float] = LOG_RATIO_EDGES) -> list[dict]:
    """Per bin of log(length / reference length): how many summaries fall in it and their win rate against
    the opponent (the reference), so that a reader compares policies within one length band."""
    out = [{"bin": label, "n": 0, "win_rate": None} for label in bin_labels(edges)]
    members: list[list[int]] = [[] for _ in out]
    for i, r in enumerate(log_ratios):
        members[bin_index(r, edges)].append(i)
    for entry, idx in zip(out, members):
        entry["n"] = len(idx)
        if idx:
            entry["win_rate"] = win_rate([rewards[i] for i in idx], [opponents[i] for i in idx])[0]
    return out


# ---- the flag -----------------------------------------------------------------------------------------

def length_hacking_reasons(raw_low: float, controlled: Effect, length_vs_sft: float) -> list[str]:
    """Why a policy's reward gain over SFT may be length, not quality (empty: no sign of it).

    raw_low is the lower end of the raw paired gain's 95% interval; length_vs_sft is mean length / SFT's.
    """
    reasons = []
    if raw_low > 0 and not controlled.low > 0:
        reasons.append("its raw reward gain over SFT is significant but the gain at equal length is not")
    if abs(length_vs_sft - 1) > LENGTH_MOVE:
        reasons.append(f"its mean length is {length_vs_sft:.2f}x SFT's (more than {LENGTH_MOVE:.0%} away)")
    return reasons
