"""`sumrl report`: compare every policy in one Markdown report, one HTML page, metrics.json and PNG plots.

Nothing here depends on the clock or on file-system order, so identical inputs give identical outputs
(`dvc metrics diff` then shows only real changes).
"""

from __future__ import annotations

import logging
from pathlib import Path

from sumrl.artifacts import atomic_path, write_json
from sumrl.config import Config
from sumrl.evaluate import length_control as lc
from sumrl.report import plots
from sumrl.report.cards import CARDS, write_cards
from sumrl.report.document import Block, Heading, Image, Paragraph, Quote, Table, to_html, to_markdown
from sumrl.report.inputs import (
    PAIRS_CARD,
    REWARD_EVAL,
    Inputs,
    consolidation_path,
    curve_path,
    load_inputs,
    rl_curve_name,
)
from sumrl.report.tables import (
    REFERENCE_POLICY,
    comparison_table,
    flatten,
    fmt,
    fmt_pct,
    fmt_pm,
    fmt_value,
    headline_table,
    judge_table,
    key_value_table,
    length_bins,
    length_bins_table,
    length_fit,
    metrics_json,
    policy_summary,
    sample_blocks,
    sample_ids,
    seed_spread,
    seed_table,
)
from sumrl.report.timing import read_benchmarks, timing_section

log = logging.getLogger(__name__)

REPORTS = Path("reports")
REPORT_MD = REPORTS / "report.md"
INDEX_HTML = REPORTS / "index.html"
METRICS = REPORTS / "metrics.json"
PLOTS = REPORTS / "plots"
TITLE = "sumrl: RLHF for summarization"
# Thresholds of the health checks: the failure modes reported for RLHF on summaries (notes/what-peers-do.md).
LOW_EOS_RATE = 0.5
ROUGE_COLLAPSE = 0.5  # ROUGE-L below this fraction of SFT's
CARD_DETAIL = ("title", "notes", "tokens", "params")


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def group_of(policy: str, inputs: Inputs) -> str:
    """RL seeds of one method share a colour and a legend entry; base and SFT are their own group."""
    return inputs.methods.get(policy, policy)


def policy_colors(inputs: Inputs) -> dict[str, str]:
    """Colours keyed by group (for per-method figures) and by policy (for per-policy figures)."""
    groups = list(dict.fromkeys(group_of(p, inputs) for p in inputs.policies))
    by_group = plots.palette(groups)
    return {**by_group, **{p: by_group[group_of(p, inputs)] for p in inputs.policies}}


def rl_line_styles(inputs: Inputs, colors: dict[str, str]) -> dict[str, dict]:
    """Seeds of one method share its colour and differ in dash pattern."""
    seen: dict[str, int] = {}
    styles = {}
    for policy, method in inputs.methods.items():
        k = seen[method] = seen.get(method, -1) + 1
        styles[policy] = {"color": colors[policy], "linestyle": plots.LINESTYLES[k % len(plots.LINESTYLES)]}
    return styles


# ---- figures ---------------------------------------------------------------------------------------

def figure(drawn: bool, name: str, caption: str, why_missing: str) -> Block:
    return Image(f"plots/{name}", caption) if drawn else Paragraph(why_missing)


def missing_curve(name: str) -> str:
    return f"No curve: `{curve_path(name)}` not found or empty."


def _direction(slope) -> str:
    if slope.low > 0:
        return "higher"
    return "lower" if slope.high < 0 else "neither higher nor lower, within the interval"


