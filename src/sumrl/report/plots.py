"""PNG figures for the report: training curves, reward versus KL, and summary-length histograms.

Each function writes one file and returns False when it has nothing to draw, so the report can say
which figure is missing and why instead of showing an empty axis.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: stages run without a display
import matplotlib.pyplot as plt  # noqa: E402

# Panels per curve file: (CSV column, axis title). Columns a run did not log are skipped.
SFT_PANELS = (("loss", "SFT loss"), ("learning_rate", "learning rate"))
REWARD_PANELS = (("loss", "reward-model loss"), ("accuracy", "pairwise accuracy"))
RL_PANELS = (("reward_mean", "reward (mean per rollout)"), ("kl", "KL to SFT"),
             ("length", "completion length (tokens)"), ("eos_rate", "EOS rate"))
FIXED_COLORS = {"base": "#7f7f7f", "sft": "#000000"}
LINESTYLES = ("-", "--", ":", "-.")


def save(fig, path: Path) -> None:
    fig.tight_layout()
    # No Software/date metadata: identical inputs give byte-identical PNGs.
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def palette(groups: list[str]) -> dict[str, str]:
    """A fixed colour per group (a method, or base/sft), so every figure colours a policy alike."""
    others = [g for g in groups if g not in FIXED_COLORS]
    cmap = plt.get_cmap("tab10")
    return {g: FIXED_COLORS.get(g) or matplotlib.colors.to_hex(cmap(others.index(g) % 10)) for g in groups}


def has_values(values: list[float]) -> bool:
    return any(not math.isnan(v) for v in values)


def plot_curves(runs: dict[str, dict[str, list[float]]], panels, path: Path,
                styles: dict[str, dict] | None = None) -> bool:
    """One panel per column that some run logged, one line per run, against `step`.

    styles: run label -> matplotlib line keywords (colour per method, dash pattern per seed).
    """
    panels = [(col, title) for col, title in panels if any(has_values(r.get(col, [])) for r in runs.values())]
    if not panels:
        return False
    ncols = min(2, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 3.4 * nrows), squeeze=False)
    for ax, (col, title) in zip(axes.flat, panels):
        for label, run in runs.items():
            if has_values(run.get(col, [])):
                ax.plot(run["step"], run[col], label=label, linewidth=1.2, **(styles or {}).get(label, {}))
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    if len(runs) > 1:
        axes.flat[0].legend(fontsize=8)
    save(fig, path)
    return True


def plot_reward_vs_kl(points: list[dict], path: Path, colors: dict[str, str]) -> bool:
    """Test-set reward (± s.e.) against KL to SFT, one colour per method; base and SFT as reference points.

    points: {"label", "group" (method or policy), "kl", "reward", "reward_se"}.
    """
    points = [p for p in points if p["kl"] is not None and p["reward"] is not None]
    if not points:
        return False
    groups = list(dict.fromkeys(p["group"] for p in points))
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for group in groups:
        mine = [p for p in points if p["group"] == group]
        ax.errorbar([p["kl"] for p in mine], [p["reward"] for p in mine],
                    yerr=[p["reward_se"] or 0.0 for p in mine], fmt="o", capsize=3, label=group,
                    color=colors.get(group))
    for p in points:
        ax.annotate(p["label"], (p["kl"], p["reward"]), textcoords="offset points", xytext=(5, 4), fontsize=7)
    ax.set_xlabel("KL to SFT (nats per summary)")
    ax.set_ylabel("reward-model score")
    ax.set_title("Reward versus KL on the test split")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, path)
    return True


def plot_length_histograms(lengths: dict[str, list[int]], path: Path, colors: dict[str, str]) -> bool:
    """Overlaid step histograms of summary length per policy, on shared bins."""
    lengths = {k: v for k, v in lengths.items() if v}
    if not lengths:
        return False
    low = min(min(v) for v in lengths.values())
    top = max(max(v) for v in lengths.values())
    bins = range(low, top + 2, max(1, (top + 1 - low) // 30))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for policy, values in lengths.items():
        ax.hist(values, bins=bins, histtype="step", linewidth=1.4, label=policy, color=colors.get(policy))
    ax.set_xlabel("summary length (tokens, EOS included)")
    ax.set_ylabel("test examples")
    ax.set_title("Summary lengths")
    ax.legend(fontsize=8)
    save(fig, path)
    return True
