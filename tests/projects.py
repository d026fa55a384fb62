"""Scratch project folders on the tiny model, and `sumrl` run in them as a user runs it (a child process)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from sumrl.params import load_params

from conftest import ROOT, TINY_OVERRIDES

SUMRL = [sys.executable, "-m", "sumrl.cli"]


def make_project(tmp_path: Path, tiny_model_dir: Path, *overrides: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    params = load_params(ROOT / "params.yaml", overrides=[f"model.base={tiny_model_dir}", *TINY_OVERRIDES, *overrides])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(tiny_model_dir, tmp_path / "models" / "base")
    return tmp_path


def sumrl(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SUMRL, *args], cwd=cwd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def add_rl_inputs(cwd: Path, tiny_model_dir: Path) -> None:
    """What the RL stage reads: prepared data, an SFT model (the tiny model) and a scalar RM with a fresh head."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    assert sumrl(cwd, "prepare-data").returncode == 0
    shutil.copytree(tiny_model_dir, cwd / "models" / "sft")
    torch.manual_seed(0)  # the same head in every project, so that runs in two projects can be compared
    rm = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    rm.config.pad_token_id = 0
    rm.save_pretrained(cwd / "models" / "reward")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(cwd / "models" / "reward")
    (cwd / "models" / "reward" / "sumrl_reward.json").write_text(json.dumps({"kind": "scalar", "num_scores": 1}))
