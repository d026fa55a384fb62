"""Helpers for the front-end tests: a scratch copy of the workflow, and what Snakemake and DVC plan.

The plans are read in a subprocess (`python tests/frontends.py snakemake-plan DIR [CONFIGFILE...]`,
`... dvc-stages DIR`), because both tools change the working directory and set up global logging.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")
DVC = str(BIN / "dvc")
CODE_PREFIX = "src/"


def env(**extra: str) -> dict:
    """The environment the tools run in: the venv first on PATH, every cache in one place, offline."""
    out = dict(os.environ)
    cache = ROOT / ".cache"
    out.update(
        PATH=os.pathsep.join([str(BIN), out.get("PATH", "")]),
        XDG_CACHE_HOME=str(cache),
        DVC_SITE_CACHE_DIR=str(cache / "dvc-site"),
        DVC_NO_ANALYTICS="1",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONDONTWRITEBYTECODE="1",
    )
    out.pop("SUMRL_PRESET", None)
    out.update(extra)
    return out


def run(cmd: list[str], cwd: Path, timeout: int = 300, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=cwd, env=env(**extra_env), capture_output=True, text=True, timeout=timeout, check=False
    )


def code_deps() -> list[str]:
    from sumrl.stages import STAGES

    return sorted({d for st in STAGES for d in st.deps if d.startswith(CODE_PREFIX)})


def scratch_workflow(dest: Path, params_text: str | None = None, link_src: bool = False) -> list[str]:
    """Copy the Snakemake and DVC front ends (and presets) into `dest`; return stubbed code paths.

    With link_src, src/ is a symlink to the repo's (for real runs). Otherwise src/ is a copy, and a
    code input of the stage table that does not exist yet is created empty, so that a dry run can
    plan the DAG while stages are still being written (test_code_deps_exist checks the real tree).
    """
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "Snakefile", dest / "Snakefile")
    shutil.copytree(ROOT / "workflow", dest / "workflow", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "presets", dest / "presets")
    shutil.copy2(ROOT / "dvc.yaml", dest / "dvc.yaml")
    if params_text is None:
        params_text = (ROOT / "params.yaml").read_text()
    (dest / "params.yaml").write_text(params_text)
    if link_src:
        (dest / "src").symlink_to(ROOT / "src", target_is_directory=True)
        return []
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    stubbed = []
    for dep in code_deps():
        path = dest / dep
        if path.exists():
            continue
        if path.suffix == ".py":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        else:
            path.mkdir(parents=True, exist_ok=True)
            (path / "__init__.py").touch()
        stubbed.append(dep)
    return stubbed


def snakemake_plan(workdir: Path, configfiles: tuple[str, ...] = (), forceall: bool = True) -> list[dict]:
    """The jobs Snakemake plans, read with its Python API in a subprocess."""
    flag = "--forceall" if forceall else "--no-forceall"
    proc = run([sys.executable, __file__, "snakemake-plan", str(workdir), flag, *configfiles], cwd=workdir)
    if proc.returncode:
        raise AssertionError(f"snakemake plan failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout)


def dvc_stages(workdir: Path) -> list[dict]:
    """dvc.yaml as DVC resolves it against params.yaml in `workdir` (a `dvc init --no-scm` repo)."""
    if not (workdir / ".dvc").is_dir():
        proc = run([DVC, "init", "--no-scm", "-q"], cwd=workdir)
        assert proc.returncode == 0, proc.stderr
    proc = run([sys.executable, __file__, "dvc-stages", str(workdir)], cwd=workdir)
    if proc.returncode:
        raise AssertionError(f"dvc failed to resolve dvc.yaml:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout)


def job_stats(output: str) -> Counter:
    """The `Job stats` table of a Snakemake dry run: rule -> count (without `all`)."""
    assert "Job stats:" in output, output
    table = output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    counts: Counter = Counter()
    for line in table.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("total", "all"):
            counts[parts[0]] = int(parts[1])
    return counts


def stage_counts(params: dict) -> Counter:
    """Jobs per stage (= per Snakemake rule) that the table expands to for these params."""
    from sumrl.stages import expand

    return Counter(job.name.split("@")[0] for job in expand(params))


def snakemake_job_name(rule: str, wildcards: dict) -> str:
    """Snakemake rule + wildcards -> the stage-table / DVC name (`rl@ppo-0`, `generate@sft`)."""
    if "method" in wildcards:
        return f"{rule}@{wildcards['method']}-{wildcards['seed']}"
    if "policy" in wildcards:
        return f"{rule}@{wildcards['policy']}"
    if "stage" in wildcards:
        return f"{rule}@{wildcards['stage']}"
    assert not wildcards, (rule, wildcards)
    return rule


def _snakemake_plan_main(workdir: str, flag: str, *configfiles: str) -> None:
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        OutputSettings,
        Quietness,
        ResourceSettings,
    )

    forceall = flag == "--forceall"
    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        wf_api = api.workflow(
            resource_settings=ResourceSettings(cores=64),
            config_settings=ConfigSettings(configfiles=[Path(c) for c in configfiles]),
            snakefile=Path(workdir) / "Snakefile",
            workdir=Path(workdir),
        )
        wf_api.dag(dag_settings=DAGSettings(forceall=forceall))
        workflow = wf_api._workflow
        workflow._prepare_dag(forceall=forceall, ignore_incomplete=True, lock_warn_only=True, nolock=True)
        workflow._build_dag()
        needrun = set(workflow.dag.needrun_jobs())
        jobs = [
            dict(
                rule=job.rule.name,
                wildcards=dict(job.wildcards_dict),
                input=list(job.input),
                output=list(job.output),
                log=list(job.log),
                params=dict(job.params.items()),
                shellcmd=job.shellcmd,
                threads=job.threads,
                resources={k: v for k, v in job.resources.items() if not k.startswith("_")},
                needrun=job in needrun,
            )
            for job in workflow.dag.jobs
        ]
    print(json.dumps(jobs, default=str))


def _dvc_stages_main(workdir: str) -> None:
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    out = []
    with Repo(workdir) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        for stage in repo.index.stages:
            params = [key for d in stage.deps if isinstance(d, ParamsDependency) for key in d.params]
            files = [d.def_path for d in stage.deps if isinstance(d, ParamsDependency)]
            out.append(
                dict(
                    name=stage.name,
                    cmd=stage.cmd,
                    deps=[d.def_path for d in stage.deps if not isinstance(d, ParamsDependency)],
                    params=params,
                    params_files=files,
                    outs=[o.def_path for o in stage.outs],
                    upstream=sorted(s.name for s in graph.successors(stage)),
                )
            )
    print(json.dumps(out))


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    {"snakemake-plan": _snakemake_plan_main, "dvc-stages": _dvc_stages_main}[command](*rest)
