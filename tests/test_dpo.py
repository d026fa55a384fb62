"""`sumrl rl --method dpo`: trl's DPOTrainer as a method of the rl stage, run as a user runs it (a child
process) on the tiny model: it leaves a run folder that `sumrl consolidate` merges into the SFT weights, and
the curve the stage table names."""

from __future__ import annotations

import csv
import json

import pytest

from projects import add_rl_inputs, make_project, sumrl

pytestmark = pytest.mark.slow


def test_dpo_trains_on_the_pairs_and_consolidates_like_an_rl_run(tmp_path, tiny_model_dir):
    cwd = make_project(tmp_path, tiny_model_dir, "rl.methods=[dpo]", "rl.dpo.batch_size=2", "rl.dpo.learning_rate=0.01")
    add_rl_inputs(cwd, tiny_model_dir)
    assert sumrl(cwd, "pairs").returncode == 0
    proc = sumrl(cwd, "rl", "--method", "dpo", "--seed", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]

    run = json.loads((cwd / "models" / "rl_run" / "dpo_s0" / "sumrl_run.json").read_text())
    pairs = sum(1 for _ in open(cwd / "data" / "pairs" / "train.jsonl"))
    assert (run["stage"], run["method"], run["base"], run["lora"]) == ("rl", "dpo", "models/sft", True)
    assert run["budget"] == {"pairs": pairs, "epochs": 1, "sequences": 2 * pairs}
    rows = list(csv.DictReader(open(cwd / "reports" / "curves" / "rl_dpo_s0.csv")))
    assert len(rows) == run["steps"] == -(-pairs // 2)
    assert all(r["reward_margin"] != "" and r["reward_accuracy"] != "" for r in rows)

    merged = sumrl(cwd, "consolidate", "--stage", "dpo_s0")
    assert merged.returncode == 0, merged.stderr[-3000:]
    report = json.loads((cwd / "reports" / "consolidate" / "dpo_s0.json").read_text())
    assert report["ok"] and report["source"] == "adapter" and report["adapter_effect"] > 0
