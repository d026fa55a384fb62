"""Typed, frozen params (trl's config dataclasses are the model): `cfg.rl.kl_control.target`, not
`params["rl"]["kl_control"]["target"]`. Each stage builds its `Config` once from the validated params
(`Config.of`) and passes typed sections down; only the validator (params.py) and the stage table (stages.py),
whose keys are dotted strings by design, read the params mapping itself.

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
    """`cls` from a params mapping: nested sections become their dataclasses, lists become tuples (of dataclasses
    where the field says so). A key the dataclass lacks, or a field without a default that the mapping lacks,
    is an error."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    required = {f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    if not required <= set(values) <= fields:
        raise KeyError(f"{cls.__name__}: keys {sorted(values)} are not its fields {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            value = from_mapping(kind, value)
        elif isinstance(value, list):
            item = (typing.get_args(kind) or (None,))[0]
            value = tuple(from_mapping(item, v) if dataclasses.is_dataclass(item) else v for v in value)
        kwargs[name] = value
    return cls(**kwargs)


@dataclass(frozen=True)
class ComputeConfig:
    threads: int
    device: str            # auto | cpu | cuda
    launcher: str          # python | accelerate
    deepspeed: str         # none | zero2 | zero3
    offload: str           # none | cpu
    trust_remote_code: bool


@dataclass(frozen=True)
class ModelConfig:
    base: str
    reward_base: str | None
    dtype: str             # auto | float32 | bfloat16 | float16


@dataclass(frozen=True)
class DataFields:
    id: str
    document: str
    summary: str


@dataclass(frozen=True)
class SplitsConfig:
    sft: float
    pref: float
    rl: float


@dataclass(frozen=True)
class DataConfig:
    source: str            # aclsum | jsonl | parquet | hf
    path: str | None
    hf_config: str | None
    fields: DataFields
    max_document_tokens: int
    max_summary_tokens: int
    min_summary_tokens: int
    splits: SplitsConfig
    max_test: int | None
    test_split: str
    on_bad_rows: str       # error | drop


@dataclass(frozen=True)
class PromptConfig:
    instruction: str
    use_chat_template: bool


@dataclass(frozen=True)
class PairFields:
    id: str
    document: str
    chosen: str
    rejected: str


@dataclass(frozen=True)
class PairsConfig:
    source: str            # generated | jsonl | parquet | hf
    negatives: tuple[str, ...]
    max_length_log_ratio: float
    path: str | None
    fields: PairFields
    validation_fraction: float
    temperature: float
    max_new_tokens: int
    batch_size: int


@dataclass(frozen=True)
class LoraSettings:
    r: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...]


@dataclass(frozen=True)
class SFTConfig:
    lora: LoraSettings
    learning_rate: float
    epochs: float
    batch_size: int
    grad_accum: int
    warmup_ratio: float
    checkpoint_every: int


@dataclass(frozen=True)
class EvalPairsSpec:
    name: str
    source: str            # jsonl | parquet | hf
    path: str
    fields: PairFields
    hf_config: str | None = None


@dataclass(frozen=True)
class RewardConfig:
    kind: str              # scalar | probabilistic
    num_scores: int
    lora: LoraSettings
    learning_rate: float
    epochs: float
    batch_size: int
    checkpoint_every: int
    eval_pairs: tuple[EvalPairsSpec, ...]

    @property
    def num_labels(self) -> int:
        """The head's outputs: one score, or a distribution over 1..num_scores."""
        return 1 if self.kind == "scalar" else self.num_scores


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


@dataclass(frozen=True)
class GenerateConfig:
    max_new_tokens: int
    batch_size: int
    do_sample: bool
    temperature: float


@dataclass(frozen=True)
class EvaluateConfig:
    batch_size: int


@dataclass(frozen=True)
class JudgeConfig:
    enabled: bool
    backend: str           # hf | openai
    model: str | None
    url_env: str
    key_env: str
    against: str           # reference | sft
    max_rows: int | None
    samples: int
    temperature: float
    max_new_tokens: int
    batch_size: int
    timeout_s: float
    retries: int


@dataclass(frozen=True)
class ReportConfig:
    samples: int


@dataclass(frozen=True)
class Config:
    """All of params.yaml, typed: built once per stage from the validated params and passed down."""

    seed: int
    compute: ComputeConfig
    model: ModelConfig
    data: DataConfig
    prompt: PromptConfig
    pairs: PairsConfig
    sft: SFTConfig
    reward: RewardConfig
    rl: RLConfig
    generate: GenerateConfig
    evaluate: EvaluateConfig
    judge: JudgeConfig
    report: ReportConfig

    @classmethod
    def of(cls, params: Config | typing.Mapping[str, Any]) -> Config:
        """The typed params: `params` itself, or built from a validated params mapping."""
        return params if isinstance(params, Config) else from_mapping(cls, params)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)
