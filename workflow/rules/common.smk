# Shared set-up for every rule: which params files are in force, validation, and small helpers.
#
# The rules run `sumrl <stage>` commands, and those commands read params.yaml themselves (plus the
# preset named by SUMRL_PRESET). So Snakemake's `config` and what the commands see must be the same
# files: params.yaml, and at most one preset merged over it, given either as
#     snakemake --configfile presets/X.yaml        (or: --configfile params.yaml presets/X.yaml)
# or as SUMRL_PRESET=presets/X.yaml in the environment. `--config KEY=VALUE` is refused: the
# commands would not see it. Put the change in a preset file instead.

import os
import shutil
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from sumrl.params import (
    ParamsError,
    check_environment,
    deep_merge,
    read_yaml,
    select,
    validate_params,
)
from sumrl import stages
from sumrl.stages import policy_dir

PARAMS_FILE = "params.yaml"


def _relative(path):
    path = Path(path).absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _preset_files():
    """The config files given besides params.yaml (command line first, else SUMRL_PRESET)."""
    params_file = Path(PARAMS_FILE).resolve()
    given = [
        Path(f)
        for f in workflow.config_settings.configfiles
        if Path(f).resolve() != params_file
    ]
    from_env = os.environ.get("SUMRL_PRESET")
    if from_env and given and Path(from_env).resolve() != given[0].resolve():
        raise WorkflowError(
            f"SUMRL_PRESET={from_env} but --configfile names {_relative(given[0])}; "
            "give the preset one way only"
        )
    if from_env and not given:
        given = [Path(from_env)]
    return given


def _load_config():
    """Merge the preset into `config` (if it came from the environment) and validate it."""
    if workflow.config_settings.config:
        keys = ", ".join(sorted(workflow.config_settings.config))
        raise WorkflowError(
            f"--config {keys}: the sumrl commands read params.yaml and SUMRL_PRESET, not "
            "Snakemake's --config; put the change in a preset (--configfile presets/X.yaml)"
        )
    presets = _preset_files()
    if len(presets) > 1:
        names = ", ".join(_relative(p) for p in presets)
        raise WorkflowError(f"at most one preset over params.yaml, got: {names}")
    source = PARAMS_FILE
    try:
        if presets:
            preset = presets[0]
            source += f" + {_relative(preset)}"
            # Snakemake merged a --configfile already; a preset from SUMRL_PRESET is merged here.
            config.update(deep_merge(config, read_yaml(preset)))
            os.environ.update(SUMRL_PRESET=str(preset.absolute()))
        else:
            os.environ.pop("SUMRL_PRESET", None)
        # Schema and cross-key rules now, so that bad params fail before any job is planned.
        # Files the params point at are checked when a real run starts (onstart in the Snakefile):
        # a dry run of a preset whose data the user has not supplied yet still plans the DAG.
        validate_params(config, source=source, check_files=False)
    except ParamsError as exc:
        raise WorkflowError(f"sumrl: invalid params: {exc}") from None
    return source


PARAMS_SOURCE = _load_config()


def check_files():
    """The file and environment checks of `sumrl validate`; called when a real run starts, before
    any job runs (an unset judge URL fails now, not after hours of training)."""
    try:
        validate_params(config, source=PARAMS_SOURCE, check_files=True)
        check_environment(config)
    except ParamsError as exc:
        raise WorkflowError(f"sumrl: invalid params: {exc}") from None


# The `sumrl` commands come from PATH, else from the environment that runs Snakemake (.venv/bin/snakemake
# run without activating .venv).
if shutil.which("sumrl") is None:
    os.environ.update(
        PATH=os.pathsep.join(
            [str(Path(sys.executable).parent), os.environ.get("PATH", "")]
        )
    )

THREADS = config["compute"]["threads"]
# One GPU per model-running job unless the params pin the CPU (`gpu` is the resource that the
# slurm executor plugin turns into --gpus; locally it is not limited unless --resources gpu=N).
GPU = 0 if config["compute"]["device"] == "cpu" else 1
# The judge runs a model here only with the hf backend; an HTTP endpoint needs no GPU of ours.
JUDGE = config["judge"]
JUDGE_GPU = GPU if JUDGE["enabled"] and JUDGE["backend"] == "hf" else 0


wildcard_constraints:
    method="|".join(stages.RL_METHODS),
    seed=r"\d+",
    policy="base|sft",
    stage="sft|reward",


def code(path):
    """A code input of the stage table: a file, or every file of a package folder.

    Snakemake compares file times, and a folder's own time does not change when a file in it is
    edited, so a folder is expanded to its files (bytecode caches left out). A missing path stays
    as it is, so that Snakemake reports it as a missing input.
    """
    p = Path(path)
    if not p.is_dir():
        return [path]
    return sorted(
        str(f)
        for f in p.rglob("*")
        if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc"
    )


TABLE = {stage.name: stage for stage in stages.STAGES}
JOBS = stages.expand(config)
JOB_OUTPUTS = {path for job in JOBS for path in (*job.outs, *job.metrics, *job.plots)}


def table_inputs(stage):
    """The stage table's deps of `stage` as Snakemake inputs.

    Code folders are expanded to their files (code()); `{policy_dir}` is the policy's model folder; a
    folder that other jobs write into (reports/eval, for the report) is expanded to those jobs' outputs,
    because Snakemake connects jobs through files; everything else (templated paths included) is as is.
    """
    out = []
    for dep in TABLE[stage].deps:
        if dep.startswith("src/"):
            out += code(dep)
        elif dep == "{policy_dir}":
            out.append(policy_model)
        elif "{" in dep or dep in JOB_OUTPUTS:
            out.append(dep)
        else:
            inside = sorted(p for p in JOB_OUTPUTS if p.startswith(dep + "/"))
            out += inside or [dep]
    return out


def table_params(stage):
    """The stage table's params keys of `stage` as Snakemake params, so that a change to one of them, and only
    to one of them, reruns the rule: `data.max_document_tokens` -> data_max_document_tokens; a templated key
    (`rl.{method}`) is read per job from its wildcards (rl_method)."""
    out = {}
    for key in TABLE[stage].params:
        name = key.replace(".", "_").replace("{", "").replace("}", "")
        if "{" in key:
            out[name] = lambda wildcards, key=key: next(
                iter(select(config, [key.format(**wildcards)]).values())
            )
        else:
            out[name] = select(config, [key])[key]
    return out


def mem_mb(base):
    """Memory in MB for a job: `base`, doubled on each retry (--retries)."""
    return lambda wildcards, attempt: base * 2 ** (attempt - 1)


def policy_model(wildcards):
    return policy_dir(wildcards.policy)
