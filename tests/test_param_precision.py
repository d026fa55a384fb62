"""A params change reruns exactly the jobs whose result depends on it, in both front ends (issue: params that
DVC and Snakemake can be precise about).

The whole default DAG is run once per front end with the stage commands replaced by tests/fake_stage.py,
which writes each job's outputs from the stage table and computes nothing: the real DAG takes most of an hour
on this machine, and what is under test is which jobs DVC and Snakemake decide to rerun, which follows from
the deps, outs and params they were given, not from what the commands compute. Then, one at a time:
- another value of one method's knob (rl.ppo.gamma) reruns that method's jobs and what reads their outputs;
- a second seed adds that seed's jobs and reruns only what gathers over all runs (judge, report);
- compute.threads, which changes speed only, reruns nothing.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from sumrl.params import deep_merge, parse_override, read_yaml
from sumrl.stages import expand

from frontends import BIN, DVC, ROOT, SNAKEMAKE, run, scratch_workflow, snakemake_job_name, snakemake_plan

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
CHANGES = {
    "one-method-knob": "rl.ppo.gamma=0.99",
    "new-seed": "rl.seeds=[0, 1]",
    "threads": "compute.threads=1",
}


def expected_reruns(change: str) -> set[str]:
    params = deep_merge(read_yaml(ROOT / "params.yaml"), parse_override(CHANGES[change]))
    if change == "one-method-knob":
        return {"rl@ppo-0", "consolidate_rl@ppo-0", "generate_rl@ppo-0", "evaluate_rl@ppo-0", "judge", "report"}
    if change == "new-seed":
        return {j.name for j in expand(params) if j.name.endswith("-1")} | {"judge", "report"}
    return set()


@pytest.fixture(scope="module")
def fake_sumrl(tmp_path_factory) -> str:
    """A folder holding a `sumrl` that runs tests/fake_stage.py: put first on PATH."""
    folder = tmp_path_factory.mktemp("fake-bin")
    script = folder / "sumrl"
    script.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(TESTS)!r})\n"
                      "from fake_stage import main\nmain(sys.argv[1:])\n")
    script.chmod(0o755)
    return os.pathsep.join([str(folder), str(BIN), os.environ.get("PATH", "")])


def with_change(workdir: Path, *changes: str) -> None:
    """params.yaml with these changes, each over the one before."""
    params = read_yaml(ROOT / "params.yaml")
    for change in changes:
        params = deep_merge(params, parse_override(CHANGES[change]))
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_snakemake_reruns_only_what_a_change_reaches(tmp_path, fake_sumrl):
    scratch_workflow(tmp_path)
    with_change(tmp_path)
    done = run([SNAKEMAKE, "--cores", "1"], cwd=tmp_path, timeout=600, PATH=fake_sumrl)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Snakemake's own report from the outputs marked report() (figures, curves, the report itself)
    made = run([SNAKEMAKE, "--report", "report.zip"], cwd=tmp_path, timeout=300, PATH=fake_sumrl)
    assert made.returncode == 0 and (tmp_path / "report.zip").stat().st_size > 0, made.stdout[-2000:] + made.stderr
    for change in CHANGES:
        with_change(tmp_path, change)
        planned = snakemake_plan(tmp_path, forceall=False)
        reruns = {snakemake_job_name(j["rule"], j["wildcards"]) for j in planned if j["needrun"] and j["rule"] != "all"}
        assert reruns == expected_reruns(change), change


def dvc_reruns(workdir: Path, path: str) -> set[str]:
    proc = run([DVC, "repro"], cwd=workdir, timeout=600, PATH=path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("Running stage '")}


def test_dvc_reruns_only_what_a_change_reaches(tmp_path, fake_sumrl):
    scratch_workflow(tmp_path)
    with_change(tmp_path)
    assert run([DVC, "init", "--no-scm", "-q"], cwd=tmp_path).returncode == 0
    assert len(dvc_reruns(tmp_path, fake_sumrl)) == len(expand(read_yaml(ROOT / "params.yaml")))
    # dvc.yaml's top-level plots: `dvc plots show` needs no flags
    shown = run([DVC, "plots", "show", "--json"], cwd=tmp_path, PATH=fake_sumrl)
    assert shown.returncode == 0, shown.stderr
    drawn = json.loads(shown.stdout)
    assert {"reports/plots/reward_vs_kl.png", "SFT training loss", "Reward model training accuracy"} <= set(
        drawn["data"]), sorted(drawn["data"])
    assert not drawn.get("errors"), drawn.get("errors")
    for done, change in enumerate(CHANGES):  # each change over the last: DVC has rerun what the last one reached
        with_change(tmp_path, *list(CHANGES)[: done + 1])
        status = run([DVC, "status", "--json"], cwd=tmp_path, PATH=fake_sumrl)
        changed = set(json.loads(status.stdout or "{}"))
        # `dvc status` names the stages whose own deps changed; `dvc repro` then follows the changed outputs.
        assert changed <= expected_reruns(change), change
        assert dvc_reruns(tmp_path, fake_sumrl) == expected_reruns(change), change
