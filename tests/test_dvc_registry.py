"""The DVC model registry: dvc.yaml's `artifacts:` name the consolidated models, and `dvc artifacts get` fetches a
registered version (a GTO tag, `sft@v0.1.0`) from a local repo. The stages run through the stand-in command
of the param-precision tests (tests/fake_stage.py): what is under test is the registry, not the training."""

from __future__ import annotations

import pytest

from sumrl.stages import ARTIFACTS, SFT
from test_param_precision import fake_sumrl, with_change  # noqa: F401  (the fixture)

from frontends import DVC, run, scratch_workflow

pytestmark = pytest.mark.slow


def git(cwd, *args):
    proc = run(["git", *args], cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_dvc_artifacts_get_fetches_a_registered_model(tmp_path, fake_sumrl):  # noqa: F811
    repo = tmp_path / "repo"
    scratch_workflow(repo)
    with_change(repo)
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "ci@sumrl")
    git(repo, "config", "user.name", "ci")
    assert run([DVC, "init", "-q"], cwd=repo).returncode == 0
    made = run([DVC, "repro", "consolidate@sft"], cwd=repo, PATH=fake_sumrl, timeout=300)
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "sft")
    git(repo, "tag", "-a", "sft@v0.1.0", "-m", "Registering artifact sft version v0.1.0")

    got = run([DVC, "artifacts", "get", str(repo), "sft", "-o", str(tmp_path / "got")], cwd=tmp_path)
    assert got.returncode == 0, got.stdout + got.stderr
    wanted = (repo / SFT / "written_by.txt").read_text()
    assert (tmp_path / "got" / "written_by.txt").read_text() == wanted
    assert ARTIFACTS["sft"]["path"] == SFT and ARTIFACTS["sft"]["type"] == "model"
