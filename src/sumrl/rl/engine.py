"""How the RL loop applies gradients and keeps checkpoints: plain torch in one process, or a DeepSpeed ZeRO
engine (`compute.deepspeed: zero2 | zero3`, one process per GPU under `accelerate launch`, or one CPU process).

The loop calls the same five things on either: `model` (what the training forward goes through),
`full_weights()` (around sampling and the no-grad forwards: ZeRO-3 gathers its partitions once there rather
than layer by layer at every generated token), `backward(loss, boundary)` per micro-batch, `step()` per
mini-batch, and `save`/`load` for checkpoints. The optimizer is torch's AdamW on both, with the same
settings, so the two paths take the same step (tests/test_rl_zero.py compares them).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from sumrl.artifacts import atomic_path, write_json
from sumrl.config import RLConfig

log = logging.getLogger("sumrl.rl")

STATE = "state.json"


def adamw(trainable: list[torch.nn.Parameter], cfg: RLConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(trainable, lr=cfg.learning_rate, eps=1e-6)


class PlainEngine:
    """One process: backward into .grad, clip to rl.max_grad_norm, AdamW."""

    rank, world_size, zero_stage = 0, 1, None

    def __init__(self, policy: torch.nn.Module, cfg: RLConfig):
        self.model = policy
        self.trainable = [p for p in policy.parameters() if p.requires_grad]
        self.optimizer = adamw(self.trainable, cfg)
        self.max_grad_norm = cfg.max_grad_norm

    def full_weights(self):
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor, boundary: bool) -> None:
        loss.backward()

    def step(self) -> None:
        torch.nn.utils.clip_grad_norm_(self.trainable, self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def save(self, ckpt_dir: Path, state: dict) -> None:
        """The adapter (and value head) tensors, the optimizer, and `state`, written all at once or not at all."""
        with atomic_path(ckpt_dir, is_dir=True) as tmp:
            trained = {n: p.detach().contiguous() for n, p in self.model.named_parameters() if p.requires_grad}
            save_file(trained, str(tmp / "trained.safetensors"))
            torch.save({"optimizer": self.optimizer.state_dict()}, tmp / "optimizer.pt")
            write_json(tmp / STATE, state)

    def load(self, ckpt_dir: Path, state: dict) -> None:
        missing = self.model.load_state_dict(load_file(str(ckpt_dir / "trained.safetensors")), strict=False)
        if missing.unexpected_keys:
            raise RuntimeError(f"{ckpt_dir}/trained.safetensors: unexpected keys {missing.unexpected_keys[:3]}")
        self.optimizer.load_state_dict(torch.load(ckpt_dir / "optimizer.pt", weights_only=True)["optimizer"])


class ZeroEngine:
    """A DeepSpeed engine around the policy (the value head rides along as a submodule, so ZeRO shards it too).

    Gradient accumulation over micro-batches is ours, not DeepSpeed's: each micro-batch's loss is already
    weighted by its share of the mini-batch, so the engine must neither divide it by its accumulation count
    (scale_wrt_gas=False) nor step before the mini-batch's last micro-batch (the boundary is set by hand).
    Clipping to rl.max_grad_norm is the engine's (`gradient_clipping` in the config).
    """

    def __init__(self, policy: torch.nn.Module, cfg: RLConfig, ds_config: dict):
        import deepspeed

        trainable = [p for p in policy.parameters() if p.requires_grad]
        # An offload config names DeepSpeed's CPU AdamW (same settings); otherwise torch's, as in PlainEngine.
        optimizer = None if "optimizer" in ds_config else adamw(trainable, cfg)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(model=policy, model_parameters=trainable,
                                                                 optimizer=optimizer, config=ds_config)
        self.model = self.engine
        self.zero_stage = self.engine.zero_optimization_stage()
        self.rank, self.world_size = self.engine.global_rank, self.engine.world_size

    def full_weights(self):
        if self.zero_stage != 3:
            return contextlib.nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(self.engine.module.parameters()))

    def backward(self, loss: torch.Tensor, boundary: bool) -> None:
        self.engine.set_gradient_accumulation_boundary(boundary)
        self.engine.backward(loss, scale_wrt_gas=False)
        self.engine.step()  # an optimizer step only at the boundary; before it, DeepSpeed just counts

    def step(self) -> None:
        pass

    def save(self, ckpt_dir: Path, state: dict) -> None:
        """A ZeRO checkpoint (`global_stepN/`, `latest`); state.json, written after every shard, marks it complete."""
        from deepspeed import comm

        tag = f"global_step{state['step']}"
        self.engine.save_checkpoint(str(ckpt_dir), tag=tag)
        comm.barrier()
        if self.rank == 0:
            (ckpt_dir / STATE).write_text(json.dumps(state))
            for old in ckpt_dir.glob("global_step*"):  # one checkpoint at a time: each holds the frozen base too
                if old.name != tag:
                    shutil.rmtree(old)
        comm.barrier()

    def load(self, ckpt_dir: Path, state: dict) -> None:
        from sumrl.scale.deepspeed import weights_only_torch_load

        # The tag state.json names, not `latest`: a kill between a new save and its state.json leaves both.
        with weights_only_torch_load():
            path, _ = self.engine.load_checkpoint(str(ckpt_dir), tag=f"global_step{state['step']}")
        if path is None:
            raise RuntimeError(f"{ckpt_dir}: DeepSpeed found no checkpoint to resume from")


def build_engine(policy: torch.nn.Module, params: dict, cfg: RLConfig):
    """A ZeroEngine when compute.deepspeed asks for ZeRO, else a PlainEngine (which runs in one process only)."""
    from sumrl.scale.deepspeed import rl_deepspeed_config

    ds_config = rl_deepspeed_config(params, cfg, policy)
    if ds_config is None:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1:
            raise RuntimeError(f"the RL stage runs on {world} processes only through DeepSpeed: "
                               "set compute.deepspeed to zero2 or zero3 (compute.deepspeed: none is one process)")
        return PlainEngine(policy, cfg)
    log.info("RL under DeepSpeed ZeRO-%s", ds_config["zero_optimization"]["stage"])
    return ZeroEngine(policy, cfg, ds_config)


def read_state(ckpt_dir: Path) -> dict | None:
    path = ckpt_dir / STATE
    return json.loads(path.read_text()) if path.is_file() else None
