"""The Snakemake rules and dvc.yaml must run the stage table (src/sumrl/stages.py), job for job.

For the default params and for a 2 methods x 2 seeds variant, the job names, commands, inputs,
outputs and params keys of `stages.expand(params)` are compared with what Snakemake plans (its
Python API on a scratch copy of the workflow) and with dvc.yaml as DVC resolves it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from sumrl import stages
from sumrl.params import load_params, select

from frontends import (
    ROOT,
    SNAKEMAKE,
    code_deps,
    dvc_stages,
    job_stats,
    run,
    scratch_workflow,
    snakemake_job_name,
    snakemake_plan,
    stage_counts,
)

VARIANTS = {
    "default": [],
    "2methods-2seeds": ["rl.methods=[rloo, ppo]", "rl.seeds=[0, 1]"],
}
TRAINING_RULES = {"sft", "reward", "rl"}
LOG_REDIRECT = re.compile(r"^(?P<cmd>.+?) > (?P<log>logs/\S+\.log) 2>&1$")


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request, tmp_path_factory):
    """(scratch workflow folder, params) for one params variant; params.yaml there is the variant."""
    params = load_params(ROOT / "params.yaml", overrides=VARIANTS[request.param])
    workdir = tmp_path_factory.mktemp(f"frontends-{request.param}")
    text = (ROOT / "params.yaml").read_text() if not VARIANTS[request.param] else yaml.safe_dump(params)
    scratch_workflow(workdir, params_text=text)
    return workdir, params


def outputs(job: stages.StageInstance) -> set[str]:
    return {*job.outs, *job.metrics, *job.plots}


def snakemake_params(job: stages.StageInstance, params: dict) -> dict:
    """The rule params a job must have: one per table key, named after the key as the stage writes it
    (`rl.{method}` -> rl_method), holding the value of the key as this job fills it (`rl.ppo`)."""
    (stage,) = [st for st in stages.STAGES if st.name == job.name.split("@")[0]]
    names = [key.replace(".", "_").replace("{", "").replace("}", "") for key in stage.params]
    return dict(zip(names, select(params, job.params).values()))


def folder_contents(dep: str, workdir: Path, table: dict[str, stages.StageInstance]) -> list[str]:
    """What a folder dependency holds: its files (code), or the outputs other jobs write into it."""
    if dep.startswith("src/"):
        return sorted(
            str(p.relative_to(workdir)) for p in (workdir / dep).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        )
    return sorted(o for job in table.values() for o in outputs(job) if o.startswith(dep + "/"))


def collapse_inputs(inputs: list[str], job: stages.StageInstance, workdir: Path, table: dict) -> set[str]:
    """Snakemake lists the files of a folder dependency; map them back to the folder, checking that
    they are exactly the files the folder holds (its code, or the other jobs' outputs in it)."""
    by_dep: dict[str, list[str]] = {}
    for path in dict.fromkeys(inputs):  # evaluate@sft names models/sft twice, as DVC does
        owners = [d for d in job.deps if path == d or path.startswith(d + "/")]
        assert len(owners) == 1, f"{job.name}: Snakemake input {path} matches table deps {owners}"
        by_dep.setdefault(owners[0], []).append(path)
    for dep, paths in by_dep.items():
        if paths != [dep]:
            assert sorted(paths) == folder_contents(dep, workdir, table), (
                f"{job.name}: Snakemake inputs under {dep} are not what that folder holds"
            )
    return set(by_dep)


def test_dvc_yaml_is_generated_from_the_table():
    assert (ROOT / "dvc.yaml").read_text() == stages.dvc_yaml(), (
        "dvc.yaml differs from the stage table: run `sumrl stages --write-dvc` (do not edit dvc.yaml)"
    )


def test_code_deps_exist():
    """Every code path in the table exists (the other tests plan on a copy where missing ones are stubbed)."""
    missing = [d for d in code_deps() if not (ROOT / d).exists()]
    assert not missing, f"code deps named in src/sumrl/stages.py that do not exist: {missing}"


def test_snakemake_matches_table(variant):
    workdir, params = variant
    table = {job.name: job for job in stages.expand(params)}
    planned = [j for j in snakemake_plan(workdir) if j["rule"] != "all"]
    by_name = {snakemake_job_name(j["rule"], j["wildcards"]): j for j in planned}

    assert len(by_name) == len(planned), "two Snakemake jobs map to one stage name"
    assert sorted(by_name) == sorted(table)
    gpu = 0 if params["compute"]["device"] == "cpu" else 1
    for name, job in table.items():
        sm = by_name[name]
        match = LOG_REDIRECT.match(sm["shellcmd"])
        assert match, f"{name}: shell command is not `<cmd> > logs/<x>.log 2>&1`: {sm['shellcmd']!r}"
        assert match["cmd"] == job.cmd, name
        assert sm["log"] == [match["log"]], name
        assert set(sm["output"]) == outputs(job), name
        assert collapse_inputs(sm["input"], job, workdir, table) == set(job.deps), name
        assert sm["params"] == snakemake_params(job, params), f"{name}: params differ from the table's {job.params}"
        assert sm["threads"] == params["compute"]["threads"], name
        assert {"mem_mb", "runtime"} <= set(sm["resources"]), name
        if sm["rule"] in TRAINING_RULES:
            assert sm["resources"]["gpu"] == gpu, name


def test_dvc_matches_table(variant):
    workdir, params = variant
    table = {job.name: job for job in stages.expand(params)}
    resolved = {s["name"]: s for s in dvc_stages(workdir)}

    assert sorted(resolved) == sorted(table)
    for name, job in table.items():
        st = resolved[name]
        assert st["cmd"] == job.cmd, name
        # `evaluate@sft` names models/sft twice (as the KL reference and as the policy): DVC keeps both.
        assert list(dict.fromkeys(st["deps"])) == list(job.deps), name
        assert set(st["outs"]) == outputs(job), name
        assert st["params"] == list(job.params), name
        assert set(st["params_files"]) == {"params.yaml"}, name
    # `report` depends on folders that hold other stages' outputs: DVC must see those stages upstream.
    upstream = set(resolved["report"]["upstream"])
    feeding = {n for n, job in table.items() for d in table["report"].deps
               if any(o == d or o.startswith(d + "/") for o in outputs(job))}
    assert feeding <= upstream
    assert {n for n in table if n.startswith(("evaluate", "generate", "rl@", "consolidate@"))} <= feeding


def test_snakemake_lint_and_format(tmp_path):
    scratch_workflow(tmp_path)
    lint = run([SNAKEMAKE, "--lint"], cwd=tmp_path)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "Lints for" not in lint.stdout + lint.stderr, lint.stdout + lint.stderr
    assert "Congratulations" in lint.stdout + lint.stderr
    fmt = run([str(Path(SNAKEMAKE).with_name("snakefmt")), "--check", "Snakefile", "workflow/rules"], cwd=ROOT)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


@pytest.mark.parametrize("profile", ["local", "slurm"])
def test_profile_dry_run(tmp_path, profile):
    """Both profiles plan the whole DAG here (the slurm one needs no SLURM for a dry run)."""
    scratch_workflow(tmp_path)
    proc = run([SNAKEMAKE, "-n", "--profile", f"workflow/profiles/{profile}"], cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "This was a dry-run" in out
    assert job_stats(out) == stage_counts(load_params(ROOT / "params.yaml"))
    if profile == "slurm":
        rl_block = out.split("rule rl:", 1)[1].split("Shell command", 1)[0]
        assert "slurm_partition=gpu" in rl_block and "gpu=1" in rl_block, rl_block


def test_resume_fingerprints_hash_the_stage_table_keys():
    """A training stage's checkpoint is kept exactly when DVC and Snakemake would not rerun the stage."""
    from sumrl.rl.loop import _fingerprint

    base = load_params(ROOT / "params.yaml")
    same = load_params(ROOT / "params.yaml", overrides=["rl.ppo.gamma=0.9", "rl.seeds=[0, 1]", "compute.threads=1",
                                                        "compute.launcher=accelerate", "sft.epochs=3"])
    other = load_params(ROOT / "params.yaml", overrides=["rl.rloo.k=4"])
    shared = load_params(ROOT / "params.yaml", overrides=["rl.kl_coef=0.1"])
    assert _fingerprint(same, "rloo", 0) == _fingerprint(base, "rloo", 0)
    assert _fingerprint(other, "rloo", 0) != _fingerprint(base, "rloo", 0)
    assert _fingerprint(shared, "rloo", 0) != _fingerprint(base, "rloo", 0)
    assert _fingerprint(base, "rloo", 1) != _fingerprint(base, "rloo", 0)
    assert stages.result_params("sft", same) != stages.result_params("sft", base)
    assert stages.result_params("reward", same) == stages.result_params("reward", base)


def test_one_list_of_rl_methods():
    """The stage table (lowest layer), the schema and the method registry (rl/methods.py, the online methods; dpo
    is offline, train/dpo.py) name the same methods."""
    from sumrl.params import load_schema
    from sumrl.rl.methods import METHODS

    enum = load_schema()["properties"]["rl"]["properties"]["methods"]["items"]["enum"]
    assert (*METHODS, "dpo") == stages.RL_METHODS == tuple(enum)
