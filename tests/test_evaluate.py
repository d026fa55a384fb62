"""Generation and evaluation: metric functions against hand-computed values, then both stages on the tiny model."""

from __future__ import annotations

import json
import math
import os
from argparse import Namespace
from pathlib import Path

import pytest
import torch

from sumrl.artifacts import DataError, read_json, read_jsonl, write_jsonl
from sumrl.config import Config
from sumrl.evaluate import generate, metrics
from sumrl.models.load import load_tokenizer
from sumrl.params import deep_merge

# ---- metric functions ------------------------------------------------------------------------------


def test_rouge_f1_on_hand_counted_strings():
    # 5 of 6 unigrams shared; bigrams the-cat, on-the, the-mat shared of 5; LCS "the cat on the mat" = 5.
    got = metrics.rouge_f1("the cat sat on the mat", ["the cat lay on the mat"])
    assert got == pytest.approx({"rouge1": 5 / 6, "rouge2": 3 / 5, "rougeL": 5 / 6})


def test_rouge_f1_stems_and_handles_empty_prediction():
    assert metrics.rouge_f1("cats running", ["cat runs"]) == pytest.approx({"rouge1": 1, "rouge2": 1, "rougeL": 1})
    assert metrics.rouge_f1("", ["cat runs"]) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


def test_rouge_f1_takes_the_best_reference_per_metric():
    # The reversed reference wins ROUGE-1 (all unigrams, no bigram); the other wins ROUGE-2 and ROUGE-L.
    got = metrics.rouge_f1("alpha beta gamma delta", ["delta gamma beta alpha", "alpha beta epsilon zeta"])
    assert got == pytest.approx({"rouge1": 1.0, "rouge2": 1 / 3, "rougeL": 0.5})


def test_rouge_f1_needs_a_reference():
    with pytest.raises(ValueError, match="no reference"):
        metrics.rouge_f1("a summary", [])


