"""`compute.launcher: accelerate`: a training stage re-runs itself under `accelerate launch`.

The stage table's command stays `sumrl sft` for Snakemake and DVC alike; the stage, started by plain
`python`, replaces its own process (same PID, so the workflow engine still tracks it) with
`accelerate launch --config_file workflow/launch/accelerate_<mode>.yaml -m sumrl.cli sft ...`, which
starts one process per visible GPU. The child sees SUMRL_LAUNCHED and does not relaunch again.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from sumrl.config import Config
from sumrl.scale.deepspeed import deepspeed_config_path, launch_dir, zero_mode

log = logging.getLogger(__name__)

LAUNCHED_MARK = "SUMRL_LAUNCHED"
# accelerate sets ACCELERATE_MIXED_PRECISION on every launch path; torchrun and deepspeed set LOCAL_RANK.
LAUNCHER_VARS = (LAUNCHED_MARK, "ACCELERATE_MIXED_PRECISION", "LOCAL_RANK")


def under_launcher(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return any(key in env for key in LAUNCHER_VARS)


def accelerate_config_path(params: Config | Mapping) -> Path:
    path = launch_dir() / f"accelerate_{zero_mode(params) or 'ddp'}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: accelerate config for compute.deepspeed/offload not found")
    return path


def visible_gpus(params: Config | Mapping) -> int:
    if Config.of(params).compute.device == "cpu":
        return 0
    import torch

    return torch.cuda.device_count()


def relaunch_command(params: Config | Mapping, argv: Sequence[str], gpus: int) -> list[str]:
    """The `accelerate launch` command line that runs `sumrl <argv>` on `gpus` processes (0: one CPU process)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config_path(params))]
    ds_config = deepspeed_config_path(params)
    if ds_config is not None:
        # Absolute, so the launch works from any directory (the yaml's own path is relative to the repo root).
        cmd += ["--deepspeed_config_file", str(ds_config)]
    if not gpus and ds_config is None:
        # Only without ZeRO: --cpu turns accelerate's DEEPSPEED distributed type off, so the trainer would run
        # without the engine (a ZeRO-3 model already partitioned by zero.Init then fails in its first forward).
        # Without it DeepSpeed finds no GPU and runs on the CPU accelerator itself.
        cmd.append("--cpu")
    cmd += ["--num_processes", str(gpus or 1)]
    return [*cmd, "-m", "sumrl.cli", *argv]


def maybe_relaunch(params: Config | Mapping, argv: Sequence[str] | None = None) -> None:
    """Return at once unless `compute.launcher` is accelerate and no launcher started us; else never return.

    `argv` is the `sumrl` command line without the program name (default: sys.argv[1:]).
    """
    if Config.of(params).compute.launcher != "accelerate" or under_launcher():
        return
    argv = sys.argv[1:] if argv is None else list(argv)
    cmd = relaunch_command(params, argv, visible_gpus(params))
    log.info("relaunching under accelerate: %s", " ".join(cmd))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(cmd[0], cmd, {**os.environ, LAUNCHED_MARK: "1"})
