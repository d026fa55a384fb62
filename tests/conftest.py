"""Shared fixtures: a tiny model built locally, params sized for it, and the real data in ../shared."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from sumrl.params import load_params  # noqa: E402

# Budgets that keep every stage to seconds on the tiny model.
TINY_OVERRIDES = [
    # the 512-token test tokenizer splits ACLSum finely: abstracts run to ~300 tokens, summaries to ~250
    "data.max_document_tokens=320",
    "data.max_summary_tokens=256",
    "data.max_test=6",
    "pairs.max_new_tokens=16",
    "sft.epochs=1",
    "sft.batch_size=4",
    "sft.checkpoint_every=4",
    "reward.epochs=1",
    "reward.checkpoint_every=4",
    "rl.total_episodes=8",
    "rl.rollout_batch_size=4",
    "rl.max_new_tokens=12",
    "rl.checkpoint_every=1",
    "generate.max_new_tokens=12",
    "compute.threads=2",
    # fp32 on the tiny model: the consolidation and resume checks are exact (the bf16 default runs in `make run`)
    "model.dtype=float32",
]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def tiny_params(tiny_model_dir) -> dict:
    return load_params(ROOT / "params.yaml", overrides=[f"model.base={tiny_model_dir}", *TINY_OVERRIDES])


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it sits beside the repo on CI and dev machines)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def rl_inputs(tmp_path_factory, tiny_model_dir):
    """An RM with a fresh head on the tiny model, and RL prompts from the real ACLSum abstracts."""
    from aclsum import ACLSum
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    root = tmp_path_factory.mktemp("rl")
    for kind, n in (("scalar", 1), ("probabilistic", 10)):
        torch.manual_seed(0)
        rm = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=n)
        rm.config.pad_token_id = 0
        rm.save_pretrained(root / f"rm_{kind}")
        AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(root / f"rm_{kind}")
        (root / f"rm_{kind}" / "sumrl_reward.json").write_text(json.dumps({"kind": kind, "num_scores": n}))
    with open(root / "rl.jsonl", "w") as fh:
        for doc in list(ACLSum("val"))[:6]:
            # a summary per prompt: the reference length rl.length_penalty measures against
            fh.write(json.dumps({"id": doc.id, "document": " ".join(doc.sentences["abstract"])[:400],
                                 "summary": " ".join(doc.sentences["abstract"])[:120]}) + "\n")
    return root


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from sumrl.models.load import load_tokenizer

    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_runs(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """Every run in test_deepspeed.RUNS (real trl runs, plain and ZeRO-2/3), single process: consolidated by
    test_consolidate.py."""
    from test_deepspeed import RUNS, build_runs

    return build_runs("single", tiny_model_dir, tmp_path_factory.mktemp("runs"), list(RUNS))


@pytest.fixture(scope="session")
def two_rank_run(tiny_model_dir, tmp_path_factory) -> Path:
    """A full fine-tune under ZeRO-3 on two CPU ranks: each rank writes its own partition of the weights."""
    from test_deepspeed import build_runs

    runs = build_runs("two_ranks", tiny_model_dir, tmp_path_factory.mktemp("runs2"), ["sft_zero3_full"], ranks=2)
    return runs["sft_zero3_full"]
