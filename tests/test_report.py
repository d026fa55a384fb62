"""The report stage on synthetic evaluation, generation and curve files (no model is loaded)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sumrl import stages
from sumrl.artifacts import CurveLogger, DataError, read_json, write_json, write_jsonl
from sumrl.evaluate import judge
from sumrl.evaluate.metrics import aggregate
from sumrl.params import load_params
from sumrl.report import document, tables
from sumrl.report import run as report_run

ROOT = Path(__file__).resolve().parents[1]
IDS = ["e0", "e1", "e2", "e3"]
PLOT_FILES = {"curves_sft.png", "curves_reward.png", "curves_rl.png", "reward_vs_kl.png", "length_hist.png"}


def report_params(methods=("rloo", "ppo"), seeds=(0, 1), samples=2) -> dict:
    return load_params(ROOT / "params.yaml", check_files=False, overrides=[
        f"rl.methods=[{', '.join(methods)}]", f"rl.seeds=[{', '.join(map(str, seeds))}]", f"report.samples={samples}",
    ])


def synthetic_examples(rank: int) -> list[dict]:
    """Policy number `rank` in table order: reward and KL grow with rank, SFT (rank 1) has KL 0."""
    return [
        {"id": i, "rouge1": 0.4 - 0.01 * rank, "rouge2": 0.15, "rougeL": 0.3 - 0.01 * j, "reward": 0.5 * rank + 0.1 * j,
         "sigma": 0.0, "kl_to_sft": 0.0 if rank == 1 else rank + 0.2 * j, "length": 20 + 2 * j + rank,
         "has_eos": j != 3, "reference_reward": 0.6 + 0.1 * j, "reference_length": 22 + 2 * j}
        for j, i in enumerate(IDS)
    ]


def write_policy_files(policy: str, rank: int) -> None:
    examples = synthetic_examples(rank)
    write_json(stages.EVAL.format(policy=policy), {
        "policy": policy, "n": len(examples), "reward_model": {"kind": "scalar", "num_scores": 10},
        "metrics": aggregate(examples, probabilistic=False), "examples": examples,
    })
    write_jsonl(stages.GENERATIONS.format(policy=policy), [
        {"id": i, "document": f"Document {i} about parsing | tables.", "prompt": f"Summarize: Document {i}",
         "summary": f"{policy} summary of {i} with a pipe | and *stars*", "reference": f"Reference {i}.",
         "references": [f"Reference {i}."], "has_eos": True, "length": 20, "completion_ids": [1, 2]}
        for i in IDS
    ])


def write_curve(name: str, rows: list[dict]) -> None:
    logger = CurveLogger(Path(stages.CURVES) / f"{name}.csv")
    for row in rows:
        logger.log(row)


def write_optional_files(params: dict) -> None:
    sets = {name: {"source": "x.jsonl", "pairs": 20, "accuracy": acc, "accuracy_se": 0.1, "rm_prefers_shorter": 0.9,
                   "label_prefers_shorter": 0.35, "pairs_unequal_length": 20, "length_balanced_pairs": 4,
                   "length_balanced_accuracy": 0.5, "length_balanced_accuracy_se": 0.25, "mean_margin": 1.0}
            for name, acc in (("validation", 0.75), ("tldr_human", 0.5))}
    write_json("reports/reward_eval.json", {"kind": "scalar", "pairs_origin": "reference_vs_generated_negative",
                                            "validation_pairs": 20, "accuracy": 0.75, "accuracy_se": 0.1,
                                            "sets": sets})
    write_json("reports/consolidate/sft.json", {"ok": True, "max_abs_diff": 0.0, "tensors": 273})
    write_json("reports/consolidate/reward.json", {"ok": False, "max_abs_diff": 0.25, "tensors": 275})
    write_json("data/pairs/card.json", {  # the shape sumrl.data.pairs writes
        "title": "Preference pairs: reference vs base-model sample",
        "notes": ["These pairs are NOT human preferences. chosen = the human reference summary, rejected = a "
                  "sample from the base model."],
        "source": {"kind": "generated", "path": "data/prepared/pref.jsonl", "temperature": 1.0},
        "rows_read": {"pref": 42}, "rows": {"train": 32, "validation": 8}, "dropped": 2,
        "drops": {"empty_sample": {"count": 2, "ids": ["p7", "p9"]}},
        "tokens": {"train": {"chosen": {"min": 5, "max": 60}}}, "origin": "reference_vs_base_sample", "seed": 0,
        "params": {"temperature": 1.0}, "samples_without_eos": 11,
    })
    write_curve("sft", [{"step": s, "loss": 2.0 / s, "learning_rate": 2e-4} for s in range(1, 6)])
    write_curve("reward", [{"step": s, "loss": 0.7 - 0.05 * s, "accuracy": 0.5 + 0.05 * s} for s in range(1, 6)])
    for policy in stages.policies(params)[2:]:
        # PPO logs a value loss, the others leave it empty: plots must skip empty cells.
        write_curve(f"rl_{policy}", [
            {"step": s, "reward_mean": 0.1 * s, "kl": 0.05 * s, "length": 30 - s, "eos_rate": 0.9,
             "value_loss": 0.3 if policy.startswith("ppo") else ""}
            for s in range(1, 5)
        ])


def make_workspace(params: dict, optional: bool = True) -> None:
    """Files the report reads, as the earlier stages would leave them, under the current folder."""
    for rank, policy in enumerate(stages.policies(params)):
        write_policy_files(policy, rank)
    if optional:
        write_optional_files(params)


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> dict:
    monkeypatch.chdir(tmp_path)
    params = report_params()
    make_workspace(params)
    return params


# ---- pure pieces -----------------------------------------------------------------------------------

def test_paired_delta_is_mean_and_se_of_per_example_differences():
    ref = [{"id": "a", "reward": 1.0}, {"id": "b", "reward": 2.0}, {"id": "c", "reward": 0.0}]
    pol = [{"id": "b", "reward": 3.0}, {"id": "a", "reward": 1.5}, {"id": "c", "reward": 1.5}]
    delta, se = tables.paired_delta(pol, ref)  # differences 1.0, 0.5, 1.5: matched by id, not by order
    assert delta == pytest.approx(1.0)
    assert se == pytest.approx(0.5 / 3 ** 0.5)


def test_seed_spread_mean_and_sd_across_seeds():
    summary = {p: {k: 0.0 for k in tables.SEED_METRICS} for p in ("rloo_s0", "rloo_s1", "ppo_s0")}
    summary["rloo_s0"]["reward"], summary["rloo_s1"]["reward"] = 1.0, 2.0
    spread = tables.seed_spread(summary, {"rloo_s0": "rloo", "rloo_s1": "rloo", "ppo_s0": "ppo"})
    assert spread["rloo"]["reward"] == pytest.approx({"mean": 1.5, "sd": 0.5 ** 0.5, "n": 2})
    assert spread["ppo"]["reward"] == {"mean": 0.0, "sd": None, "n": 1}


def test_formatting_and_flatten():
    assert tables.fmt_pm(1.23456, 0.0456) == "1.235 ± 0.046"
    assert tables.fmt_pm(0.5, 0.1, signed=True) == "+0.500 ± 0.100"
    assert tables.fmt_pm(None, 0.1) == "n/a"
    assert tables.fmt_pct(0.875) == "88%"
    assert tables.flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


def test_comparison_table_shows_sigma_only_for_a_probabilistic_reward_model():
    row = {"rouge1": 0.4, "rouge2": 0.1, "rougeL": 0.3, "reward": 5.5, "reward_se": 0.1, "reward_delta_vs_sft": 0.0,
           "reward_delta_vs_sft_se": 0.0, "kl_to_sft": 0.0, "kl_to_sft_se": 0.0, "length": 20.0, "eos_rate": 1.0}
    scalar = tables.comparison_table({"sft": {**row, "sigma": None}})
    probabilistic = tables.comparison_table({"sft": {**row, "sigma": 1.25}})
    assert "RM sigma" not in scalar.header and len(scalar.rows[0]) == len(scalar.header)
    assert probabilistic.header[-1] == "RM sigma" and probabilistic.rows[0][-1] == "1.250"


def test_markdown_table_cells_are_escaped():
    md = document.to_markdown([document.Table(("a", "b"), (("x | y", "line\nbreak *bold* rloo_s0"),))])
    row = md.splitlines()[2]
    assert row == r"| x \| y | line break \*bold\* rloo\_s0 |"


# ---- the stage -------------------------------------------------------------------------------------

def markdown_table(md: str, first_header: str) -> list[list[str]]:
    """Rows (cells) of the Markdown table whose header starts with `first_header`."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def test_report_writes_every_output(workspace):
    report_run(workspace)
    md = Path("reports/report.md").read_text()
    headline = markdown_table(md, "Policy")
    assert [r[0].replace("\\", "") for r in headline] == stages.policies(workspace)
    rloo = dict(zip(["policy", "lc", "win_sft", "win_ref", "length", "flag", "raw", "reward"], headline[2]))
    assert rloo["win_sft"] == "1.00 ± 0.00"  # every synthetic rloo_s0 reward is 0.5 above SFT's on its input
    assert rloo["length"] == "25.0 (1.00×, 1.04×)"  # lengths 22..28 as its references; SFT means 24
    assert rloo["raw"] == r"+0.500 \[+0.500, +0.500\]" and rloo["flag"] == "no"
    assert md.index("Length check") < md.index("| Policy |")  # the verdict comes first
    table = markdown_table(md.split("### All metrics", 1)[1], "Policy")
    assert [r[0].replace("\\", "") for r in table] == stages.policies(workspace)
    sft = dict(zip(["policy", "r1", "r2", "rl", "reward", "delta", "kl", "len", "eos"], table[1]))
    assert sft["delta"] == "+0.000 ± 0.000" and sft["kl"].startswith("0.000") and sft["eos"] == "75%"
    assert len(markdown_table(md.split("### Win rate against the reference, by length", 1)[1], "Policy")) == 6
    assert "## Across seeds" in md and len(markdown_table(md, "Method")) == 2
    rm_sets = markdown_table(md.split("## Reward model", 1)[1], "Set")
    assert rm_sets[1] == ["tldr\\_human", "20", "0.500 ± 0.100", "90%", "35%", "0.500 ± 0.250 (4)"]
    assert "> These pairs are NOT human preferences. chosen = the human reference summary" in md
    assert "| drops.empty\\_sample.count | 2 |" in md and "| samples\\_without\\_eos | 11 |" in md
    assert "p7" not in md and "tokens.train" not in md
    assert "| reward | NO |" in md  # the failed consolidation check is shown, not hidden
    assert md.count("### Sample ") == 2
    for name in PLOT_FILES:
        assert f"](plots/{name})" in md
    assert {p.name for p in Path("reports/plots").iterdir()} == PLOT_FILES
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in Path("reports/plots").iterdir())

    page = Path("reports/index.html").read_text()
    assert page.count('<img src="data:image/png;base64,') == len(PLOT_FILES)
    assert not re.search(r"(src|href)=\"(?!data:)", page)  # nothing the browser would fetch
    assert "<table class=\"numbers\">" in page and "<style>" in page