def write_plots(inputs: Inputs, summary: dict[str, dict], folder: Path,
                colors: dict[str, str]) -> dict[str, list[Block]]:
    """Draw every figure into `folder`; figure key -> the blocks that show it (or say why it is absent)."""
    out: dict[str, list[Block]] = {}
    for stage, panels in (("sft", plots.SFT_PANELS), ("reward", plots.REWARD_PANELS)):
        runs = {stage: inputs.curves[stage]} if stage in inputs.curves else {}
        drawn = plots.plot_curves(runs, panels, folder / f"curves_{stage}.png")
        out[stage] = [figure(drawn, f"curves_{stage}.png", f"{stage} training curves", missing_curve(stage))]
    rl_runs = {p: inputs.curves[rl_curve_name(p)] for p in inputs.methods if rl_curve_name(p) in inputs.curves}
    drawn = plots.plot_curves(rl_runs, plots.RL_PANELS, folder / "curves_rl.png", rl_line_styles(inputs, colors))
    out["rl"] = [figure(drawn, "curves_rl.png", "RL training curves per run", "No RL training curves found.")]
    out["rl"] += [Paragraph(missing_curve(rl_curve_name(p))) for p in inputs.methods if p not in rl_runs]
    points = [{"label": p, "group": group_of(p, inputs), "kl": m["kl_to_sft"], "reward": m["reward"],
               "reward_se": m["reward_se"]} for p, m in summary.items()]
    drawn = plots.plot_reward_vs_kl(points, folder / "reward_vs_kl.png", colors)
    out["reward_vs_kl"] = [figure(drawn, "reward_vs_kl.png", "test-set reward (± s.e.) versus KL to SFT",
                                  "No policy has both a reward and a KL to SFT.")]
    lengths = {p: [e["length"] for e in inputs.evals[p]["examples"]] for p in inputs.policies}
    drawn = plots.plot_length_histograms(lengths, folder / "length_hist.png", colors)
    out["lengths"] = [figure(drawn, "length_hist.png", "summary-length histograms per policy",
                             "No generations to measure.")]
    return out


# ---- sections --------------------------------------------------------------------------------------

def health_checks(summary: dict[str, dict], inputs: Inputs) -> Paragraph:
    sft_rouge = summary[REFERENCE_POLICY]["rougeL"]
    flags = [f"`{p}`: only {fmt_pct(m['eos_rate'])} of summaries end with EOS (the rest ran to the token limit)."
             for p, m in summary.items() if m["eos_rate"] < LOW_EOS_RATE]
    flags += [f"`{p}`: ROUGE-L {fmt(summary[p]['rougeL'])} is under half of SFT's {fmt(sft_rouge)}; "
              "check the samples for reward hacking (repetition, run-on text)."
              for p in inputs.methods if summary[p]["rougeL"] < ROUGE_COLLAPSE * sft_rouge]
    if not flags:
        return Paragraph(f"Health checks: every policy ends at least {fmt_pct(LOW_EOS_RATE)} of its summaries "
                         "with EOS, and no RL policy has ROUGE-L under half of SFT's.")
    return Paragraph("Health checks: " + " ".join(flags))


def length_verdict(summary: dict[str, dict]) -> Paragraph:
    """The report's first sentence: does any policy's reward gain look like a length change?"""
    flagged = {p: m for p, m in summary.items() if m["length_hacking"]}
    if not flagged:
        return Paragraph("Length check: no policy is flagged. Every policy's mean length is within "
                         f"{lc.LENGTH_MOVE:.0%} of SFT's, and no raw reward gain over SFT vanishes at equal length.")
    lines = "; ".join(f"`{p}`: {' and '.join(m['length_hacking_reasons'])}" for p, m in flagged.items())
    return Paragraph(f"**Length hacking warning.** The reward gains of {len(flagged)} of {len(summary) - 1} "
                     f"policies may come from length, not quality ({lines}). Read the equal-length column, the "
                     "win rates and the samples before believing a raw reward gain.")


