"""The whole DAG with Snakemake on the tiny model, then: determinism, a DVC remote round trip into a fresh
clone, and what one changed rl param reruns.

Runs in a scratch folder holding the Snakefile, workflow/, a copy of src/ (the code inputs; a copy so
that edits in the checkout during the run do not change what the dry runs plan) and a params.yaml
with the tiny model and budgets of tests/conftest.py. About 5 minutes on 2 cores.
"""

from __future__ import annotations

import json

import pytest
import yaml

from sumrl import stages
from sumrl.params import load_params

from conftest import ROOT, TINY_OVERRIDES
from frontends import DVC, SNAKEMAKE, run, scratch_workflow, snakemake_job_name, snakemake_plan

pytestmark = pytest.mark.slow


def strings_in(tree) -> set[str]:
    """Every key and string value of a JSON document."""
    if isinstance(tree, dict):
        return set(tree) | {s for value in tree.values() for s in strings_in(value)}
    if isinstance(tree, list):
        return {s for value in tree for s in strings_in(value)}
    return {tree} if isinstance(tree, str) else set()


def planned(workdir) -> set[str]:
    return {
        snakemake_job_name(job["rule"], job["wildcards"])
        for job in snakemake_plan(workdir, forceall=False)
        if job["needrun"] and job["rule"] != "all"
    }


def ok(cmd: list[str], cwd) -> str:
    proc = run(cmd, cwd=cwd, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{(proc.stdout + proc.stderr)[-4000:]}"
    return proc.stdout + proc.stderr


def assert_dvc_remote_restores_a_fresh_clone(workdir, elsewhere) -> None:
    """DVC takes the outputs Snakemake wrote (`dvc commit`), pushes them to a local-folder remote, and a
    fresh git clone that pulls them has nothing left to reproduce, with the same metrics."""
    elsewhere.mkdir()  # outside the work tree: the remote and the clone
    git = ["git", "-c", "user.name=sumrl-test", "-c", "user.email=test@sumrl.invalid"]
    ok(["git", "init", "-q"], workdir)
    ok([DVC, "init", "-q"], workdir)
    ok([DVC, "commit", "-f", "-q"], workdir)  # hashes what is there; writes dvc.lock and .gitignore entries
    ok([DVC, "remote", "add", "-d", "store", str(elsewhere / "remote")], workdir)
    ok([DVC, "push", "-q"], workdir)
    ok(git + ["add", "-A"], workdir)
    ok(git + ["commit", "-q", "-m", "tiny run"], workdir)
    tracked = ok(["git", "ls-files"], workdir).split()
    taken = [f for f in tracked if f.startswith(("models/", "data/", "reports/")) and not f.endswith(".gitignore")]
    assert not taken, f"git took DVC's outputs: {taken[:5]}"

    clone = elsewhere / "clone"
    ok(["git", "clone", "-q", str(workdir), str(clone)], elsewhere)
    checked = ("reports/metrics.json", "models/sft/model.safetensors", "data/prepared/test.jsonl")
    # git carries only DVC's .gitignore files under models/ and reports/; the artifacts come from the remote.
    assert not any((clone / path).exists() for path in checked)
    ok([DVC, "pull", "-q"], clone)
    assert "Data and pipelines are up to date" in ok([DVC, "status"], clone)
    assert "Data and pipelines are up to date" in ok([DVC, "repro", "--dry"], clone)
    for path in checked:
        assert (clone / path).read_bytes() == (workdir / path).read_bytes(), path


def test_whole_dag_is_deterministic_and_an_rl_param_reruns_only_rl_and_downstream(tmp_path, tiny_model_dir):
    overrides = [f"model.base={tiny_model_dir}", *TINY_OVERRIDES]
    tiny_params = load_params(ROOT / "params.yaml", overrides=overrides)
    stubbed = scratch_workflow(tmp_path, params_text=yaml.safe_dump(tiny_params, sort_keys=False))
    assert not stubbed, f"stage code not written yet: {stubbed}"

    proc = run([SNAKEMAKE, "--profile", "workflow/profiles/local", "--cores", "2"], cwd=tmp_path, timeout=3600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]

    report = (tmp_path / "reports" / "report.md").read_text()
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    for policy in stages.policies(tiny_params):
        assert policy in report, f"{policy} missing from reports/report.md"
        assert policy in strings_in(metrics), f"{policy} missing from reports/metrics.json"

    assert planned(tmp_path) == set(), "a finished workflow plans jobs again"

    # Determinism: the whole DAG again from scratch, same params and seed -> byte-identical metrics.
    first = (tmp_path / "reports" / "metrics.json").read_bytes()
    proc = run([SNAKEMAKE, "--profile", "workflow/profiles/local", "--cores", "2", "--forceall"], cwd=tmp_path,
               timeout=3600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert (tmp_path / "reports" / "metrics.json").read_bytes() == first, "a rerun changed reports/metrics.json"

    assert_dvc_remote_restores_a_fresh_clone(tmp_path, tmp_path.parent / f"{tmp_path.name}-dvc")

    params = dict(tiny_params, rl={**tiny_params["rl"], "kl_coef": tiny_params["rl"]["kl_coef"] * 2})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # The judge reads every policy's generations, so it reruns too (disabled, in a second).
    expected = {job.name for job in stages.expand(params)
                if job.name.startswith(("rl@", "consolidate_rl@", "generate_rl@", "evaluate_rl@"))
                or job.name in ("judge", "report")}
    assert planned(tmp_path) == expected

    # Whatever a stage writes must be one of its declared outputs, or neither front end tracks it.
    declared = {o for job in stages.expand(params) for o in (*job.outs, *job.metrics, *job.plots)}
    bookkeeping = (".snakemake_timestamp", ".gitignore")  # Snakemake's and DVC's own files
    written = {str(f.relative_to(tmp_path)) for top in ("data", "models", "reports")
               for f in (tmp_path / top).rglob("*") if f.is_file() and f.name not in bookkeeping}
    undeclared = {f for f in written if not any(f == o or f.startswith(o + "/") for o in declared)}
    assert not undeclared, f"written by a stage but not in the stage table: {sorted(undeclared)}"