def test_metrics_json_layout(workspace):
    report_run(workspace)
    metrics = read_json("reports/metrics.json")
    policies = stages.policies(workspace)
    assert list(metrics) == sorted([*policies, "across_seeds", "reward_model", "consolidation", "length_model"])
    assert set(metrics["sft"]) == {"n", "rouge1", "rouge2", "rougeL", "reward", "reward_se", "kl_to_sft",
                                   "kl_to_sft_se", "length", "reference_length", "eos_rate", "reward_delta_vs_sft",
                                   "reward_delta_vs_sft_se", "reward_delta_vs_sft_low", "reward_delta_vs_sft_high",
                                   "lc_reward_delta_vs_sft", "lc_reward_delta_vs_sft_se", "lc_reward_delta_vs_sft_low",
                                   "lc_reward_delta_vs_sft_high", "win_rate_vs_sft", "win_rate_vs_sft_se",
                                   "win_rate_vs_reference", "win_rate_vs_reference_se", "length_vs_reference",
                                   "length_vs_sft", "length_hacking"}
    assert metrics["rloo_s0"]["length_hacking"] is False and metrics["length_model"]["documents"] == 4
    assert metrics["rloo_s0"]["reward_delta_vs_sft"] == pytest.approx(0.5)  # rank 2 vs rank 1, per example
    assert metrics["across_seeds"]["rloo"]["reward_mean"] == pytest.approx((1.15 + 1.65) / 2)
    assert metrics["reward_model"]["accuracy"] == 0.75
    assert metrics["reward_model"]["sets.tldr_human.rm_prefers_shorter"] == 0.9
    assert metrics["consolidation"] == {"sft_ok": True, "reward_ok": False}


