"""The one stage table. `dvc.yaml` is generated from it (`sumrl stages --write-dvc`); the Snakemake rules
in workflow/rules/ take their inputs and params from it (workflow/rules/common.smk); tests/test_frontends.py
fails if either front end disagrees with it.

A stage is a `sumrl` subcommand with its inputs (deps), outputs (outs) and the params keys whose values
decide its result. Those keys are leaves or small sections, never a whole section that other stages'
knobs live in: a change reruns only the stages that read it (README, "Which params rerun what"). The
same keys are what a training stage's resume fingerprint hashes (`result_params`).

Templated stages (`rl`, `generate_rl`, `evaluate_rl`) are expanded over rl.methods x rl.seeds; `{method}`
and `{seed}` in their fields, params keys included, are filled per instance (DVC: `${item.method}`,
Snakemake: wildcards).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from itertools import product

import yaml

from sumrl.params import BASE_MODEL_DIR, load_schema, select

PREPARED = "data/prepared"
PAIRS = "data/pairs"
BASE = BASE_MODEL_DIR
SFT = "models/sft"
REWARD = "models/reward"
SFT_RUN = "models/sft_run"        # trainer output: checkpoints (plain or ZeRO) + final adapter
REWARD_RUN = "models/reward_run"
CONSOLIDATION = "reports/consolidate/{stage}.json"
RL_RUN = "models/rl_run/{method}_s{seed}"  # the RL loop's output: final adapter (+ last ZeRO checkpoint)
RL = "models/rl/{method}_s{seed}"          # consolidated from RL_RUN
GENERATIONS = "reports/generations/{policy}.jsonl"
EVAL = "reports/eval/{policy}.json"
JUDGE = "reports/judge.json"
REWARD_EVAL = "reports/reward_eval.json"
CURVES = "reports/curves"
# dvclive's mirror of a training curve (sft, reward, rl_<method>_s<seed>): its metrics.json is what `dvc exp show`
# lists next to the evaluation metrics
LIVE = "dvclive/{name}"
TRAINING_METRICS = LIVE + "/metrics.json"

FIXED_POLICIES = {"base": BASE, "sft": SFT}
RL_METHODS = ("reinforce", "rloo", "ppo", "grpo", "dpo")


def rl_policy(method: str, seed: int) -> str:
    return f"{method}_s{seed}"


def policies(params: dict) -> list[str]:
    """Every policy the report compares, in table order."""
    rl = params["rl"]
    return [*FIXED_POLICIES, *(rl_policy(m, s) for m in rl["methods"] for s in rl["seeds"])]


def split_rl_policy(name: str) -> dict[str, str] | None:
    """`<method>_s<seed>` -> {"method", "seed"} (the fields of RL and RL_RUN), or None for another shape."""
    method, _, seed = name.rpartition("_s")
    return {"method": method, "seed": seed} if method and seed.isdigit() else None


def policy_dir(name: str) -> str:
    if name in FIXED_POLICIES:
        return FIXED_POLICIES[name]
    fields = split_rl_policy(name)
    if fields is None:
        raise ValueError(f"unknown policy '{name}': expected base, sft or <method>_s<seed>")
    return RL.format(**fields)


TRAINED_RUNS = {"sft": (SFT_RUN, SFT), "reward": (REWARD_RUN, REWARD)}


def trained_run(stage: str) -> tuple[str, str, str]:
    """`sumrl consolidate --stage X`: (run folder, consolidated folder, the stage its sumrl_run.json names)."""
    if stage in TRAINED_RUNS:
        return (*TRAINED_RUNS[stage], stage)
    fields = split_rl_policy(stage)
    if fields is None or fields["method"] not in RL_METHODS:
        raise ValueError(f"unknown trained stage '{stage}': expected sft, reward or <method>_s<seed>")
    return RL_RUN.format(**fields), RL.format(**fields), "rl"


@dataclass(frozen=True)
class Stage:
    name: str
    cmd: str
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    params: tuple[str, ...]
    metrics: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()
    over_rl_runs: bool = False  # expanded over rl.methods x rl.seeds
    extra: dict = field(default_factory=dict)


# Keys that decide where and how fast a stage runs, not what it computes, are no stage's params:
# compute.threads (torch threads) and compute.launcher (python, or `accelerate launch` with one process per
# visible GPU; the trl stages split their batch over the processes, the RL loop's batch is global).
# The dtype, the device, ZeRO and its offload (a different optimizer implementation) change the numbers.
PLACEMENT_ONLY = ("compute.threads", "compute.launcher")
RUNTIME = ("model.dtype", "compute.device", "compute.trust_remote_code")
TRAINING_RUNTIME = (*RUNTIME, "compute.deepspeed", "compute.offload")


def _rl_shared_keys() -> tuple[str, ...]:
    """rl.* keys every method reads: all but the method sections and the lists the DAG is expanded over."""
    keys = load_schema()["properties"]["rl"]["properties"]
    return tuple(f"rl.{k}" for k in keys if k not in ("methods", "seeds", *RL_METHODS))


RL_SHARED = _rl_shared_keys()

CODE = "src/sumrl"
# Modules every model-running stage imports: a change here reruns them all (over-inclusive, never stale).
SHARED_CODE = tuple(f"{CODE}/{m}" for m in ("artifacts.py", "runtime.py", "models/load.py", "data/prompts.py",
                                            "generation.py", "models/scoring.py"))


def _outside(folder: str, files: tuple[str, ...]) -> tuple[str, ...]:
    """`files` less those inside `folder` (a folder dep already covers them)."""
    return tuple(f for f in files if not f.startswith(f"{CODE}/{folder}/"))


# The launcher and DeepSpeed code every training stage (SFT, reward, RL) runs under; trl's stages add train/common.py.
SCALE_CODE = tuple(f"{CODE}/{m}" for m in ("scale/deepspeed.py", "scale/launch.py"))
TRAIN_CODE = (f"{CODE}/train/common.py", *SCALE_CODE)

STAGES: tuple[Stage, ...] = (
    Stage(
        "base_model",
        "sumrl base-model",
        deps=(f"{CODE}/models/base.py", f"{CODE}/models/load.py", f"{CODE}/artifacts.py"),
        outs=(BASE,),
        params=("model.base", "model.dtype", "compute.trust_remote_code"),
    ),
    Stage(
        "prepare_data",
        "sumrl prepare-data",
        deps=(f"{CODE}/data", f"{CODE}/models/load.py", f"{CODE}/artifacts.py", BASE),
        outs=(PREPARED,),
        params=("seed", "data", "compute.trust_remote_code"),
    ),
    Stage(
        "pairs",
        "sumrl pairs",
        deps=(f"{CODE}/data", *_outside("data", SHARED_CODE), PREPARED, BASE),
        outs=(PAIRS,),
        params=("seed", "pairs", "prompt", "data.on_bad_rows", *RUNTIME),
    ),
    Stage(
        "sft",
        "sumrl sft",
        deps=(f"{CODE}/train/sft.py", *TRAIN_CODE, *SHARED_CODE, PREPARED, BASE),
        outs=(SFT_RUN,),
        params=("seed", "sft", "prompt", "data.max_document_tokens", "data.max_summary_tokens", *TRAINING_RUNTIME),
        metrics=(TRAINING_METRICS.format(name="sft"),),
        plots=(f"{CURVES}/sft.csv",),
    ),
    Stage(
        "reward",
        "sumrl reward",
        deps=(f"{CODE}/train/reward.py", *TRAIN_CODE, *SHARED_CODE, PAIRS, BASE),
        outs=(REWARD_RUN,),
        # Leaf keys: which sets reward-eval scores (reward.eval_pairs) does not retrain the model.
        params=("seed", *(f"reward.{k}" for k in ("kind", "num_scores", "lora", "learning_rate", "epochs",
                                                  "batch_size", "checkpoint_every")),
                "prompt", "model.reward_base", "data.max_document_tokens", "data.max_summary_tokens",
                *TRAINING_RUNTIME),
        metrics=(TRAINING_METRICS.format(name="reward"),),
        plots=(f"{CURVES}/reward.csv",),
    ),
    Stage(
        "consolidate",
        "sumrl consolidate --stage {stage}",
        deps=(f"{CODE}/scale/consolidate.py", f"{CODE}/artifacts.py", "models/{stage}_run", BASE),
        outs=("models/{stage}",),
        params=("compute.trust_remote_code",),
        metrics=(CONSOLIDATION,),
        extra={"trained": ("sft", "reward")},
    ),
    Stage(
        # The files named by reward.eval_pairs are read here; they are params, not deps (their paths vary).
        "reward_eval",
        "sumrl reward-eval",
        deps=(f"{CODE}/evaluate/reward_eval.py", f"{CODE}/data/sources.py", *SHARED_CODE, PAIRS, REWARD),
        outs=(),
        params=("reward.eval_pairs", "prompt", "evaluate.batch_size", *RUNTIME),
        metrics=(REWARD_EVAL,),
    ),
    Stage(
        "rl",
        "sumrl rl --method {method} --seed {seed}",
        # dpo (train/dpo.py, trl's DPOTrainer) trains on the pairs instead of sampling against the reward model;
        # one dep list for every method of the matrix, so the others list its code and the pairs too.
        deps=(f"{CODE}/rl", f"{CODE}/train/dpo.py", *TRAIN_CODE, *SHARED_CODE, PREPARED, PAIRS, SFT, REWARD),
        outs=(RL_RUN,),
        # The shared RL keys and this method's own section: another method's knob, a new seed or the methods
        # list leave this run (and its resumable checkpoint) alone.
        params=(*RL_SHARED, "rl.{method}", "reward.kind", "prompt", *TRAINING_RUNTIME),
        metrics=(TRAINING_METRICS.format(name="rl_{method}_s{seed}"),),
        plots=(f"{CURVES}/rl_{{method}}_s{{seed}}.csv",),
        over_rl_runs=True,
    ),
    Stage(
        # The RL adapter sits on the SFT weights, so SFT is the base it is merged into.
        "consolidate_rl",
        "sumrl consolidate --stage {method}_s{seed}",
        deps=(f"{CODE}/scale/consolidate.py", f"{CODE}/artifacts.py", RL_RUN, SFT),
        outs=(RL,),
        params=("compute.trust_remote_code",),
        metrics=(CONSOLIDATION.format(stage="{method}_s{seed}"),),
        over_rl_runs=True,
    ),
    Stage(
        "generate",
        "sumrl generate --policy {policy}",
        deps=(f"{CODE}/evaluate/generate.py", *SHARED_CODE, PREPARED, "{policy_dir}"),
        outs=(GENERATIONS,),
        params=("seed", "generate", "prompt", "data.max_document_tokens", *RUNTIME),
        extra={"policies": tuple(FIXED_POLICIES)},
    ),
    Stage(
        "generate_rl",
        "sumrl generate --policy {method}_s{seed}",
        deps=(f"{CODE}/evaluate/generate.py", *SHARED_CODE, PREPARED, RL),
        outs=(GENERATIONS.format(policy="{method}_s{seed}"),),
        params=("seed", "generate", "prompt", "data.max_document_tokens", *RUNTIME),
        over_rl_runs=True,
    ),
    Stage(
        "evaluate",
        "sumrl evaluate --policy {policy}",
        deps=(f"{CODE}/evaluate/metrics.py", f"{CODE}/rl/advantages.py", *SHARED_CODE, GENERATIONS, REWARD, SFT,
              "{policy_dir}"),
        outs=(EVAL,),
        params=("evaluate", "prompt", "data.max_document_tokens", *RUNTIME),
        extra={"policies": tuple(FIXED_POLICIES)},
    ),
    Stage(
        "evaluate_rl",
        "sumrl evaluate --policy {method}_s{seed}",
        deps=(
            f"{CODE}/evaluate/metrics.py",
            f"{CODE}/rl/advantages.py",
            *SHARED_CODE,
            GENERATIONS.format(policy="{method}_s{seed}"),
            REWARD,
            SFT,
            RL,
        ),
        outs=(EVAL.format(policy="{method}_s{seed}"),),
        params=("evaluate", "prompt", "data.max_document_tokens", *RUNTIME),
        over_rl_runs=True,
    ),
    Stage(
        # Always in the DAG: disabled (the default) it writes {"enabled": false} in a second, so turning it on is
        # a params change (`dvc exp run -S judge.enabled=true`). Its reply cache (.cache/judge/) is not an output:
        # both front ends delete outputs before a rerun, and the cache is what makes a rerun cost nothing.
        "judge",
        "sumrl judge",
        deps=(f"{CODE}/evaluate/judge", f"{CODE}/evaluate/metrics.py", *SHARED_CODE, "reports/generations", BASE),
        outs=(),
        params=("seed", "judge", *RUNTIME),
        metrics=(JUDGE,),
    ),
    Stage(
        "report",
        "sumrl report",
        deps=(f"{CODE}/report", f"{CODE}/evaluate/metrics.py", "reports/eval", "reports/generations", CURVES,
              REWARD_EVAL, "reports/consolidate", PAIRS, JUDGE),
        outs=("reports/report.md", "reports/index.html", "reports/cards"),
        params=("report", "rl.methods", "rl.seeds"),
        metrics=("reports/metrics.json",),
        plots=("reports/plots",),
    ),
)


@dataclass(frozen=True)
class StageInstance:
    """One concrete job: what Snakemake schedules and DVC names `stage@item`."""

    name: str
    cmd: str
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    params: tuple[str, ...]
    metrics: tuple[str, ...]
    plots: tuple[str, ...]


def expand(params: dict) -> list[StageInstance]:
    """The concrete jobs for these params, in DAG order."""
    jobs = []
    rl = params["rl"]
    for stage in STAGES:
        if stage.over_rl_runs:
            items = [
                (f"{stage.name}@{m}-{s}", {"method": m, "seed": s}) for m, s in product(rl["methods"], rl["seeds"])
            ]
        elif "policies" in stage.extra:
            items = [
                (f"{stage.name}@{p}", {"policy": p, "policy_dir": policy_dir(p)}) for p in stage.extra["policies"]
            ]
        elif "trained" in stage.extra:
            items = [(f"{stage.name}@{t}", {"stage": t}) for t in stage.extra["trained"]]
        else:
            items = [(stage.name, {})]
        for name, values in items:
            fill = partial(_fill, values=values)
            jobs.append(
                StageInstance(
                    name=name,
                    cmd=fill(stage.cmd),
                    deps=tuple(dict.fromkeys(fill(d) for d in stage.deps)),
                    outs=tuple(fill(o) for o in stage.outs),
                    params=tuple(dict.fromkeys(fill(k) for k in stage.params)),
                    metrics=tuple(fill(m) for m in stage.metrics),
                    plots=tuple(fill(p) for p in stage.plots),
                )
            )
    return jobs


def result_params(stage: str, params: dict, **fields) -> dict:
    """The values of the params keys that decide a job's result (`fields` fill a templated stage's keys, e.g.
    method="ppo"): what its resume fingerprint hashes, so that a checkpoint outlives every other change."""
    (table_stage,) = [st for st in STAGES if st.name == stage]
    return select(params, [key.format(**fields) for key in table_stage.params])


def _fill(text: str, values: dict) -> str:
    """A templated field of the table (`models/rl/{method}_s{seed}`) for one job."""
    return text.format(**values) if values else text


def _dvc_template(text: str) -> str:
    return (
        text.replace("{method}", "${item.method}")
        .replace("{seed}", "${item.seed}")
        .replace("{policy_dir}", "${item.dir}")
        .replace("{policy}", "${item.name}")
        .replace("{stage}", "${item}")
    )


# What `dvc plots show` (and `dvc plots diff A B`) draws with no flags: the report's figures, and the SFT and RM
# training curves (each RL run's curve is its stage's plot).
TOP_PLOTS = [
    "reports/plots/reward_vs_kl.png",
    "reports/plots/length_hist.png",
    {"SFT training loss": {"x": "step", "y": {f"{CURVES}/sft.csv": "loss"}}},
    {"Reward model training accuracy": {"x": "step", "y": {f"{CURVES}/reward.csv": "accuracy"}}},
]


# The DVC model registry (`dvc artifacts get`, DVC Studio): the consolidated models, each a Hugging Face folder.
ARTIFACTS = {
    "sft": {"path": SFT, "type": "model", "desc": "the SFT policy (LoRA merged into the base model)",
            "labels": ["sumrl", "summarization", "sft"]},
    "reward-model": {"path": REWARD, "type": "model",
                     "desc": "the reward model (sequence classification; kind in sumrl_reward.json)",
                     "labels": ["sumrl", "reward-model"]},
    "rl-policies": {"path": "models/rl", "type": "model",
                    "desc": "every RL policy, one folder per <method>_s<seed> (merged into the SFT weights)",
                    "labels": ["sumrl", "summarization", "rlhf"]},
}


def dvc_yaml() -> str:
    """The text of dvc.yaml: the same commands, deps, outs and params as the Snakemake rules."""
    stages = {}
    for stage in STAGES:
        entry: dict = {}
        wrapper: dict = {}
        if stage.over_rl_runs:
            entry["matrix"] = {"method": "${rl.methods}", "seed": "${rl.seeds}"}
        elif "policies" in stage.extra:
            wrapper["foreach"] = {p: {"name": p, "dir": policy_dir(p)} for p in stage.extra["policies"]}
        elif "trained" in stage.extra:
            wrapper["foreach"] = list(stage.extra["trained"])
        entry["cmd"] = _dvc_template(stage.cmd)
        entry["deps"] = [_dvc_template(d) for d in stage.deps]
        entry["params"] = [_dvc_template(k) for k in stage.params]
        # Metrics and plots are cached by DVC like every output (not `cache: false`): /reports/ is git-ignored,
        # so DVC is what carries them to a clone that pulls, which is then up to date.
        outs = [_dvc_template(o) for o in stage.outs]
        outs += [_dvc_template(p) for p in stage.plots if not p.endswith(".csv")]
        if outs:  # a stage whose only output is a metrics file (judge) has no `outs:` entry
            entry["outs"] = outs
        if stage.metrics:
            entry["metrics"] = [_dvc_template(m) for m in stage.metrics]
        csv_plots = [_dvc_template(p) for p in stage.plots if p.endswith(".csv")]
        if csv_plots:
            entry["plots"] = [{p: {"x": "step"}} for p in csv_plots]
        # DVC 3: `matrix` sits beside cmd/deps/outs, but a `foreach` body must go under `do`.
        stages[stage.name] = {**wrapper, "do": entry} if wrapper else entry
    header = "# Generated from src/sumrl/stages.py by `sumrl stages --write-dvc`; do not edit by hand.\n"
    return header + yaml.safe_dump({"stages": stages, "plots": TOP_PLOTS, "artifacts": ARTIFACTS}, sort_keys=False,
                                   width=120)
