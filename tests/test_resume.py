"""Fault injection: SIGKILL a training stage mid-run, rerun it, and check it resumed and finished.

Each stage runs as a real `sumrl` process in a scratch project folder on the tiny model; the kill comes
once a checkpoint exists. A killed stage must leave no output folder (atomic outputs), and the rerun must
start from the last checkpoint, not from step 0.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from projects import SUMRL, add_rl_inputs, make_project, sumrl

pytestmark = pytest.mark.slow


def _kill_when(cwd: Path, args: list[str], ready, timeout: float = 600) -> None:
    """Start `sumrl args`, SIGKILL it as soon as `ready()` holds; fail if it finished first."""
    proc = subprocess.Popen([*SUMRL, *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"sumrl {' '.join(args)} finished (rc {proc.returncode}) before the kill")
        if time.time() > deadline:
            proc.kill()
            pytest.fail("no checkpoint appeared in time")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sft_killed_after_a_checkpoint_resumes_and_finishes(tmp_path, tiny_model_dir):
    cwd = make_project(tmp_path, tiny_model_dir, "sft.epochs=3", "sft.checkpoint_every=3")
    assert sumrl(cwd, "prepare-data").returncode == 0
    work = cwd / "checkpoints" / "sft"
    _kill_when(cwd, ["sft"], lambda: (work / "checkpoint-3" / "trainer_state.json").is_file())
    assert not (cwd / "models" / "sft_run").exists(), "a killed stage left its output folder"

    rerun = sumrl(cwd, "sft")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    resumed = [line for line in rerun.stderr.splitlines() if "resuming sft from" in line]
    assert resumed and "checkpoint-" in resumed[0], rerun.stderr[-3000:]
    start = int(resumed[0].rsplit("checkpoint-", 1)[1])
    assert start >= 3
    run = json.loads((cwd / "models" / "sft_run" / "sumrl_run.json").read_text())
    steps = [int(r["step"]) for r in csv.DictReader(open(cwd / "reports" / "curves" / "sft.csv"))]
    assert steps == list(range(1, run["steps"] + 1)), "the curve must hold every step once"


def test_rl_killed_after_a_checkpoint_resumes_after_unrelated_params_change(tmp_path, tiny_model_dir):
    cwd = make_project(tmp_path, tiny_model_dir, "rl.total_episodes=24", "rl.checkpoint_every=1")
    add_rl_inputs(cwd, tiny_model_dir)

    state = cwd / "checkpoints" / "rl" / "rloo_s0" / "state.json"
    _kill_when(cwd, ["rl", "--method", "rloo", "--seed", "0"],
               lambda: state.is_file() and json.loads(state.read_text())["step"] >= 2)
    assert not (cwd / "models" / "rl_run" / "rloo_s0").exists()
    killed_at = json.loads(state.read_text())["step"]
    # What this run's result does not depend on changes meanwhile (another method's knob, a new seed, the
    # thread count): the checkpoint must still be resumed, as DVC and Snakemake would not rerun the stage.
    params = yaml.safe_load((cwd / "params.yaml").read_text())
    params["rl"]["ppo"]["gamma"] = 0.9
    params["rl"]["seeds"] = [0, 1]
    params["compute"]["threads"] = 1
    (cwd / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    rerun = sumrl(cwd, "rl", "--method", "rloo", "--seed", "0")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads((cwd / "models" / "rl_run" / "rloo_s0" / "sumrl_run.json").read_text())
    assert summary["resumed_from"] == killed_at
    assert summary["steps"] == 6
    steps = [int(r["step"]) for r in csv.DictReader(open(cwd / "reports" / "curves" / "rl_rloo_s0.csv"))]
    assert steps == list(range(1, 7))


def test_sft_under_accelerate_with_zero2_on_the_cpu_trains_with_deepspeed(tmp_path, tiny_model_dir):
    """`compute.launcher: accelerate` + `compute.deepspeed: zero2` through the CLI, as a user runs it: the stage
    re-executes under `accelerate launch`, and what it leaves is a real ZeRO checkpoint (global_stepN + latest),
    not a plain Trainer checkpoint (which is what `accelerate launch --cpu` silently produced)."""
    cwd = make_project(tmp_path, tiny_model_dir, "compute.launcher=accelerate", "compute.deepspeed=zero2")
    assert sumrl(cwd, "prepare-data").returncode == 0
    proc = sumrl(cwd, "sft")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "relaunching under accelerate" in proc.stderr
    run = json.loads((cwd / "models" / "sft_run" / "sumrl_run.json").read_text())
    last = cwd / "models" / "sft_run" / run["last_checkpoint"]
    assert (last / "latest").is_file() and (last / f"global_step{run['steps']}").is_dir(), sorted(os.listdir(last))
