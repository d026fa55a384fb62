"""The RL methods by name: one small file per method over the shared core (rl/method.py, rl/core.py)."""

from __future__ import annotations

from sumrl.config import RLConfig
from sumrl.rl.grpo import GRPO
from sumrl.rl.method import Method
from sumrl.rl.ppo import PPO
from sumrl.rl.reinforce import Reinforce
from sumrl.rl.rloo import RLOO

METHODS: dict[str, type[Method]] = {"reinforce": Reinforce, "rloo": RLOO, "ppo": PPO, "grpo": GRPO}


def build_method(name: str, cfg: RLConfig) -> Method:
    """The online method `name` (dpo is offline: `sumrl rl --method dpo` runs train/dpo.py instead)."""
    if name not in METHODS:
        raise ValueError(f"unknown RL method '{name}'; choose from {sorted(METHODS)}")
    return METHODS[name](cfg)
