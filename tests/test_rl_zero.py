"""The RL stage under DeepSpeed ZeRO (issue: scale-out), on the tiny model, through the CLI as a user runs it.

ZeRO-2 runs under `accelerate launch` (compute.launcher: accelerate), ZeRO-3 as one plain process
(prepare_distributed_env makes it a world of one). The method is PPO, so the value head is sharded with
the adapter. Each run must train to the same adapter as the plain run of the same params (the engine
changes where the tensors live, not the math), leave the last ZeRO checkpoint in its run folder, and
`consolidate` must rebuild the policy from that checkpoint and verify it.
"""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from safetensors.torch import load_file

from projects import add_rl_inputs, make_project, sumrl

pytestmark = pytest.mark.slow
# 2 steps of 4 completions, 2 mini-batches of 2, micro-batches of 1: the engine's accumulation boundary is ours.
RL = ["rl.total_episodes=8", "rl.rollout_batch_size=4", "rl.micro_batch_size=1", "rl.checkpoint_every=1"]
METHOD = "ppo"


@pytest.fixture(scope="module")
def rl_inputs(tmp_path_factory, tiny_model_dir):
    cwd = make_project(tmp_path_factory.mktemp("rl_zero") / "inputs", tiny_model_dir, *RL)
    add_rl_inputs(cwd, tiny_model_dir)
    return cwd


def run_rl(rl_inputs, where, **compute):
    cwd = where / "_".join(compute.values())
    shutil.copytree(rl_inputs, cwd)
    params = yaml.safe_load((cwd / "params.yaml").read_text())
    params["compute"].update(compute)
    (cwd / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = sumrl(cwd, "rl", "--method", METHOD, "--seed", "0")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return cwd, proc


@pytest.fixture(scope="module")
def plain_adapter(rl_inputs, tmp_path_factory):
    cwd, _ = run_rl(rl_inputs, tmp_path_factory.mktemp("plain"), deepspeed="none", launcher="python")
    run_dir = cwd / "models" / "rl_run" / f"{METHOD}_s0"
    assert json.loads((run_dir / "sumrl_run.json").read_text())["last_checkpoint"] is None
    return load_file(str(run_dir / "final" / "adapter_model.safetensors"))


@pytest.mark.parametrize("deepspeed,launcher", [("zero2", "accelerate"), ("zero3", "python")])
def test_rl_under_zero_trains_like_the_plain_run_and_consolidates(rl_inputs, plain_adapter, tmp_path, deepspeed,
                                                                   launcher):
    cwd, proc = run_rl(rl_inputs, tmp_path, deepspeed=deepspeed, launcher=launcher)
    if launcher == "accelerate":
        assert "relaunching under accelerate" in proc.stderr
    assert f"RL under DeepSpeed ZeRO-{deepspeed[-1]}" in proc.stderr
    run_dir = cwd / "models" / "rl_run" / f"{METHOD}_s0"
    manifest = json.loads((run_dir / "sumrl_run.json").read_text())
    assert manifest["aux_modules"] == ["value_head"]
    last = run_dir / manifest["last_checkpoint"]
    assert (last / "latest").read_text().strip() == "global_step2", sorted(p.name for p in last.iterdir())
    assert not (cwd / "checkpoints" / "rl" / f"{METHOD}_s0").exists()

    zero = load_file(str(run_dir / "final" / "adapter_model.safetensors"))
    assert zero.keys() == plain_adapter.keys()
    assert max((plain_adapter[k] - zero[k]).abs().max().item() for k in zero) < 1e-5
    assert max(t.abs().max().item() for k, t in zero.items() if "lora_B" in k) > 0  # it trained

    # consolidate rebuilds the policy from the ZeRO checkpoint (dropping the value head) and verifies it
    proc = sumrl(cwd, "consolidate", "--stage", f"{METHOD}_s0")
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((cwd / "reports" / "consolidate" / f"{METHOD}_s0.json").read_text())
    assert report["ok"] and report["source"] == f"{deepspeed} checkpoint-2", report
    assert report["max_source_diff"] <= 1e-6 and report["adapter_effect"] > 0
    assert (cwd / "models" / "rl" / f"{METHOD}_s0" / "model.safetensors").is_file()
