"""Where rows come from: ACLSum (the installed package), JSONL or Parquet files, or a Hugging Face dataset.

Every source gives the same thing: rows in sumrl's field names with a `split` taken from the source, one
`Origin` (file and line) per row, and the `Problem`s met while reading. Reading problems are not raised
here: `prepare` and `pairs` decide by `data.on_bad_rows` whether each is an error or a counted drop, and
an error must name the file, line and field, which only the reader knows.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sumrl.artifacts import DataError
from sumrl.config import Config

SPLITS = ("train", "validation", "test")
# Words in a file or split name that say which split it is; matched whole, so `prompts_hiddentest`
# (DialogSum's summary-less prompts) names no split and is left out rather than taken for `test`.
SPLIT_WORDS = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
               "val": "validation", "dev": "validation", "test": "test"}
FILE_SUFFIXES = {"jsonl": (".jsonl",), "parquet": (".parquet",)}
ACLSUM_SPLITS = {"train": "train", "val": "validation", "test": "test"}
ACLSUM_ASPECTS = ("challenge", "approach", "outcome")
REFERENCES = "references"

Row = dict  # {"id", "document", "summary", "split", optional "references"}; pairs: chosen/rejected for summary


@dataclass(frozen=True)
class Origin:
    """Where one row was read: a file and a 1-based line (JSONL) or row (Parquet, HF) number."""

    file: str
    line: int
    unit: str = "line"

    def __str__(self) -> str:
        return f"{self.file}: {self.unit} {self.line}"


@dataclass(frozen=True)
class Problem:
    """A row that cannot be used as it is. `reason` is the short code the data card groups drops by."""

    origin: Origin
    reason: str
    detail: str
    field: str | None = None
    id: str | None = None

    @property
    def key(self) -> str:
        """How the data card lists the row: its id, or its place when it has no usable id."""
        return self.id if self.id is not None else str(self.origin)

    def message(self) -> str:
        where = f"{self.origin}: field '{self.field}'" if self.field else str(self.origin)
        return f"{where}: {self.detail}"


@dataclass
class Loaded:
    rows: list[Row]
    origins: list[Origin]  # parallel to rows
    problems: list[Problem]
    source: dict  # what the data card says about the source: kind, path, files read and left out
    read: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SPLITS})  # records per split, bad included

    def add(self, row: Row, origin: Origin) -> None:
        self.rows.append(row)
        self.origins.append(origin)


# A record is (split, origin, the source's dict) or, for a line that is not a record at all, a Problem.
Records = Iterator[tuple[str, Origin, "dict | Problem"]]


def load_rows(params: Config | Mapping) -> Loaded:
    """The summarization rows of `data.source` (id, document, summary, split, optional references)."""
    data = Config.of(params).data
    return load_source(data.source, data.path, data.hf_config, dataclasses.asdict(data.fields),
                       optional=(REFERENCES,))


def load_pair_rows(params: Config | Mapping) -> Loaded:
    """Human preference pairs from `pairs.path` (id, document, chosen, rejected, split)."""
    pairs = Config.of(params).pairs
    return load_source(pairs.source, pairs.path, None, dataclasses.asdict(pairs.fields))


def load_source(kind: str, path: str | None, hf_config: str | None, fields: Mapping[str, str],
                optional: tuple[str, ...] = ()) -> Loaded:
    """Rows in sumrl's names: `fields` maps each sumrl field to the source's; `optional` fields keep their name."""
    if kind == "aclsum":
        records, source = aclsum_records()
    elif kind in FILE_SUFFIXES:
        records, source = file_records(Path(path), kind)
    elif kind == "hf":
        records, source = hf_records(path, hf_config)
    else:
        raise DataError(f"unknown source kind '{kind}'")
    loaded = Loaded([], [], [], source)
    for split, origin, record in records:
        loaded.read[split] += 1
        row = record if isinstance(record, Problem) else to_row(record, origin, fields, optional)
        if isinstance(row, Problem):
            loaded.problems.append(row)
        else:
            loaded.add({**row, "split": split}, origin)
    return loaded


def to_row(record: object, origin: Origin, fields: Mapping[str, str], optional: Iterable[str] = ()) -> Row | Problem:
    """Map one source record to sumrl's names, or say what is wrong with it (missing, empty, wrong type)."""
    if not isinstance(record, dict):
        return Problem(origin, "wrong_type", f"expected a JSON object, got {type(record).__name__}")
    raw_id = record.get(fields["id"])
    usable_id = isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool) and str(raw_id).strip()
    row_id = str(raw_id) if usable_id else None  # integer ids are fine; the card lists a row by id if it has one
    row: Row = {}
    # Problems name the source's field (`dialogue`, not `document`): the name the user sees in the file.
    for name, source_name in fields.items():
        value = record.get(source_name)
        if value is None:
            detail = "missing" if source_name not in record else "null"
            return Problem(origin, "missing_field", detail, source_name, row_id)
        if name == "id" and row_id is not None:
            value = row_id
        if not isinstance(value, str):
            return Problem(origin, "wrong_type", f"expected a string, got {type(value).__name__} {value!r:.40}",
                           source_name, row_id)
        if not value.strip():
            return Problem(origin, "empty_field", "empty", source_name, row_id)
        row[name] = value
    for name in optional:
        if record.get(name) is None:
            continue
        value = record[name]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return Problem(origin, "wrong_type", "expected a list of strings", name, row_id)
        if not value or not all(v.strip() for v in value):
            return Problem(origin, "empty_field", "empty list or empty string in the list", name, row_id)
        row[name] = value
    return row


