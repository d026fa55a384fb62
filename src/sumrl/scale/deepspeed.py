"""DeepSpeed ZeRO for the training stages: which config they train with, and the environment it needs.

The JSON files in workflow/launch/ are the only copy of each ZeRO config: `trainer_kwargs` hands the one
that `compute.deepspeed` and `compute.offload` name to SFTConfig/RewardConfig, and the accelerate configs
beside them point at the same files. Their "auto" values (batch sizes, clipping, bf16/fp16, bucket sizes)
are filled in by the HF Trainer from the training arguments and the model, so one file serves a CPU and
an 8-GPU node alike.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

from sumrl.config import Config, RLConfig
from sumrl.params import ParamsError

LAUNCH_DIR = Path("workflow") / "launch"
# Beside the package source in a checkout (src/sumrl/scale/ -> repo root): tests and scripts may run elsewhere.
SOURCE_ROOT = Path(__file__).resolve().parents[3]
# The Python objects DeepSpeed pickles into ZeRO-2/3 checkpoints besides tensors and builtins (found with
# torch.serialization.get_unsafe_globals_in_checkpoint on full and LoRA runs of both stages).
ZERO_CHECKPOINT_GLOBALS = (
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.utils.tensor_fragment.fragment_address",
)


def launch_dir() -> Path:
    """workflow/launch/: under the working directory (stages run at the repo root), else of this checkout."""
    for root in (Path.cwd(), SOURCE_ROOT):
        if (root / LAUNCH_DIR).is_dir():
            return root / LAUNCH_DIR
    raise FileNotFoundError(f"{LAUNCH_DIR}: not found under {Path.cwd()} or {SOURCE_ROOT}")


def zero_mode(params: Config | Mapping) -> str | None:
    """'zero2', 'zero3_offload', ... or None when DeepSpeed is off."""
    compute = Config.of(params).compute
    if compute.deepspeed == "none":
        if compute.offload != "none":
            raise ParamsError("compute.offload: 'cpu' offload is a ZeRO feature; "
                              "set compute.deepspeed to zero2 or zero3")
        return None
    return compute.deepspeed + ("_offload" if compute.offload == "cpu" else "")


def deepspeed_config_path(params: Config | Mapping) -> Path | None:
    mode = zero_mode(params)
    return None if mode is None else launch_dir() / f"ds_{mode}.json"


def load_deepspeed_config(params: Config | Mapping) -> dict | None:
    path = deepspeed_config_path(params)
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: DeepSpeed config for compute.deepspeed/offload not found") from None
    except json.JSONDecodeError as exc:
        raise ParamsError(f"{path}: line {exc.lineno}: not valid JSON: {exc.msg}") from None


def trainer_kwargs(params: Config | Mapping) -> dict:
    """Extra SFTConfig/RewardConfig keyword arguments for `compute.deepspeed`: {"deepspeed": {...}} or {}."""
    config = load_deepspeed_config(params)
    return {} if config is None else {"deepspeed": config}


def rl_deepspeed_config(params: Config | Mapping, rl: RLConfig, model) -> dict | None:
    """The ZeRO config for the RL stage's own engine, its "auto" values filled as the HF Trainer fills them
    for SFT and reward (the RL loop has no Trainer): batch sizes from rl.*, clipping from rl.max_grad_norm,
    bf16 from the trained weights' dtype, bucket sizes from the hidden size. None when DeepSpeed is off."""
    import torch

    config = load_deepspeed_config(params)
    if config is None:
        return None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    mini_batch = rl.rollout_batch_size // world // rl.mini_batches
    micro = min(rl.micro_batch_size or mini_batch, mini_batch)
    accumulation = -(-mini_batch // micro)
    hidden = model.config.hidden_size
    auto = {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accumulation,
        "train_batch_size": micro * accumulation * world,
        "gradient_clipping": rl.max_grad_norm,
        # What trains decides: peft keeps a LoRA adapter in fp32 on a bf16 base, and DeepSpeed's bf16 mode would
        # cast it to bf16 (with fp32 master weights), training other numbers than the one-process path.
        "bf16.enabled": any(p.requires_grad and p.dtype == torch.bfloat16 for p in model.parameters()),
        "fp16.enabled": False,
        "zero_optimization.reduce_bucket_size": hidden * hidden,
        "zero_optimization.stage3_prefetch_bucket_size": int(0.9 * hidden * hidden),
        "zero_optimization.stage3_param_persistence_threshold": 10 * hidden,
        # The offload configs name DeepSpeed's own (CPU) AdamW: the same settings as torch's in rl/engine.py.
        "optimizer.params.lr": rl.learning_rate,
        "optimizer.params.betas": [0.9, 0.999],
        "optimizer.params.eps": 1e-6,
        "optimizer.params.weight_decay": 0.01,
    }
    return fill_auto(config, auto, deepspeed_config_path(params))


def fill_auto(config: dict, values: dict, where: Path, prefix: str = "") -> dict:
    """`config` with every "auto" replaced from `values` (keys are dotted paths); an "auto" left over is an error."""
    out = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out[key] = fill_auto(value, values, where, dotted + ".")
        elif value == "auto":
            if dotted not in values:
                raise ParamsError(f"{where}: {dotted}: 'auto' has no value the RL stage can fill in")
            out[key] = values[dotted]
        else:
            out[key] = value
    return out


def prepare_distributed_env(params: Config | Mapping) -> None:
    """Make a plain `python` process a world of one, so DeepSpeed runs without a launcher.

    Without RANK/WORLD_SIZE DeepSpeed goes looking for MPI (mpi4py) and fails. Values a launcher
    (accelerate, torchrun, deepspeed) already set are kept. DeepSpeed compiles a communication op on
    first use; it goes to the project cache, not $HOME.
    """
    if zero_mode(params) is None:
        return  # a world of one would make the HF Trainer set up a process group for nothing
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(".cache", "torch_extensions").resolve()))
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(free_port())


def free_port() -> int:
    """A TCP port nobody listens on now: several single-process stages may run side by side."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def weights_only_torch_load():
    """Every torch.load in the block runs with weights_only=True, allowing only ZERO_CHECKPOINT_GLOBALS.

    DeepSpeed reads its own checkpoints with weights_only=False (zero_to_fp32, engine.load_checkpoint on
    resume), which would run any code a tampered checkpoint pickled; under this block such a file fails to
    load instead, with torch's error naming the global it refused.
    """
    import torch

    allowed = [_resolve(name) for name in ZERO_CHECKPOINT_GLOBALS]
    load = torch.load

    def safe_load(*args, **kwargs):
        kwargs["weights_only"] = True
        return load(*args, **kwargs)

    with torch.serialization.safe_globals(allowed), mock.patch.object(torch, "load", safe_load):
        yield


def _resolve(dotted: str):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)
