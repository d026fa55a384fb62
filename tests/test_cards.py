"""Model cards (report stage) and `sumrl push --dry-run`, on the report tests' synthetic workspace."""

from __future__ import annotations

import pytest
from huggingface_hub import ModelCard

from sumrl import stages
from sumrl.artifacts import read_json
from sumrl.push import PushError, push
from sumrl.report import run as report_run
from sumrl.report.cards import CARD_METRICS, card_path
from test_report import workspace  # noqa: F401  (the fixture)


def card_figures(text: str) -> dict[str, float]:
    """label -> the leading number of its cell, from the card's evaluation table."""
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 2 and cells[0] in CARD_METRICS.values() and cells[1] != "n/a":
            out[cells[0]] = float(cells[1].split()[0])
    return out


def test_every_policy_has_a_card_that_the_hub_library_parses_with_the_metrics_json_figures(workspace):  # noqa: F811
    report_run(workspace)
    metrics = read_json("reports/metrics.json")
    for policy in stages.policies(workspace):
        card = ModelCard.load(card_path(policy))
        assert card.data.pipeline_tag == "summarization" and card.data.library_name == "transformers"
        assert "sumrl" in card.data.tags
        method = policy.rsplit("_s", 1)[0]
        if policy not in ("base", "sft"):
            assert {"rlhf", method} <= set(card.data.tags)
        figures = card_figures(card.text)
        expected = {label: metrics[policy][key] for key, label in CARD_METRICS.items()
                    if metrics[policy].get(key) is not None}
        assert figures.keys() == expected.keys(), policy
        for label, value in expected.items():
            assert figures[label] == pytest.approx(value, rel=1e-3, abs=1e-4), (policy, label)
        # the pairs were generated here: the card says so
        assert "generated" in card.text and "not on human preference judgements" in card.text


def test_push_dry_run_lists_the_card_and_every_model_file(workspace, tmp_path):  # noqa: F811
    report_run(workspace)
    folder = tmp_path / stages.SFT
    (folder / "sub").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x" * 10)
    (folder / "sub" / "config.json").write_text("{}")
    listing = push("sft", "org/sumrl-sft", dry_run=True)
    lines = listing.splitlines()
    assert lines[0].startswith("would upload to https://huggingface.co/org/sumrl-sft (3 files")
    assert [line.split()[0] for line in lines[1:]] == ["README.md", "model.safetensors", "sub/config.json"]


def test_push_refuses_without_a_model_a_card_or_a_token(workspace, tmp_path, monkeypatch):  # noqa: F811
    with pytest.raises(PushError, match="models/sft: no consolidated model"):
        push("sft", "org/x", dry_run=True)
    (tmp_path / stages.SFT).mkdir(parents=True)
    with pytest.raises(PushError, match="reports/cards/sft/README.md: no model card"):
        push("sft", "org/x", dry_run=True)
    report_run(workspace)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(PushError, match="HF_TOKEN is not set"):
        push("sft", "org/x")