def comparison_section(summary: dict[str, dict], inputs: Inputs, fit: lc.LengthFit) -> list[Block]:
    n = summary[REFERENCE_POLICY]["n"]
    slope = fit.slope
    return [
        Heading("Policies on the test split"),
        headline_table(summary),
        Paragraph(f"{n} test inputs, the same for every policy. **Δ reward vs SFT at equal length** is the policy's "
                  "coefficient minus SFT's in one least-squares fit over every policy's summaries: reward ~ "
                  "policy + document + slope · log(length / reference length), with a 95% interval from "
                  f"standard errors clustered by document (t with {fit.dof} degrees of freedom). It assumes the "
                  "reward's dependence on length is the same line for every policy. **Win rate vs SFT / vs "
                  "reference**: per input, 1 if the reward model scores the policy's summary above SFT's (the "
                  "human reference's), 0.5 on a tie, 0 below; mean ± s.e. **Length** is in tokens (EOS "
                  "included), with its ratio to the mean reference length and to SFT's. **Length hacking** is "
                  "flagged when the raw gain over SFT is significant but the equal-length gain is not, or when "
                  f"mean length moves more than {lc.LENGTH_MOVE:.0%} from SFT's. **Raw Δ** is the mean per-input "
                  "reward difference to SFT (paired)."),
        Paragraph(f"The reward model's length preference on these summaries: {fmt(slope.estimate, signed=True)} "
                  f"reward per unit of log(length / reference length), 95% CI "
                  f"[{fmt(slope.low, signed=True)}, {fmt(slope.high, signed=True)}] "
                  f"(at equal quality a longer summary scores {_direction(slope)})."),
        Heading("Win rate against the reference, by length", 3),
        length_bins_table(length_bins(inputs)),
        Paragraph("Columns are bins of log(length / reference length) (0 = as long as the reference; ±0.29 ≈ "
                  "0.75× / 1.33×, ±0.69 ≈ 0.5× / 2×); each cell is the policy's win rate against the human "
                  "reference among its summaries in that bin, and how many there are. Policies compared within "
                  "one column are compared at about the same length."),
        Heading("All metrics", 3),
        comparison_table(summary),
        Paragraph("ROUGE is F1 (best over references). Reward is the reward model's score of prompt + summary + "
                  "EOS, mean ± standard error. Δ reward vs SFT is the raw paired difference ± its standard error. "
                  "KL to SFT is `sum_t [log π(y_t) − log π_SFT(y_t)]` over each summary's tokens, averaged over the "
                  "policy's own generations (± s.e.). Length counts generated tokens, EOS included."),
        health_checks(summary, inputs),
    ]


def seed_section(spread: dict | None) -> list[Block]:
    if not spread:
        return []
    return [Heading("Across seeds"), seed_table(spread),
            Paragraph("Mean and standard deviation (ddof=1) over each method's seeds.")]


def judge_section(judge: dict | None, policies: list[str]) -> list[Block]:
    """Nothing unless the judge ran (judge.enabled): the default report has no judge section."""
    if judge is None:
        return []
    who = judge["judge"]
    opponent = "human reference summary" if judge["against"] == "reference" else "SFT policy's summary"
    samples = "one greedy reply" if judge["samples"] == 1 else f"the mean of {judge['samples']} sampled replies"
    return [
        Heading("LLM judge"),
        judge_table(judge, policies),
        Paragraph(f"Judge: `{who['model']}` (`{who['backend']}` backend), on the first {judge['rows']} test inputs. "
                  f"Win rate: the judge picks the better of the policy's summary and the {opponent} of the same "
                  "document, once in each order so that a preference for the first position cancels: 1 if the "
                  "policy wins both orders, 0.5 if the orders disagree, 0 if it loses both (mean ± s.e. over "
                  "pairs). G-Eval: a 1-10 score against coherence, consistency, fluency and relevance criteria, "
                  f"{samples} per summary; `reference` scores the human summaries. A reply that does not parse is "
                  "counted as invalid: its pair or summary is left out of the mean and shown in the counts."),
    ]


def reward_model_section(inputs: Inputs) -> list[Block]:
    blocks: list[Block] = [Heading("Reward model")]
    ev = inputs.reward_eval
    if ev is None:
        return blocks + [Paragraph(f"Not available: `{REWARD_EVAL}` not found.")]
    if "sets" not in ev:
        return blocks + [key_value_table(ev)]
    generated = ev.get("pairs_origin") != "human"
    return blocks + [
        reward_sets_table(ev["sets"]),
        Paragraph("Accuracy: share of pairs where the reward model scores chosen above rejected (± s.e.). "
                  "Prefers shorter: among pairs whose sides differ in length, how often the RM's preferred side "
                  "is the shorter one, next to how often the label's is. Where the two differ, the RM has a length "
                  "preference the labels do not; a length-balanced accuracy (sides within 10% in tokens) near the "
                  "overall one says the RM ranks by more than length."
                  + (" The `validation` sets are generated pairs (not human judgements): a high accuracy there "
                     "shows only that the RM tells the reference from these negatives. Human preferences from "
                     "another source (`reward.eval_pairs`) are the test of whether it agrees with people."
                     if generated else "")),
    ]