def split_of(name: str) -> str | None:
    """The split a file or split name says (`sft_train` -> train, `dialogsum.dev` -> validation), or None."""
    found = {SPLIT_WORDS[w] for w in re.split(r"[^a-z]+", name.lower()) if w in SPLIT_WORDS}
    if len(found) > 1:
        raise DataError(f"{name}: the name says more than one split ({', '.join(sorted(found))})")
    return found.pop() if found else None


def aclsum_records() -> tuple[Records, dict]:
    """ACLSum from the installed package: document = the abstract, summary = challenge + approach + outcome."""
    from aclsum import ACLSum
    from aclsum.aclsum import DATA_DIR

    def records() -> Records:
        for name, split in ACLSUM_SPLITS.items():
            # The package reads <split>.jsonl one document a line, so line = index + 1.
            for index, doc in enumerate(ACLSum(name)):
                record = {
                    "id": doc.id,
                    "document": " ".join(doc.sentences["abstract"]),
                    "summary": " ".join(doc.summaries[a] for a in ACLSUM_ASPECTS),
                }
                yield split, Origin(str(DATA_DIR / f"{name}.jsonl"), index + 1), record

    source = {"kind": "aclsum", "package": f"aclsum {importlib.metadata.version('aclsum')}",
              "files": {f"aclsum/dataset/{name}.jsonl": split for name, split in ACLSUM_SPLITS.items()},
              "document": "abstract sentences joined by spaces",
              "summary": " + ".join(ACLSUM_ASPECTS) + " summaries joined by spaces"}
    return records(), source


def file_records(path: Path, kind: str) -> tuple[Records, dict]:
    """One file (its split from its name, else `train`) or a folder of files whose names say their split."""
    if path.is_dir():
        candidates = sorted(p for p in path.iterdir() if p.suffix in FILE_SUFFIXES[kind])
        files = {p: split_of(p.stem) for p in candidates}
        ignored = [p.name for p, split in files.items() if split is None]
        files = {p: split for p, split in files.items() if split is not None}
        if not files:
            raise DataError(f"{path}: no {kind} file whose name says its split "
                            f"(train / validation|val|dev / test); found {[p.name for p in candidates]}")
    elif path.is_file():
        files, ignored = {path: split_of(path.stem) or "train"}, []
    else:
        raise DataError(f"{path}: file or folder not found")
    read = read_jsonl_records if kind == "jsonl" else read_parquet_records

    def records() -> Records:
        for file, split in files.items():
            for origin, record in read(file):
                yield split, origin, record

    source = {"kind": kind, "path": str(path), "files": {p.name: s for p, s in files.items()},
              "ignored_files": ignored}
    return records(), source


def read_jsonl_records(path: Path) -> Iterator[tuple[Origin, dict | Problem]]:
    """Each non-blank line as a parsed object, or a Problem for a line that is not UTF-8 or not JSON.

    Bytes are decoded line by line and strictly, so a bad byte is reported at its line, not as a
    decode error somewhere in the file.
    """
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            origin = Origin(str(path), lineno)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield origin, invalid_utf8(origin, raw, exc)
                continue
            try:
                yield origin, json.loads(text.lstrip("\ufeff") if lineno == 1 else text)
            except json.JSONDecodeError as exc:
                yield origin, Problem(origin, "invalid_json", f"not valid JSON: {exc.msg} (column {exc.colno})")


def invalid_utf8(origin: Origin, raw: bytes, exc: UnicodeDecodeError) -> Problem:
    """Name the field holding the bad bytes where the line still parses as JSON around them."""
    detail = f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the line"
    try:
        record = json.loads(raw.decode("utf-8", errors="surrogateescape"))
    except json.JSONDecodeError:
        return Problem(origin, "invalid_utf8", detail)
    if not isinstance(record, dict):
        return Problem(origin, "invalid_utf8", detail)
    bad = [k for k, v in record.items() if _has_surrogates(k) or _has_surrogates(json.dumps(v, ensure_ascii=False))]
    return Problem(origin, "invalid_utf8", detail, bad[0] if bad else None)


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def read_parquet_records(path: Path) -> Iterator[tuple[Origin, dict]]:
    import pyarrow.parquet as pq

    # Arrow strings are valid UTF-8 by construction, so only field checks apply to Parquet rows.
    for index, record in enumerate(pq.read_table(path).to_pylist()):
        yield Origin(str(path), index + 1, "row"), record


def hf_records(path: str, config: str | None) -> tuple[Records, dict]:
    """A dataset saved with `save_to_disk`, a local folder of data files, or a hub name (online users)."""
    import datasets

    local = Path(path)
    if (local / "dataset_dict.json").is_file() or (local / "state.json").is_file():
        loaded = datasets.load_from_disk(str(local))
    else:
        try:
            loaded = datasets.load_dataset(path, config)
        except datasets.exceptions.DatasetGenerationError as exc:
            # e.g. split files with different columns (DialogSum's test adds `references`)
            raise DataError(f"{path}: the datasets library could not build this dataset ({exc.__cause__ or exc}); "
                            "for local files data.source jsonl or parquet reads each file on its own") from exc
    by_name = loaded if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    splits = {name: split_of(name) for name in sorted(by_name)}
    ignored = [name for name, split in splits.items() if split is None]
    splits = {name: split for name, split in splits.items() if split is not None}
    if not splits:
        raise DataError(f"{path}: no split named train / validation|val|dev / test; found {sorted(by_name)}")

    def records() -> Records:
        for name, split in splits.items():
            for index, record in enumerate(by_name[name]):
                yield split, Origin(f"{path}[{name}]", index + 1, "row"), record

    source = {"kind": "hf", "path": path, "hf_config": config, "files": splits, "ignored_files": ignored}
    return records(), source
