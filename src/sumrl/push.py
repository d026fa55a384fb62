"""`sumrl push --policy P --repo-id ORG/NAME`: upload a consolidated policy with its model card to the Hugging
Face hub (opt-in; nothing else in sumrl touches the network).

What goes: every file of the policy's folder (models/sft, models/rl/<method>_s<seed>, ...) and its card from
the report stage (reports/cards/<policy>/README.md) as README.md. `--dry-run` lists exactly that and sends
nothing. The token comes only from the environment (HF_TOKEN), never from a params file or the command line.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from sumrl import stages
from sumrl.report.cards import card_path

TOKEN_ENV = "HF_TOKEN"


class PushError(RuntimeError):
    """The policy cannot be pushed: no consolidated folder, no card, or no token."""


def upload_plan(policy: str) -> list[tuple[Path, str]]:
    """(local file, path in the repo) for every file that would be sent, README.md first."""
    folder = Path(stages.policy_dir(policy))
    card = card_path(policy)
    if not folder.is_dir():
        raise PushError(f"{folder}: no consolidated model for policy '{policy}' (run the workflow first)")
    if not card.is_file():
        raise PushError(f"{card}: no model card for '{policy}' (the report stage writes it: `sumrl report`)")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "README.md")
    return [(card, "README.md"), *((p, str(p.relative_to(folder))) for p in files)]


def describe(plan: list[tuple[Path, str]], repo_id: str) -> str:
    total = sum(local.stat().st_size for local, _ in plan)
    lines = [f"would upload to https://huggingface.co/{repo_id} ({len(plan)} files, {total / 1e6:.1f} MB):"]
    lines += [f"  {remote}  <- {local} ({local.stat().st_size} bytes)" for local, remote in plan]
    return "\n".join(lines)


def push(policy: str, repo_id: str, private: bool = False, dry_run: bool = False) -> str:
    plan = upload_plan(policy)
    if dry_run:
        return describe(plan, repo_id)
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise PushError(f"{TOKEN_ENV} is not set: export a Hugging Face write token (or use --dry-run)")
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as staging:  # the folder as the repo will hold it, card included
        for local, remote in plan:
            target = Path(staging) / remote
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(local, target)
        api.upload_folder(repo_id=repo_id, folder_path=staging, commit_message=f"sumrl: {policy}")
    return f"pushed {policy} to https://huggingface.co/{repo_id} ({len(plan)} files)"