def test_identical_inputs_give_identical_outputs(workspace):
    report_run(workspace)
    first = {p: Path(p).read_bytes() for p in ("reports/metrics.json", "reports/report.md", "reports/index.html")}
    report_run(workspace)
    assert {p: Path(p).read_bytes() for p in first} == first


def test_missing_optional_inputs_are_reported_not_fatal(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = report_params(seeds=(0,))
    make_workspace(params, optional=False)
    report_run(params)
    md = Path("reports/report.md").read_text()
    assert "`reports/reward_eval.json` not found" in md
    assert "`data/pairs/card.json` not found" in md
    assert "reports/consolidate/sft.json not found" in md
    assert "`reports/curves/sft.csv` not found" in md and "No RL training curves found." in md
    assert "## Across seeds" not in md  # one seed: nothing to spread
    assert {p.name for p in Path("reports/plots").iterdir()} == {"reward_vs_kl.png", "length_hist.png"}
    metrics = json.loads(Path("reports/metrics.json").read_text())
    assert set(metrics) == {*stages.policies(params), "length_model"}


def test_missing_eval_file_is_an_error_naming_it(workspace):
    Path("reports/eval/ppo_s1.json").unlink()
    with pytest.raises(DataError, match=r"reports/eval/ppo_s1.json.*sumrl evaluate --policy ppo_s1"):
        report_run(workspace)
    assert not Path("reports/report.md").exists()


# ---- the LLM judge section -------------------------------------------------------------------------

def write_judge_file(params: dict) -> None:
    """reports/judge.json as `sumrl judge` writes it, from its own result functions on chosen replies: every
    policy wins its first pair in both orders, its second pair has an unparseable reply; one G-Eval reply of 7/10
    and one invalid per name."""
    names = stages.policies(params)
    q = lambda text: judge.Query(text, 4)  # noqa: E731
    pairs = {p: [(q(f"{p}0A"), q(f"{p}0B")), (q(f"{p}1A"), q(f"{p}1B"))] for p in names}
    scores = {p: [[q(f"{p}s0")], [q(f"{p}s1")]] for p in [*names, "reference"]}
    replies = {**{q(f"{p}0A"): "A" for p in names}, **{q(f"{p}0B"): "Summary B is better" for p in names},
               **{q(f"{p}1A"): "A" for p in names}, **{q(f"{p}1B"): "hmm" for p in names},
               **{s[0][0]: "Score: 7/10" for s in scores.values()}, **{s[1][0]: "no idea" for s in scores.values()}}
    write_json(stages.JUDGE, {"enabled": True, "judge": {"backend": "openai", "model": "judge-model"},
                              "against": "reference", "rows": 2, "samples": 1,
                              "replies": {"total": 99, "requested": 0, "from_cache": 99},
                              "policies": judge.results(pairs, scores, replies)})


def test_judge_section_when_the_judge_ran(workspace):
    write_judge_file(workspace)
    report_run(workspace)
    md = Path("reports/report.md").read_text()
    assert "## LLM judge" in md and "`judge-model` (`openai` backend)" in md
    rows = markdown_table(md.split("## LLM judge", 1)[1], "Policy")  # the judge's table, not the comparison
    assert [r[0].replace("\\", "") for r in rows] == [*stages.policies(workspace), "reference"]
    assert rows[0][1:] == ["1.000", "1 of 2 (1 invalid)", "7.00", "1 of 2 (1 of 2 replies invalid)"]
    assert rows[-1][1:3] == ["—", ""]
    assert "LLM judge" in Path("reports/index.html").read_text()


def test_no_judge_section_when_disabled(workspace):
    write_json(stages.JUDGE, {"enabled": False})
    report_run(workspace)
    assert "LLM judge" not in Path("reports/report.md").read_text()


def test_where_the_time_went_reads_snakemake_benchmark_files(workspace):
    report_run(workspace)
    assert "No Snakemake benchmark files in logs/benchmarks/" in Path("reports/report.md").read_text()
    Path("logs/benchmarks/generate").mkdir(parents=True)
    Path("logs/benchmarks/reward.tsv").write_text("s\th:m:s\tmax_rss\n481.0\t0:08:01\t4096\n")
    Path("logs/benchmarks/generate/sft.tsv").write_text("s\th:m:s\tmax_rss\n65.2\t0:01:05\t2048.5\n")
    report_run(workspace)
    rows = markdown_table(Path("reports/report.md").read_text(), "Job")
    assert rows[0] == ["reward", "8.0", "88%", "4.00"] and rows[1] == ["generate/sft", "1.1", "12%", "2.00"]
