"""sumrl pairs: human pairs from real TL;DR comparisons and small bad files, generated pairs on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sumrl.artifacts import DataError, read_json, read_jsonl
from sumrl.data import pairs as pairs_stage
from sumrl.data import prepare as prep
from sumrl.data.pairs import GENERATED, HUMAN, human_pairs
from sumrl.data.sources import load_pair_rows

from test_data import TINY_TOKENIZER_LIMITS, assert_accounted, in_project, with_overrides


def pair_params(params: dict, path: Path, mode: str = "error") -> dict:
    return with_overrides(params, "pairs.source=jsonl", f"pairs.path={path}", f"data.on_bad_rows={mode}")


def test_tldr_comparisons_keep_their_split_and_count_conflicting_labels(tiny_params, tok, shared_data):
    params = pair_params(tiny_params, shared_data / "tldr_feedback_comparisons_small")
    splits, card = human_pairs(load_pair_rows(params), tok, params)
    assert {name: len(rows) for name, rows in splits.items()} == {"train": 841, "validation": 81}
    assert card["origin"] == HUMAN and card["dropped"] == 0
    assert card["conflicting_labels"] == {
        "count": 2, "ids": [["sff-vertex-0113", "sff-vertex-0707"], ["sff-vertex-0227", "sff-vertex-0583"]]}
    assert "opposite labels" in prep.render_card(card)
    row = splits["train"][0]
    assert list(row) == ["id", "document", "chosen", "rejected", "origin"] and row["origin"] == HUMAN
    assert_accounted(card)


def pair_line(i: int, document: str | None = None, chosen: str | None = None, rejected: str | None = None) -> str:
    return json.dumps({"id": f"p{i}", "prompt": document or f"Post {i} about things.",
                       "chosen": chosen or f"Good summary {i}.", "rejected": rejected or f"Bad summary {i}."})


def write_pairs(folder: Path, bad: str) -> Path:
    """pref_train.jsonl with `bad` at line 2; pref_validation.jsonl holds the posts of p100 and p101."""
    folder.mkdir()
    train = [pair_line(1), bad] + [pair_line(i) for i in range(2, 20)]
    (folder / "pref_train.jsonl").write_text("\n".join(train) + "\n")
    (folder / "pref_validation.jsonl").write_text(pair_line(100) + "\n" + pair_line(101) + "\n")
    return folder


BAD_PAIRS = {
    "duplicate_id": (pair_line(1, document="Another post."), "id"),
    "identical_pair": (pair_line(50, chosen="Same.", rejected="Same."), "rejected"),
    "leakage": (pair_line(51, document="Post 100 about things."), "prompt"),
    "missing_field": (json.dumps({"id": "p52", "prompt": "A post.", "chosen": "A summary."}), "rejected"),
}


@pytest.mark.parametrize("reason", sorted(BAD_PAIRS))
def test_bad_pair_is_an_error_or_a_counted_drop(reason, tiny_params, tok, tmp_path):
    line, field = BAD_PAIRS[reason]
    folder = write_pairs(tmp_path / "pairs", line)
    params = pair_params(tiny_params, folder, "error")
    with pytest.raises(DataError) as err:
        human_pairs(load_pair_rows(params), tok, params)
    assert f"pref_train.jsonl: line 2: field '{field}'" in str(err.value)
    params = pair_params(tiny_params, folder, "drop")
    _, card = human_pairs(load_pair_rows(params), tok, params)
    assert card["drops"][reason]["count"] == 1
    assert_accounted(card)


def test_duplicate_pairs_are_dropped_and_swapped_ones_kept(tiny_params, tok, tmp_path):
    swapped = json.dumps({"id": "p90", "prompt": "Post 1 about things.", "chosen": "Bad summary 1.",
                          "rejected": "Good summary 1."})
    folder = write_pairs(tmp_path / "pairs", swapped)
    with open(folder / "pref_train.jsonl", "a") as fh:
        fh.write(pair_line(1).replace('"p1"', '"p91"') + "\n")
    params = pair_params(tiny_params, folder)
    splits, card = human_pairs(load_pair_rows(params), tok, params)
    assert card["drops"]["duplicate_pair"]["ids"] == ["p91"]
    assert card["conflicting_labels"]["ids"] == [["p1", "p90"]]


def test_a_single_file_is_split_by_document(tiny_params, tok, tmp_path):
    path = tmp_path / "comparisons.jsonl"
    lines = [pair_line(i, document=f"Post {i % 10} about things.") for i in range(60)]
    path.write_text("\n".join(lines) + "\n")
    params = pair_params(tiny_params, path)
    splits, card = human_pairs(load_pair_rows(params), tok, params)
    train_docs = {r["document"] for r in splits["train"]}
    assert splits["validation"] and not train_docs & {r["document"] for r in splits["validation"]}
    assert card["source"]["split"] == "hash of the document"


def test_generated_pairs_on_the_tiny_model(tiny_params, tiny_model_dir, tmp_path, monkeypatch):
    # Short documents keep the prompts short (prefill cost) and leave 17 pref rows: one batch of samples.
    params = with_overrides(tiny_params, *TINY_TOKENIZER_LIMITS, "data.max_document_tokens=320")
    in_project(monkeypatch, tmp_path, tiny_model_dir)
    prep.run(params)
    pairs_stage.run(params)
    out = Path("data/pairs")
    card = read_json(out / "card.json")
    pref = {r["id"]: r for r in read_jsonl("data/prepared/pref.jsonl")}
    pairs = read_jsonl(out / "train.jsonl") + read_jsonl(out / "validation.jsonl")
    kinds = params["pairs"]["negatives"]
    assert kinds == ["matched_sample", "other_reference", "swapped_sentence"]  # the default mix
    assert card["origin"] == GENERATED and "NOT human preferences" in (out / "card.md").read_text()
    assert card["rows_read"] == {k: len(pref) for k in kinds} and len(pairs) + card["dropped"] == len(pref) * len(kinds)
    assert all(p["chosen"] == pref[p["id"].split(":")[0]]["summary"] and p["rejected"] != p["chosen"] for p in pairs)
    assert all(p["origin"] == GENERATED and p["rejected"].strip() and p["id"].endswith(p["negative"]) for p in pairs)
    assert card["rows"]["validation"] > 0
    # each kind's length and ending statistics are in the card, and each reference-made negative exists
    assert set(card["negatives"]) == set(kinds)
    assert card["negatives"]["other_reference"]["pairs"] == len(pref) - card["drops"].get(
        "other_reference: no_other_document", {"count": 0})["count"]
    assert card["negatives"]["other_reference"]["rejected_ends"] == 1.0
    assert "`other_reference`:" in (out / "card.md").read_text()
    # reference-made negatives come from documents of the same split
    for split in ("train", "validation"):
        rows = read_jsonl(out / f"{split}.jsonl")
        chosen = {p["chosen"] for p in rows}
        assert all(p["rejected"] in chosen for p in rows if p["negative"] == "other_reference")
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    pairs_stage.run(params)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first  # same seed, same samples
