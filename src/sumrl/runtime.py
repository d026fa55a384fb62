"""Process-wide set-up shared by every stage: seeds, threads, device, caches."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch


def setup(seed: int, threads: int, device: str = "auto") -> torch.device:
    """Seed every RNG, fix the thread count and pick the device; call once at the start of a stage."""
    torch.set_num_threads(threads)
    seed_everything(seed)
    # Deterministic kernels where torch has them: two runs with the same params give the same metrics.
    torch.use_deterministic_algorithms(True, warn_only=True)
    return pick_device(device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("compute.device is 'cuda' but torch sees no CUDA device")
    return torch.device(device)


def redirect_caches(root: str | os.PathLike) -> None:
    """Keep library caches inside the project unless the user already chose a place."""
    root = Path(root).resolve()
    defaults = {
        "XDG_CACHE_HOME": root,
        "HF_HOME": root / "huggingface",
        "TORCH_EXTENSIONS_DIR": root / "torch_extensions",
        "DVC_SITE_CACHE_DIR": root / "dvc-site",
        "MPLCONFIGDIR": root / "matplotlib",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, str(value))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def close_distributed() -> None:
    """Leave the process group, if one was joined, before the interpreter exits.

    A gloo group still open at exit can abort a rank (`terminate called without an active exception`,
    exit code -6) after the stage's work is saved, and the launcher then fails the whole run.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
