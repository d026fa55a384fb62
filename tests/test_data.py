"""prepare-data on real data (ACLSum from its package, DialogSum from ../shared) and on small bad files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from sumrl.artifacts import DataError, read_json, read_jsonl
from sumrl.data import prepare as prep
from sumrl.data.prepare import normalize_whitespace, prepare
from sumrl.data.sources import load_rows, split_of
from sumrl.params import deep_merge, parse_override, validate_params

# The tiny tokenizer has 512 tokens, so ACLSum text is ~2.4x longer in tokens than with SmolLM2:
# every ACLSum summary is over the tiny params' 64-token limit. These limits keep most rows.
TINY_TOKENIZER_LIMITS = ["data.max_document_tokens=512", "data.max_summary_tokens=256"]


def with_overrides(params: dict, *overrides: str) -> dict:
    for text in overrides:
        params = deep_merge(params, parse_override(text))
    validate_params(params)
    return params


@pytest.fixture
def aclsum_params(tiny_params) -> dict:
    return with_overrides(tiny_params, *TINY_TOKENIZER_LIMITS)


def in_project(monkeypatch, tmp_path: Path, model_dir: Path) -> Path:
    """A working folder where stages find `models/base`, as in the repo."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "base").symlink_to(model_dir)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def assert_accounted(card: dict) -> None:
    assert sum(card["rows_read"].values()) == sum(card["rows"].values()) + card["dropped"]
    assert card["dropped"] == sum(d["count"] for d in card["drops"].values())


# --- ACLSum --------------------------------------------------------------------------------------


def test_aclsum_loads_100_50_100_rows_from_the_package(tiny_params):
    loaded = load_rows(tiny_params)
    assert loaded.read == {"train": 100, "validation": 50, "test": 100}
    assert len(loaded.rows) == 250 and not loaded.problems
    first = loaded.rows[0]
    assert set(first) == {"id", "document", "summary", "split"} and first["split"] == "train"
    assert first["summary"].startswith("A generally accessible NER system")  # challenge comes first
    assert str(loaded.origins[0]).endswith("aclsum/dataset/train.jsonl: line 1")


def test_aclsum_prepares_into_default_splits(aclsum_params, tok):
    splits, card = prepare(load_rows(aclsum_params), tok, aclsum_params)
    assert set(splits) == {"sft", "pref", "rl", "test"}
    assert len(splits["test"]) == aclsum_params["data"]["max_test"] == 6
    pool = sum(len(splits[s]) for s in ("sft", "pref", "rl"))
    # 0.4 / 0.4 / 0.2 of the kept train+validation rows, up to hashing noise
    assert abs(len(splits["sft"]) / pool - 0.4) < 0.12 and abs(len(splits["rl"]) / pool - 0.2) < 0.1
    ids = [r["id"] for rows in splits.values() for r in rows]
    docs = [r["document"] for rows in splits.values() for r in rows]
    assert len(ids) == len(set(ids)) and len(docs) == len(set(docs))
    assert all(set(r) == {"id", "document", "summary"} for rows in splits.values() for r in rows)
    assert card["rows_read"] == {"train": 100, "validation": 50, "test": 100}
    assert card["drops"]["over_max_test"]["count"] > 0
    assert card["tokens"]["sft"]["document"]["max"] <= 512
    assert card["tokens"]["sft"]["summary"]["max"] <= 256
    assert_accounted(card)


