"""The numbers of the report: per-policy rows, the spread across RL seeds, metrics.json, sample tables."""

from __future__ import annotations

import json
import math

from sumrl.evaluate import length_control as lc
from sumrl.evaluate.metrics import mean, mean_stderr, sample_std
from sumrl.report.document import Block, Quote, Table
from sumrl.report.inputs import Inputs

REFERENCE_POLICY = "sft"
# Columns of the seed summary: the metrics a reader compares methods by.
SEED_METRICS = ("lc_reward_delta_vs_sft", "win_rate_vs_sft", "rouge1", "rouge2", "rougeL", "reward", "kl_to_sft",
                "length", "eos_rate")
METRIC_NAMES = {"lc_reward_delta_vs_sft": "Δ reward vs SFT at equal length", "win_rate_vs_sft": "Win rate vs SFT",
                "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "reward": "Reward",
                "kl_to_sft": "KL to SFT", "length": "Length", "eos_rate": "EOS rate"}
DIGITS = {"length": 1, "eos_rate": 2}
ROUND = 6  # metrics.json precision: enough for any comparison, short enough to read in `dvc metrics diff`


# ---- formatting ------------------------------------------------------------------------------------

def fmt(x: float | None, digits: int = 3, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def fmt_pm(x: float | None, spread: float | None, digits: int = 3, signed: bool = False) -> str:
    text = fmt(x, digits, signed)
    return text if spread is None or text == "n/a" else f"{text} ± {spread:.{digits}f}"


def fmt_pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def fmt_value(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return str(value)


# ---- per-policy summary ----------------------------------------------------------------------------

def paired_delta(examples: list[dict], reference: list[dict], key: str = "reward") -> tuple[float, float | None]:
    """Mean and s.e. of the per-example difference to the reference policy on the same test inputs.

    Pairing removes the spread between easy and hard inputs, which both policies share.
    """
    diffs = [a - b for a, b in zip(*paired(examples, reference, key))]
    if not diffs:
        return math.nan, None
    return mean_stderr(diffs)


def paired(examples: list[dict], reference: list[dict], key: str = "reward") -> tuple[list[float], list[float]]:
    """`key` of the examples both policies have, matched by test id."""
    ref = {e["id"]: e[key] for e in reference}
    shared = [e for e in examples if e["id"] in ref]
    return [e[key] for e in shared], [ref[e["id"]] for e in shared]


def log_ratios(examples: list[dict]) -> list[float]:
    return [lc.log_length_ratio(e["length"], e["reference_length"]) for e in examples]


def length_fit(inputs: Inputs) -> lc.LengthFit:
    """reward ~ policy + document + slope * log(length / reference length), over every policy's samples."""
    samples = [lc.Sample(policy, str(e["id"]), e["reward"], r)
               for policy in inputs.policies
               for e, r in zip(inputs.evals[policy]["examples"], log_ratios(inputs.evals[policy]["examples"]))]
    return lc.fit_length_controlled(samples, REFERENCE_POLICY)


def policy_summary(inputs: Inputs, fit: lc.LengthFit) -> dict[str, dict]:
    """policy -> its eval metrics, its reward against SFT's and the reference's on the same inputs (paired
    difference, win rates), its reward gain over SFT at equal length (from `fit`), length ratios and the
    length flag."""
    ref = inputs.evals[REFERENCE_POLICY]["examples"]
    sft_length = inputs.evals[REFERENCE_POLICY]["metrics"]["length"]
    out = {}
    for policy in inputs.policies:
        ev = inputs.evals[policy]
        examples = ev["examples"]
        delta, delta_se = paired_delta(examples, ref)
        raw_low, raw_high = lc.interval(delta, delta_se, len(examples) - 1)
        vs_sft, vs_sft_se = lc.win_rate(*paired(examples, ref))
        vs_ref, vs_ref_se = lc.win_rate([e["reward"] for e in examples], [e["reference_reward"] for e in examples])
        effect = fit.effects[policy]
        length_vs_sft = ev["metrics"]["length"] / sft_length
        reasons = [] if policy == REFERENCE_POLICY else lc.length_hacking_reasons(raw_low, effect, length_vs_sft)
        out[policy] = {
            **ev["metrics"], "n": ev.get("n", len(examples)),
            "reward_delta_vs_sft": delta, "reward_delta_vs_sft_se": delta_se,
            "reward_delta_vs_sft_low": raw_low, "reward_delta_vs_sft_high": raw_high,
            "lc_reward_delta_vs_sft": effect.estimate, "lc_reward_delta_vs_sft_se": effect.se,
            "lc_reward_delta_vs_sft_low": effect.low, "lc_reward_delta_vs_sft_high": effect.high,
            "win_rate_vs_sft": vs_sft, "win_rate_vs_sft_se": vs_sft_se,
            "win_rate_vs_reference": vs_ref, "win_rate_vs_reference_se": vs_ref_se,
            "length_vs_reference": ev["metrics"]["length"] / ev["metrics"]["reference_length"],
            "length_vs_sft": length_vs_sft,
            "length_hacking": bool(reasons), "length_hacking_reasons": reasons,
        }
    return out


def length_bins(inputs: Inputs) -> dict[str, list[dict]]:
    """policy -> per bin of log(length / reference length): count and win rate against the reference."""
    return {policy: lc.binned_win_rates(log_ratios(ev["examples"]), [e["reward"] for e in ev["examples"]],
                                        [e["reference_reward"] for e in ev["examples"]])
            for policy, ev in ((p, inputs.evals[p]) for p in inputs.policies)}


def fmt_interval(low: float, high: float) -> str:
    return "n/a" if math.isnan(low) else f"[{low:+.3f}, {high:+.3f}]"


def headline_table(summary: dict[str, dict]) -> Table:
    """What a reader should look at first: the gain at equal length, then pairwise win rates, then length."""
    header = ("Policy", "Δ reward vs SFT at equal length [95% CI]", "Win rate vs SFT", "Win rate vs reference",
              "Length (× reference, × SFT)", "Length hacking?", "Δ reward vs SFT, raw [95% CI]", "Reward ± s.e.")
    rows = []
    for policy, m in summary.items():
        sft = policy == REFERENCE_POLICY
        rows.append((
            policy,
            "0 (the reference)" if sft else
            f"{fmt(m['lc_reward_delta_vs_sft'], signed=True)} "
            f"{fmt_interval(m['lc_reward_delta_vs_sft_low'], m['lc_reward_delta_vs_sft_high'])}",
            "—" if sft else fmt_pm(m["win_rate_vs_sft"], m["win_rate_vs_sft_se"], 2),
            fmt_pm(m["win_rate_vs_reference"], m["win_rate_vs_reference_se"], 2),
            f"{fmt(m['length'], 1)} ({fmt(m['length_vs_reference'], 2)}×, {fmt(m['length_vs_sft'], 2)}×)",
            "—" if sft else ("**yes**" if m["length_hacking"] else "no"),
            "0" if sft else f"{fmt(m['reward_delta_vs_sft'], signed=True)} "
            f"{fmt_interval(m['reward_delta_vs_sft_low'], m['reward_delta_vs_sft_high'])}",
            fmt_pm(m["reward"], m["reward_se"]),
        ))
    return Table(header, tuple(rows), "numbers")


def length_bins_table(bins: dict[str, list[dict]]) -> Table:
    labels = [b["bin"] for b in next(iter(bins.values()))]
    header = ("Policy", *(f"log(len/ref) in {label}" for label in labels))
    rows = tuple((policy, *(f"{fmt(b['win_rate'], 2)} (n={b['n']})" if b["n"] else "—" for b in entries))
                 for policy, entries in bins.items())
    return Table(header, rows, "numbers")


def comparison_table(summary: dict[str, dict]) -> Table:
    """The trlx-style TL;DR table; a probabilistic reward model adds its mean sigma (its own uncertainty)."""
    with_sigma = any(m.get("sigma") is not None for m in summary.values())
    header = ("Policy", "ROUGE-1", "ROUGE-2", "ROUGE-L", "Reward ± s.e.", "Δ reward vs SFT", "KL to SFT",
              "Length", "EOS rate", *(("RM sigma",) if with_sigma else ()))
    rows = tuple(
        (policy, fmt(m["rouge1"]), fmt(m["rouge2"]), fmt(m["rougeL"]), fmt_pm(m["reward"], m["reward_se"]),
         fmt_pm(m["reward_delta_vs_sft"], m["reward_delta_vs_sft_se"], signed=True),
         fmt_pm(m["kl_to_sft"], m.get("kl_to_sft_se")), fmt(m["length"], 1), fmt_pct(m["eos_rate"]),
         *((fmt(m.get("sigma")),) if with_sigma else ()))
        for policy, m in summary.items()
    )
    return Table(header, rows, "numbers")


# ---- across seeds ----------------------------------------------------------------------------------

def seed_spread(summary: dict[str, dict], methods: dict[str, str]) -> dict[str, dict[str, dict]]:
    """method -> metric -> {mean, sd, n} over that method's seeds (sd with ddof=1)."""
    by_method: dict[str, list[dict]] = {}
    for policy, method in methods.items():
        by_method.setdefault(method, []).append(summary[policy])
    out = {}
    for method, runs in by_method.items():
        out[method] = {}
        for key in SEED_METRICS:
            values = [r[key] for r in runs if r.get(key) is not None]
            out[method][key] = {"mean": mean(values), "sd": sample_std(values), "n": len(values)}
    return out


def seed_table(spread: dict[str, dict[str, dict]]) -> Table:
    header = ("Method", "Seeds", *(f"{METRIC_NAMES[k]} (mean ± sd)" for k in SEED_METRICS))
    rows = tuple(
        (method, str(stats[SEED_METRICS[0]]["n"]),
         *(fmt_pm(stats[k]["mean"], stats[k]["sd"], DIGITS.get(k, 3)) for k in SEED_METRICS))
        for method, stats in spread.items()
    )
    return Table(header, rows, "numbers")


# ---- metrics.json ----------------------------------------------------------------------------------

def _rounded(d: dict) -> dict:
    """Numbers only (dvc metrics compares numbers), rounded; absent values are left out."""
    out = {}
    for key, value in d.items():
        if isinstance(value, bool):
            out[key] = value
        elif isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
            out[key] = round(value, ROUND) if isinstance(value, float) else value
    return out


def metrics_json(summary: dict[str, dict], spread: dict | None, inputs: Inputs, fit: lc.LengthFit) -> dict:
    out: dict = {policy: _rounded(m) for policy, m in summary.items()}
    out["length_model"] = _rounded({"slope": fit.slope.estimate, "slope_se": fit.slope.se, "slope_low": fit.slope.low,
                                    "slope_high": fit.slope.high, "samples": fit.n, "documents": fit.documents})
    if spread:
        out["across_seeds"] = {
            method: _rounded({f"{k}_{stat}": v[stat] for k, v in stats.items() for stat in ("mean", "sd")})
            for method, stats in spread.items()
        }
    if inputs.reward_eval is not None:
        out["reward_model"] = _rounded(flatten(inputs.reward_eval))
    checks = {f"{stage}_ok": bool(c.get("ok")) for stage, c in inputs.consolidation.items() if c is not None}
    if checks:
        out["consolidation"] = checks
    return out


# ---- the LLM judge ---------------------------------------------------------------------------------

def _pairwise_cells(pairwise: dict | None, name: str) -> tuple[str, str]:
    if pairwise is None:
        return ("—" if name == "reference" else "n/a (the opponent itself)"), ""
    counted = f"{pairwise['valid']} of {pairwise['pairs']} ({pairwise['invalid']} invalid)"
    return fmt_pm(pairwise["win_rate"], pairwise["win_rate_se"]), counted


def judge_table(judge: dict, policies: list[str]) -> Table:
    """Win rate against the opponent and G-Eval score per policy, with every invalid reply counted in sight.

    Rows follow the report's policy order (judge.json's keys are sorted), the human references last; a policy
    the judge did not see (its params named other policies) says so.
    """
    header = ("Policy", f"Win rate vs {judge['against']} ± s.e.", "Pairs judged", "G-Eval (1-10) ± s.e.",
              "Summaries scored")
    rows = []
    for name in [*policies, "reference"]:
        entry = judge["policies"].get(name)
        if entry is None:
            rows.append((name, "not judged", "", "", ""))
            continue
        geval = entry["geval"]
        scored = (f"{geval['scored']} of {geval['summaries']} "
                  f"({geval['invalid_replies']} of {geval['replies']} replies invalid)")
        rows.append((name, *_pairwise_cells(entry["pairwise"], name), fmt_pm(geval["mean"], geval["se"], 2), scored))
    return Table(header, tuple(rows), "numbers")


# ---- key/value and sample tables -------------------------------------------------------------------

def flatten(d: dict, prefix: str = "") -> dict:
    """Nested dicts as dotted keys, for showing a JSON file of unknown shape as one table."""
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def key_value_table(d: dict) -> Table:
    return Table(("Key", "Value"), tuple((k, fmt_value(v)) for k, v in flatten(d).items()), "numbers")


def sample_ids(inputs: Inputs, n: int) -> list[str]:
    """The first n test inputs, in test-split order: the same examples in every report."""
    return [e["id"] for e in inputs.evals[REFERENCE_POLICY]["examples"][:n]]


def sample_blocks(inputs: Inputs, example_id: str) -> list[Block]:
    """One test input: the document, then the reference and each policy's summary with its reward."""
    per_policy = {p: {e["id"]: e for e in inputs.evals[p]["examples"]} for p in inputs.policies}
    first = inputs.generations[REFERENCE_POLICY].get(example_id, {})
    rows = [("reference", first.get("reference", "n/a"), "", "")]
    for policy in inputs.policies:
        gen = inputs.generations[policy].get(example_id)
        ev = per_policy[policy].get(example_id)
        if gen is None or ev is None:
            rows.append((policy, "(not generated for this input)", "", ""))
            continue
        rows.append((policy, gen["summary"] or "(empty)", fmt(ev["reward"]), str(ev["length"])))
    document = first.get("document") or first.get("prompt", "")
    return [Quote(document), Table(("Source", "Summary", "Reward", "Length"), tuple(rows), "samples")]
