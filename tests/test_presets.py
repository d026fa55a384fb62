"""presets/*.yaml: each one is valid over params.yaml, plans with Snakemake, and holds only changes.

Presets may point at data the user supplies (korean-dialogue-rloo) or at the hub (tldr-*). The rule:
schema and cross-key checks always run; files are checked by `sumrl validate`, by every stage, and
by Snakemake when a real run starts, but not by a dry run, so every preset plans here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from sumrl.params import deep_merge, load_params, read_yaml

from frontends import ROOT, SNAKEMAKE, job_stats, run, scratch_workflow, stage_counts

PRESETS = sorted(p.name for p in (ROOT / "presets").glob("*.yaml"))
EXPECTED = {
    "cpu-demo.yaml",
    "dialogsum.yaml",
    "tldr-gptneo-ppo.yaml",
    "tldr-gptj-ppo.yaml",
    "korean-dialogue-rloo.yaml",
    "helpsteer2-reinforce.yaml",
    "helpsteer2-reinforce-probabilistic.yaml",
    "tldr-human.yaml",
}


def leaves(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def lookup(tree: dict, dotted: str):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def test_the_expected_presets_exist():
    assert set(PRESETS) == EXPECTED


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_is_valid(preset):
    load_params(ROOT / "params.yaml", ROOT / "presets" / preset, check_files=False)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_holds_only_changes_and_a_header(preset):
    path = ROOT / "presets" / preset
    assert path.read_text().startswith("# Preset: "), "start with a header: seed project, hardware, use"
    base = read_yaml(ROOT / "params.yaml")
    same = [key for key, value in leaves(read_yaml(path)) if lookup(base, key) == value]
    assert not same, f"{preset} repeats params.yaml's values for {same}"


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_snakemake_dry_run(preset, tmp_path):
    scratch_workflow(tmp_path)
    proc = run([SNAKEMAKE, "-n", "--configfile", "params.yaml", f"presets/{preset}"], cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    params = deep_merge(read_yaml(ROOT / "params.yaml"), read_yaml(ROOT / "presets" / preset))
    assert job_stats(out) == stage_counts(params)


def test_cpu_demo_is_params_yaml():
    assert read_yaml(ROOT / "presets" / "cpu-demo.yaml") == {}


def test_dialogsum_validates_with_its_files(shared_data):
    proc = run([sys.executable, "-m", "sumrl.cli", "validate", "--preset", "presets/dialogsum.yaml"], cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


def test_user_data_preset_fails_clearly_until_the_data_is_there(tmp_path):
    """korean-dialogue-rloo: a dry run plans; `sumrl validate` and a real run name the missing path."""
    scratch_workflow(tmp_path)
    preset = "presets/korean-dialogue-rloo.yaml"
    missing = read_yaml(ROOT / preset)["data"]["path"]

    cli = run([sys.executable, "-m", "sumrl.cli", "validate", "--preset", preset], cwd=tmp_path)
    assert cli.returncode == 2
    assert f"data.path: file or folder not found: {missing}" in cli.stderr

    real = run([SNAKEMAKE, "--cores", "1", "--configfile", preset], cwd=tmp_path)
    assert real.returncode != 0
    assert f"data.path: file or folder not found: {missing}" in real.stdout + real.stderr
    assert not (tmp_path / "models").exists() and not (tmp_path / "logs").exists(), "a job ran"

    (tmp_path / missing).mkdir(parents=True)
    (tmp_path / missing / "train.jsonl").write_text('{"id": "1", "dialogue": "A: hi", "summary": "greeting"}\n')
    cli = run([sys.executable, "-m", "sumrl.cli", "validate", "--preset", preset], cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr


def test_validate_write_bakes_a_preset_into_a_params_file(tmp_path):
    """DVC tracks params.yaml only: `sumrl validate --preset P --write params.yaml` gives it the merged params."""
    out = tmp_path / "params.yaml"
    args = ["validate", "--preset", "presets/helpsteer2-reinforce.yaml", "--write", str(out)]
    proc = run([sys.executable, "-m", "sumrl.cli", *args], cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert load_params(out) == load_params(ROOT / "params.yaml", ROOT / "presets" / "helpsteer2-reinforce.yaml")
    assert read_yaml(out) != read_yaml(ROOT / "params.yaml")


def tldr_human_local_overrides(shared: Path) -> list[str]:
    """bench/tldr-human-local.overrides with ${SHARED} filled in: what bench/tldr_human_local.sh gives `--set`."""
    lines = (ROOT / "bench" / "tldr-human-local.overrides").read_text().splitlines()
    return [line.replace("${SHARED}", str(shared)) for line in lines if line and not line.startswith("#")]


def test_tldr_human_on_the_shared_human_comparisons(shared_data, tiny_model_dir, tmp_path, monkeypatch):
    """The preset with its local overrides: TL;DR posts for SFT / RL / test (the validation posts), the RM's pairs
    the human comparisons with their own train / validation split, nothing generated."""
    from sumrl.data import pairs, prepare
    from sumrl.data.sources import load_rows
    from sumrl.models.load import load_tokenizer

    from conftest import TINY_OVERRIDES

    params = load_params(ROOT / "params.yaml", ROOT / "presets" / "tldr-human.yaml", [
        *tldr_human_local_overrides(shared_data), *TINY_OVERRIDES, f"model.base={tiny_model_dir}",
        "data.max_document_tokens=1024", "data.max_summary_tokens=256"])
    monkeypatch.chdir(tmp_path)
    tok = load_tokenizer(str(tiny_model_dir))
    splits, card = prepare.prepare(load_rows(params), tok, params)
    validation_posts = {" ".join(json.loads(line)["prompt"].split())
                        for line in open(shared_data / "tldr_feedback_comparisons_small" / "pref_validation.jsonl")}
    assert 0 < len(splits["test"]) <= 6
    assert all(" ".join(r["document"].split()) in validation_posts for r in splits["test"])
    assert not {r["document"] for r in splits["sft"] + splits["rl"]} & {r["document"] for r in splits["test"]}
    pair_splits, pair_card = pairs.human_pairs(pairs.load_pair_rows(params), tok, params)
    assert pair_card["origin"] == pairs.HUMAN
    assert len(pair_splits["validation"]) == 81 and len(pair_splits["train"]) == 841 - pair_card["dropped"]
