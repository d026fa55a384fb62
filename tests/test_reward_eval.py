"""`sumrl reward-eval`: accuracy, shorter-side preference and length-balanced accuracy of the reward model,
by hand on numbers and as a stage on the tiny model with the real human TL;DR comparisons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sumrl.artifacts import DataError, read_json, write_jsonl
from sumrl.config import EvalPairsSpec, from_mapping
from sumrl.evaluate import reward_eval
from sumrl.params import ParamsError, deep_merge, validate_params


def test_preference_stats_by_hand():
    # pair:            0     1     2     3     4
    chosen = [2.0, 0.0, 1.0, 3.0, 1.0]
    rejected = [1.0, 1.0, 0.0, 0.0, 2.0]   # correct: yes, no, yes, yes, no
    chosen_len = [10, 20, 30, 50, 40]
    rejected_len = [20, 10, 31, 40, 40]    # chosen shorter: yes, no, yes, no, (equal)
    s = reward_eval.preference_stats(chosen, rejected, chosen_len, rejected_len)
    assert s["pairs"] == 5 and s["accuracy"] == pytest.approx(0.6)
    assert s["accuracy_se"] == pytest.approx((0.6 * 0.4 / 5) ** 0.5)
    assert s["pairs_unequal_length"] == 4
    # RM's preferred side is shorter in pair 0 (chose chosen=10), 1 (chose rejected=10), 2 (chose chosen=30);
    # in pair 3 it chose chosen=50 over 40: longer.
    assert s["rm_prefers_shorter"] == pytest.approx(3 / 4)
    assert s["label_prefers_shorter"] == pytest.approx(2 / 4)
    # within 10%: pair 2 (30 vs 31) and pair 4 (equal); correct in 2, not in 4
    assert s["length_balanced_pairs"] == 2 and s["length_balanced_accuracy"] == pytest.approx(0.5)
    assert s["mean_margin"] == pytest.approx((1 - 1 + 1 + 3 - 1) / 5)


def test_validation_sets_split_generated_pairs_by_negative_kind():
    rows = [{"negative": "other_reference"}, {"negative": "matched_sample"}, {"negative": "other_reference"}]
    sets = reward_eval.validation_sets(rows)
    assert list(sets) == ["validation", "validation:other_reference", "validation:matched_sample"]
    assert len(sets["validation:other_reference"]) == 2
    assert list(reward_eval.validation_sets([{"id": 1}])) == ["validation"]  # human pairs: one set


def tldr_spec(shared: Path) -> dict:
    return {"name": "tldr_human", "source": "jsonl",
            "path": str(shared / "tldr_feedback_comparisons_small" / "pref_validation.jsonl"),
            "fields": {"id": "id", "document": "prompt", "chosen": "chosen", "rejected": "rejected"}}


@pytest.mark.slow
def test_stage_scores_validation_and_human_pairs(tiny_params, rl_inputs, shared_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("models").mkdir()
    Path("models/reward").symlink_to(rl_inputs / "rm_scalar")
    write_jsonl("data/pairs/validation.jsonl", [
        {"id": f"v{i}:{kind}", "document": f"Document {i} about parsers.", "chosen": "Parsers are studied.",
         "rejected": "Something else entirely, and longer than the chosen one.", "negative": kind}
        for i in range(4) for kind in ("other_reference", "swapped_sentence")])
    params = deep_merge(tiny_params, {"reward": {"eval_pairs": [tldr_spec(shared_data)]}})
    validate_params(params)
    reward_eval.run(params)
    out = read_json("reports/reward_eval.json")
    assert list(out["sets"]) == sorted(["validation", "validation:other_reference", "validation:swapped_sentence",
                                        "tldr_human"])
    human = out["sets"]["tldr_human"]
    assert human["pairs"] == 81 and 0.0 <= human["accuracy"] <= 1.0 and human["accuracy_se"] > 0
    # the labels of the real file: measured from it here, not from the model
    rows = [json.loads(line) for line in open(tldr_spec(shared_data)["path"])]
    shorter = [len(r["chosen"]) < len(r["rejected"]) for r in rows]
    assert 0.2 < human["label_prefers_shorter"] < 0.8 and abs(human["label_prefers_shorter"] - sum(shorter) / 81) < 0.1
    assert out["sets"]["validation"]["pairs"] == 8 and out["sets"]["validation"]["label_prefers_shorter"] == 1.0
    assert out["accuracy"] == out["sets"]["validation"]["accuracy"]


def test_a_bad_eval_file_is_an_error_naming_file_and_line(tiny_params, tmp_path):
    bad = tmp_path / "prefs.jsonl"
    bad.write_text('{"id": "a", "prompt": "p", "chosen": "c", "rejected": "r"}\n{"id": "b", "prompt": "p"}\n')
    spec = {"name": "mine", "source": "jsonl", "path": str(bad),
            "fields": {"id": "id", "document": "prompt", "chosen": "chosen", "rejected": "rejected"}}
    with pytest.raises(DataError, match=r"reward.eval_pairs\[0\] \(mine\): 1 unusable row.*prefs.jsonl: line 2: "
                                        r"field 'chosen'"):
        reward_eval.eval_file_rows(from_mapping(EvalPairsSpec, spec), "reward.eval_pairs[0] (mine)")
    missing = deep_merge(tiny_params, {"reward": {"eval_pairs": [{**spec, "path": str(tmp_path / "nope.jsonl")}]}})
    with pytest.raises(ParamsError, match=r"reward.eval_pairs\[0\].path: file or folder not found"):
        validate_params(missing)
    taken = deep_merge(tiny_params, {"reward": {"eval_pairs": [{**spec, "name": "validation"}]}})
    with pytest.raises(ParamsError, match=r"reward.eval_pairs\[0\].name: 'validation' is taken"):
        validate_params(taken)