def test_mean_stderr_uses_ddof_1():
    m, se = metrics.mean_stderr([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5
    assert se == pytest.approx(math.sqrt(5 / 3) / 2)  # var = (2.25 + .25 + .25 + 2.25) / 3
    assert metrics.mean_stderr([7.0]) == (7.0, None)
    assert metrics.sample_std([2.0, 4.0]) == pytest.approx(math.sqrt(2))


def test_sequence_kl_sums_unmasked_tokens_only():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -9.0]])
    ref = torch.tensor([[-1.5, -1.0, -3.0], [-1.0, -2.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    assert metrics.sequence_kl(logp, ref, mask).tolist() == pytest.approx([0.5 - 1.0, 0.5 + 1.5])


def test_eos_rate_and_aggregate():
    examples = [
        {"rouge1": 0.5, "rouge2": 0.2, "rougeL": 0.4, "reward": 1.0, "sigma": 0.0, "kl_to_sft": 0.0, "length": 10,
         "has_eos": True, "reference_length": 12},
        {"rouge1": 0.3, "rouge2": 0.0, "rougeL": 0.2, "reward": 3.0, "sigma": 0.0, "kl_to_sft": 2.0, "length": 20,
         "has_eos": False, "reference_length": 16},
    ]
    assert metrics.eos_rate([True, False, True, True]) == 0.75
    got = metrics.aggregate(examples, probabilistic=False)
    assert got == pytest.approx({"rouge1": 0.4, "rouge2": 0.1, "rougeL": 0.3, "reward": 2.0, "reward_se": 1.0,
                                 "sigma": None, "kl_to_sft": 1.0, "kl_to_sft_se": 1.0, "length": 15.0,
                                 "reference_length": 14.0, "eos_rate": 0.5})
    assert metrics.aggregate(examples, probabilistic=True)["sigma"] == 0.0


# ---- the stages on the tiny model ------------------------------------------------------------------

TEST_ROWS = [
    {"id": "t0", "document": "We propose a parser for long documents and evaluate it on three corpora.",
     "summary": "A parser for long documents is proposed."},
    {"id": "t1", "document": "This paper studies summarization of scientific abstracts with reinforcement learning.",
     "summary": "Summarization with reinforcement learning.", "references": ["RL for abstract summaries."]},
    {"id": "t2", "document": "We release a dataset of annotated dialogues and report baseline results.",
     "summary": "A dialogue dataset with baselines."},
    {"id": "t3", "document": "Our model improves translation quality for low-resource languages.",
     "summary": "Better low-resource translation."},
    {"id": "t4", "document": "We analyse attention heads and find that few of them matter.",
     "summary": "Few attention heads matter."},
]


def save_perturbed_copy(src: Path, out: Path, seed: int) -> None:
    """The tiny model with seeded noise on its weights: a second policy that differs from SFT."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(src))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(src)).save_pretrained(str(out))


def save_reward_model(src: Path, out: Path, kind: str = "scalar", num_scores: int = 10) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    num_labels = 1 if kind == "scalar" else num_scores
    model = AutoModelForSequenceClassification.from_pretrained(str(src), num_labels=num_labels)
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(src)).save_pretrained(str(out))
    (out / "sumrl_reward.json").write_text(json.dumps({"kind": kind, "num_scores": num_scores}))


@pytest.fixture
def workspace(tmp_path, monkeypatch, tiny_model_dir, tiny_params) -> dict:
    """A project folder with the test split, base (perturbed), sft (the tiny model) and a reward model."""
    monkeypatch.chdir(tmp_path)
    write_jsonl("data/prepared/test.jsonl", TEST_ROWS)
    Path("models").mkdir()
    os.symlink(tiny_model_dir, "models/sft")
    save_perturbed_copy(tiny_model_dir, Path("models/base"), seed=1)
    save_reward_model(tiny_model_dir, Path("models/reward"))
    return deep_merge(tiny_params, {"generate": {"batch_size": 2}, "evaluate": {"batch_size": 2}})


def policy(name: str) -> Namespace:
    return Namespace(policy=name)


@pytest.mark.slow
def test_generate_rows_and_identical_reruns(workspace):
    from transformers import AutoTokenizer

    params = deep_merge(workspace, {"generate": {"do_sample": True}})  # sampling: reruns must still match
    generate.run(params, policy("sft"))
    out = Path("reports/generations/sft.jsonl")
    first = out.read_bytes()
    generate.run(params, policy("sft"))
    assert out.read_bytes() == first

    rows = read_jsonl(out)
    tok = AutoTokenizer.from_pretrained("models/sft")
    assert [r["id"] for r in rows] == [r["id"] for r in TEST_ROWS]
    assert rows[1]["references"] == ["Summarization with reinforcement learning.", "RL for abstract summaries."]
    for row, test in zip(rows, TEST_ROWS):
        assert set(row) == {"id", "document", "prompt", "summary", "reference", "references", "has_eos", "length",
                            "completion_ids"}
        assert row["reference"] == test["summary"] and test["document"] in row["prompt"]
        assert row["length"] == len(row["completion_ids"]) <= params["generate"]["max_new_tokens"]
        assert row["has_eos"] == (row["completion_ids"][-1] == tok.eos_token_id)
        assert tok.decode(row["completion_ids"], skip_special_tokens=True).strip() == row["summary"]


@pytest.mark.slow
def test_evaluate_layout_and_kl_to_sft(workspace):
    for name in ("sft", "base"):
        generate.run(workspace, policy(name))
        metrics.run(workspace, policy(name))
    sft, base = read_json("reports/eval/sft.json"), read_json("reports/eval/base.json")

    assert set(sft) == {"policy", "n", "reward_model", "metrics", "examples"}
    assert sft["reward_model"] == {"kind": "scalar", "num_scores": 10}
    assert sft["n"] == len(sft["examples"]) == len(TEST_ROWS)
    assert set(sft["metrics"]) == {"rouge1", "rouge2", "rougeL", "reward", "reward_se", "sigma", "kl_to_sft",
                                   "kl_to_sft_se", "length", "reference_length", "eos_rate"}
    assert set(sft["examples"][0]) == {"id", "rouge1", "rouge2", "rougeL", "reward", "sigma", "kl_to_sft", "length",
                                       "has_eos", "reference_reward", "reference_length"}
    # the reference's reward is the policy's opponent on the same input: the same for every policy
    assert [e["reference_reward"] for e in sft["examples"]] == [e["reference_reward"] for e in base["examples"]]
    assert all(e["reference_length"] >= 2 for e in sft["examples"])  # at least one token and its EOS
    assert sft["metrics"]["sigma"] is None
    assert all(e["kl_to_sft"] == 0.0 for e in sft["examples"])  # the same weights on both sides
    assert all(math.isfinite(e["kl_to_sft"]) for e in base["examples"])
    assert base["metrics"]["kl_to_sft"] != 0.0
    assert all(0.0 <= base["metrics"][k] <= 1.0 for k in metrics.ROUGE_TYPES)
    assert math.isfinite(base["metrics"]["reward"]) and base["metrics"]["reward_se"] > 0


@pytest.mark.slow
def test_kl_does_not_depend_on_batch_padding(workspace):
    generate.run(workspace, policy("base"))
    rows = read_jsonl("reports/generations/base.jsonl")
    tokenizer = load_tokenizer("models/base")
    alone = metrics.kl_to_sft_per_example(Config.of(deep_merge(workspace, {"evaluate": {"batch_size": 1}})), "base",
                                          tokenizer, rows, "cpu")
    padded = metrics.kl_to_sft_per_example(Config.of(deep_merge(workspace, {"evaluate": {"batch_size": 5}})), "base",
                                           tokenizer, rows, "cpu")
    assert padded == pytest.approx(alone, abs=1e-3)


@pytest.mark.slow
def test_probabilistic_reward_model_reports_sigma(workspace, tiny_model_dir):
    save_reward_model(tiny_model_dir, Path("models/reward"), kind="probabilistic", num_scores=5)
    generate.run(workspace, policy("sft"))
    metrics.run(workspace, policy("sft"))
    ev = read_json("reports/eval/sft.json")
    assert ev["reward_model"] == {"kind": "probabilistic", "num_scores": 5}
    assert 1.0 <= ev["metrics"]["reward"] <= 5.0  # E[s] over scores 1..5
    assert 0.0 < ev["metrics"]["sigma"] <= 2.0


@pytest.mark.slow
def test_report_reads_what_evaluate_writes(workspace):
    from sumrl.report import run as report_run

    params = deep_merge(workspace, {"rl": {"methods": ["rloo"], "seeds": [0]}, "report": {"samples": 1}})
    Path("models/rl").mkdir()
    os.symlink(Path("models/base").resolve(), "models/rl/rloo_s0")  # same weights as base: same numbers
    for name in ("base", "sft", "rloo_s0"):
        generate.run(params, policy(name))
        metrics.run(params, policy(name))
    report_run(params)
    table = read_json("reports/metrics.json")
    assert set(table) == {"base", "sft", "rloo_s0", "length_model"}
    assert table["rloo_s0"] == table["base"]
    assert table["sft"]["kl_to_sft"] == 0.0 and table["sft"]["reward_delta_vs_sft"] == 0.0
    assert "| rloo\\_s0 |" in Path("reports/report.md").read_text()


def test_evaluate_without_generations_names_the_file(tmp_path, monkeypatch, tiny_params):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="reports/generations/sft.jsonl"):
        metrics.run(tiny_params, policy("sft"))