def test_prepare_stage_writes_identical_bytes_on_rerun(aclsum_params, tiny_model_dir, tmp_path, monkeypatch):
    in_project(monkeypatch, tmp_path, tiny_model_dir)
    out = tmp_path / "data" / "prepared"
    prep.run(aclsum_params)
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    prep.run(aclsum_params)
    assert sorted(first) == ["card.json", "card.md", "pref.jsonl", "rl.jsonl", "sft.jsonl", "test.jsonl"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary leftovers
    card = read_json(out / "card.json")
    assert {name: len(read_jsonl(out / f"{name}.jsonl")) for name in card["rows"]} == card["rows"]
    assert "## Dropped rows" in (out / "card.md").read_text()


# --- DialogSum (real files beside the repo) ------------------------------------------------------


@pytest.fixture
def dialogsum_params(tiny_params, shared_data) -> dict:
    return with_overrides(tiny_params, "data.source=jsonl", f"data.path={shared_data / 'dialogsum'}",
                          "data.fields.document=dialogue", "data.max_document_tokens=1024")


def test_dialogsum_validation_rows_that_repeat_test_dialogues_are_an_error(dialogsum_params, tok):
    # SOURCE.md reports no overlap by exact match; 6 validation dialogues equal test ones up to trailing spaces.
    with pytest.raises(DataError) as err:
        prepare(load_rows(dialogsum_params), tok, dialogsum_params)
    msg = str(err.value)
    assert "sft_validation.jsonl: line 41: field 'dialogue': same document as test row 'test_63'" in msg
    assert "6 bad row(s)" in msg


def test_dialogsum_prepares_in_drop_mode(dialogsum_params, tok):
    params = with_overrides(dialogsum_params, "data.on_bad_rows=drop")
    loaded = load_rows(params)
    assert loaded.source["ignored_files"] == ["prompts_hiddentest.jsonl"]  # no summaries: not a split
    splits, card = prepare(loaded, tok, params)
    assert card["rows_read"] == {"train": 12460, "validation": 500, "test": 500}
    assert card["drops"]["leakage"]["ids"] == ["dev_40", "dev_87", "dev_288", "dev_433", "dev_434", "dev_479"]
    # the same dialogue, summarized twice, differing only in whitespace (595 within train)
    assert card["drops"]["duplicate_document"]["count"] == 630
    assert len(splits["test"]) == 6 and all(len(r["references"]) == 3 for r in splits["test"])
    assert all(r["document"].count("\n") > 0 for r in splits["sft"][:20])  # turns stay on their lines
    assert_accounted(card)


# --- bad input, one small file each --------------------------------------------------------------


def good_line(i: int) -> bytes:
    row = {"id": f"r{i}", "document": f"Document {i} reports   results on topic {i}.",
           "summary": f"Summary {i} of the topic."}
    return json.dumps(row).encode()


@dataclass
class Case:
    name: str
    bad: bytes                 # written as line 3 of train.jsonl
    reason: str
    field: str | None
    always_dropped: bool = False  # not a bad row: counted in both modes
    key: str = "bad"


CASES = [
    Case("malformed_json", b'{"id": "bad", "document": "text", "summary": ', "invalid_json", None,
         key="train.jsonl: line 3"),
    Case("missing_field", b'{"id": "bad", "document": "Some text here."}', "missing_field", "summary"),
    Case("empty_field", b'{"id": "bad", "document": "Some text here.", "summary": "  \\n "}', "empty_field", "summary"),
    Case("wrong_type", b'{"id": "bad", "document": "Some text here.", "summary": 42}', "wrong_type", "summary"),
    Case("invalid_utf8", b'{"id": "bad", "document": "caf\xe9 au lait", "summary": "A summary here."}', "invalid_utf8",
         "document", key="train.jsonl: line 3"),
    Case("duplicate_id", good_line(1), "duplicate_id", "id", key="r1"),
    Case("leakage", b'{"id": "bad", "document": "Held-out document number one.", "summary": "Its summary text."}',
         "leakage", "document"),
    Case("document_too_long",
         json.dumps({"id": "bad", "document": "word " * 600, "summary": "A summary here."}).encode(),
         "document_too_long", None, always_dropped=True),
    Case("duplicate_document", json.dumps({"id": "bad", "document": "Document 1 reports results on topic 1.",
                                           "summary": "Another summary."}).encode(),
         "duplicate_document", None, always_dropped=True),
]


def write_source(folder: Path, bad: bytes) -> Path:
    """train.jsonl with the bad line at line 3, and a good test.jsonl."""
    folder.mkdir()
    train = [good_line(i) for i in range(1, 3)] + [bad] + [good_line(i) for i in range(3, 25)]
    (folder / "train.jsonl").write_bytes(b"\n".join(train) + b"\n")
    test = [b'{"id": "t1", "document": "Held-out document number one.", "summary": "Its summary text."}',
            b'{"id": "t2", "document": "Held-out document number two.", "summary": "Its summary text."}']
    (folder / "test.jsonl").write_bytes(b"\n".join(test) + b"\n")
    return folder


def source_params(tiny_params: dict, folder: Path, mode: str) -> dict:
    return with_overrides(tiny_params, "data.source=jsonl", f"data.path={folder}", f"data.on_bad_rows={mode}")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_row_is_an_error_naming_file_line_and_field(case, tiny_params, tok, tmp_path):
    params = source_params(tiny_params, write_source(tmp_path / "src", case.bad), "error")
    if case.always_dropped:
        _, card = prepare(load_rows(params), tok, params)
        assert card["drops"][case.reason]["ids"] == [case.key]
        return  # not a bad row: dropped and counted under either setting
    with pytest.raises(DataError) as err:
        prepare(load_rows(params), tok, params)
    msg = str(err.value)
    assert "train.jsonl: line 3" in msg
    if case.field:
        assert f"field '{case.field}'" in msg


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_row_is_a_counted_drop(case, tiny_params, tok, tmp_path):
    params = source_params(tiny_params, write_source(tmp_path / "src", case.bad), "drop")
    splits, card = prepare(load_rows(params), tok, params)
    assert card["drops"][case.reason]["count"] == 1
    assert [Path(key).name for key in card["drops"][case.reason]["ids"]] == [case.key]  # a place: the file's name
    assert card["dropped"] == 1 and card["rows_read"] == {"train": 25, "validation": 0, "test": 2}
    assert_accounted(card)
    assert case.reason in prep.render_card(card)


@pytest.mark.parametrize("mode", ["error", "drop"])
def test_an_empty_split_is_an_error_in_both_modes(mode, tiny_params, tok, tmp_path):
    folder = write_source(tmp_path / "src", good_line(99))
    long_row = {"id": "t1", "document": "word " * 600, "summary": "A summary."}
    (folder / "test.jsonl").write_text(json.dumps(long_row) + "\n")
    params = source_params(tiny_params, folder, mode)
    with pytest.raises(DataError, match=r"split\(s\) test empty after filtering") as err:
        prepare(load_rows(params), tok, params)
    assert "test.jsonl (test)" in str(err.value) and "dropped: document_too_long 1" in str(err.value)


def test_a_source_without_a_test_split_says_so(tiny_params, tok, tmp_path):
    folder = write_source(tmp_path / "src", good_line(99))
    (folder / "test.jsonl").unlink()
    params = source_params(tiny_params, folder / "train.jsonl", "error")
    with pytest.raises(DataError, match=r"the source has no 'test' split \(data.test_split\).*set data.test_split"):
        prepare(load_rows(params), tok, params)


def test_test_split_names_the_held_out_source_split(tiny_params, tok, tmp_path):
    """data.test_split: validation holds out the source's validation rows; its test rows join the pool."""
    folder = write_source(tmp_path / "src", good_line(99))
    (folder / "validation.jsonl").write_bytes(
        b'{"id": "v1", "document": "A validation document, held out.", "summary": "Its own summary."}\n')
    params = with_overrides(source_params(tiny_params, folder, "error"), "data.test_split=validation",
                            "data.max_test=null")
    splits, _ = prepare(load_rows(params), tok, params)
    assert [r["id"] for r in splits["test"]] == ["v1"]
    pooled = {r["id"] for name in ("sft", "pref", "rl") for r in splits[name]}
    assert {"t1", "t2"} <= pooled  # the source's test rows are training material now


def test_prepare_is_deterministic_and_seed_dependent(tiny_params, tok, tmp_path):
    params = source_params(tiny_params, write_source(tmp_path / "src", good_line(99)), "error")
    first, card = prepare(load_rows(params), tok, params)
    again, card_again = prepare(load_rows(params), tok, params)
    assert first == again and card == card_again
    reseeded, _ = prepare(load_rows(params), tok, with_overrides(params, "seed=1"))
    assert reseeded["sft"] != first["sft"]


# --- other readers -------------------------------------------------------------------------------


def test_parquet_folder_and_null_field(tiny_params, tok, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "pq"
    folder.mkdir()
    rows = [json.loads(good_line(i)) for i in range(1, 26)]
    rows[4]["summary"] = None
    pq.write_table(pa.Table.from_pylist(rows), folder / "train-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist([{"id": "t1", "document": "Held out.", "summary": "Its summary text."}]),
                   folder / "test.parquet")
    params = with_overrides(tiny_params, "data.source=parquet", f"data.path={folder}")
    with pytest.raises(DataError, match=r"train-00000-of-00001.parquet: row 5: field 'summary': null"):
        prepare(load_rows(params), tok, params)


def test_hf_dataset_saved_to_disk(tiny_params, tok, tmp_path):
    import datasets

    rows = [json.loads(good_line(i)) for i in range(1, 26)]
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_list(rows[:20]),
        "validation": datasets.Dataset.from_list(rows[20:]),
        "test": datasets.Dataset.from_list([{"id": "t1", "document": "Held out.", "summary": "Its summary text."}]),
    })
    dd.save_to_disk(str(tmp_path / "ds"))
    params = with_overrides(tiny_params, "data.source=hf", f"data.path={tmp_path / 'ds'}")
    loaded = load_rows(params)
    assert loaded.read == {"train": 20, "validation": 5, "test": 1}
    assert str(loaded.origins[0]) == f"{tmp_path / 'ds'}[test]: row 1"
    splits, card = prepare(loaded, tok, params)
    assert sum(card["rows"].values()) == 26 and card["source"]["kind"] == "hf"


def test_split_names():
    assert split_of("sft_train") == "train" and split_of("dialogsum.dev") == "validation"
    assert split_of("pref_validation") == "validation" and split_of("val") == "validation"
    assert split_of("train-00000-of-00001") == "train" and split_of("test") == "test"
    assert split_of("prompts_hiddentest") is None and split_of("contest_entries") is None
    with pytest.raises(DataError, match="more than one split"):
        split_of("train_test")


def test_whitespace_is_normalized_but_line_breaks_stay():
    text = "  #P1#:\tHi  there. \r\n#P2#:  Hello\u00a0you.\n\n\n\nBye  "
    assert normalize_whitespace(text) == "#P1#: Hi there.\n#P2#: Hello you.\n\nBye"
