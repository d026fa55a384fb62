"""Typed, frozen views of validated params sections, built once and passed down (trl's config dataclasses
are the model): `cfg.kl_control.target`, not `params["rl"]["kl_control"]["target"]`.

Each dataclass mirrors its schema section field for field (tests/test_config.py checks the two agree), so a
key added to the schema without a field here fails a test, not a run. Built only from params that passed
validation: ranges and cross-key rules are the schema's and params.py's job, not this module's.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def from_mapping(cls: type[T], values: typing.Mapping[str, Any]) -> T:
    """`cls` from a params mapping: nested sections become their dataclasses, lists become tuples."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    if set(values) != fields:
        raise KeyError(f"{cls.__name__}: keys {sorted(values)} are not its fields {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            value = from_mapping(kind, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


@dataclass(frozen=True)
class LoraSettings:
    r: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...]


@dataclass(frozen=True)
class KLControlConfig:
    kind: str          # fixed | adaptive
    target: float      # adaptive: the sequence KL (nats) beta steers towards
    horizon: int       # adaptive: completions over which beta moves by at most ~20%


@dataclass(frozen=True)
class ReinforceConfig:
    baseline: str        # ema | running_mean
    baseline_decay: float


@dataclass(frozen=True)
class RLOOConfig:
    k: int


@dataclass(frozen=True)
class GRPOConfig:
    k: int
    kl: str              # reward | loss
    scale_rewards: str   # group | none


@dataclass(frozen=True)
class DPOConfig:
    beta: float
    loss_type: str       # trl's name: sigmoid (DPO), ipo, hinge, robust, ...
    learning_rate: float
    epochs: float
    batch_size: int
    checkpoint_every: int


@dataclass(frozen=True)
class PPOConfig:
    gamma: float
    lam: float
    clip_range: float
    value_clip: float
    vf_coef: float


@dataclass(frozen=True)
class RLConfig:
    """params `rl:` (described key by key in the schema and the README's params reference)."""

    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    variance_regularized: bool
    lora: LoraSettings
    learning_rate: float
    kl_coef: float
    kl_control: KLControlConfig
    reward_normalization: bool
    length_penalty: float
    temperature: float
    max_new_tokens: int
    missing_eos_penalty: float
    rollout_batch_size: int
    mini_batches: int
    micro_batch_size: int | None
    epochs: int
    total_episodes: int
    max_grad_norm: float
    checkpoint_every: int
    clip_range: float
    reinforce: ReinforceConfig
    rloo: RLOOConfig
    ppo: PPOConfig
    grpo: GRPOConfig
    dpo: DPOConfig

    @classmethod
    def from_params(cls, params: typing.Mapping[str, Any]) -> RLConfig:
        return from_mapping(cls, params["rl"])

    def replace(self, **changes) -> RLConfig:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        """The params form again (for sumrl_run.json)."""
        return dataclasses.asdict(self)