def reward_sets_table(sets: dict[str, dict]) -> Table:
    header = ("Set", "Pairs", "Accuracy ± s.e.", "RM prefers shorter", "Label prefers shorter",
              "Length-balanced accuracy (pairs)")
    rows = tuple(
        (name, str(s["pairs"]), fmt_pm(s["accuracy"], s["accuracy_se"]), fmt_pct(s["rm_prefers_shorter"]),
         fmt_pct(s["label_prefers_shorter"]),
         f"{fmt_pm(s['length_balanced_accuracy'], s['length_balanced_accuracy_se'])} ({s['length_balanced_pairs']})")
        # The RM's own held-out pairs first (JSON files keep keys sorted), then the sets it never saw.
        for name, s in sorted(sets.items(), key=lambda item: (not item[0].startswith("validation"), item[0]))
    )
    return Table(header, rows, "numbers")


def pairs_section(inputs: Inputs) -> list[Block]:
    """The pairs card's own title and notes (they say how the pairs were built), then its scalar facts."""
    blocks: list[Block] = [Heading("Preference pairs")]
    card = inputs.pairs_card
    if card is None:
        return blocks + [Paragraph(f"Not available: `{PAIRS_CARD}` not found, so how the preference pairs "
                                   "were built is not recorded here.")]
    if card.get("title"):
        blocks.append(Heading(card["title"], 3))
    blocks += [Quote(note) for note in card.get("notes", [])]
    # Token statistics, the params echo and dropped-id lists belong to data/pairs/card.md, not to a summary.
    facts = {k: v for k, v in flatten(card).items()
             if not isinstance(v, list) and k.split(".")[0] not in CARD_DETAIL}
    return blocks + [key_value_table(facts)]


def consolidation_section(inputs: Inputs) -> list[Block]:
    rows = []
    for stage, checks in inputs.consolidation.items():
        if checks is None:
            rows.append((stage, "not available", f"{consolidation_path(stage)} not found"))
            continue
        figures = "; ".join(f"{k} = {fmt_value(v)}" for k, v in flatten(checks).items()
                            if k not in ("ok", "stage") and not isinstance(v, list))
        rows.append((stage, "yes" if checks.get("ok") else "NO", figures))
    return [Heading("Consolidated weights"), Table(("Stage", "Verified", "Checks"), tuple(rows))]


def samples_section(inputs: Inputs, n: int) -> list[Block]:
    ids = sample_ids(inputs, n)
    if not ids:
        return []
    blocks: list[Block] = [Heading("Samples")]
    for i, example_id in enumerate(ids, 1):
        blocks += [Heading(f"Sample {i} (test id {example_id})", 3), *sample_blocks(inputs, example_id)]
    return blocks


def build_document(inputs: Inputs, summary: dict[str, dict], fit: lc.LengthFit, spread: dict | None,
                   figures: dict[str, list[Block]], samples: int) -> list[Block]:
    policies = ", ".join(f"`{p}`" for p in inputs.policies)
    return [
        Heading(TITLE, 1),
        length_verdict(summary),
        Paragraph(f"Policies compared: {policies}."),
        *comparison_section(summary, inputs, fit),
        *seed_section(spread),
        *judge_section(inputs.judge, inputs.policies),
        Heading("Reward versus KL"), *figures["reward_vs_kl"],
        Heading("Summary lengths"), *figures["lengths"],
        Heading("Training curves"),
        Heading("SFT", 3), *figures["sft"],
        Heading("Reward model", 3), *figures["reward"],
        Heading("RL", 3), *figures["rl"],
        *reward_model_section(inputs),
        *pairs_section(inputs),
        *consolidation_section(inputs),
        *timing_section(read_benchmarks()),
        *samples_section(inputs, samples),
    ]


def run(params: dict, args=None) -> None:
    cfg = Config.of(params)
    inputs = load_inputs(params)
    fit = length_fit(inputs)
    summary = policy_summary(inputs, fit)
    spread = seed_spread(summary, inputs.methods) if len(cfg.rl.seeds) > 1 else None
    with atomic_path(PLOTS, is_dir=True) as folder:
        figures = write_plots(inputs, summary, folder, policy_colors(inputs))
    blocks = build_document(inputs, summary, fit, spread, figures, cfg.report.samples)
    write_text(REPORT_MD, to_markdown(blocks))
    write_text(INDEX_HTML, to_html(blocks, REPORTS, TITLE))
    metrics = metrics_json(summary, spread, inputs, fit)
    write_json(METRICS, metrics)
    with atomic_path(CARDS, is_dir=True) as folder:
        write_cards(metrics, params, inputs, folder)
    log.info("wrote %s, %s, %s, %s/ and %s/", REPORT_MD, INDEX_HTML, METRICS, PLOTS, CARDS)
