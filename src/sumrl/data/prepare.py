"""`sumrl prepare-data`: clean, filter and split the rows of `data.source`, and write a data card.

The steps run in a fixed order: bad rows (unreadable line, missing/empty/mistyped field, duplicate id, a
test document also in train/validation) -> whitespace normalized -> exact duplicate documents removed ->
length filter -> test capped at `data.max_test` -> the other rows hashed into sft / pref / rl.
Bad rows are errors or counted drops by `data.on_bad_rows`; the rest are always counted drops. The card
lists every dropped row with its reason, and its arithmetic is checked: rows read = rows kept + dropped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import statistics
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path

from sumrl import stages
from sumrl.artifacts import DataError, atomic_path, write_json, write_jsonl
from sumrl.config import Config, DataConfig
from sumrl.data.sources import REFERENCES, Loaded, Origin, Problem, Row, load_rows

log = logging.getLogger(__name__)

TRAIN_SPLITS = ("sft", "pref", "rl")
MAX_LISTED_ERRORS = 10
MAX_LISTED_IDS = 10  # per reason in card.md; card.json lists them all
Item = tuple[Row, Origin]


class Ledger:
    """Every row that does not reach an output, by reason. Under `on_bad_rows: error` bad rows are
    collected as errors instead and raised together, so one run shows every bad line at once."""

    def __init__(self, on_bad_rows: str):
        self.strict = on_bad_rows == "error"
        self.errors: list[Problem] = []
        self.dropped: dict[str, list[str]] = {}

    def bad(self, problem: Problem) -> None:
        if self.strict:
            self.errors.append(problem)
        else:
            self.drop(problem.reason, problem.key)

    def drop(self, reason: str, key: str) -> None:
        self.dropped.setdefault(reason, []).append(key)

    @property
    def total(self) -> int:
        return sum(len(keys) for keys in self.dropped.values())

    def raise_errors(self) -> None:
        if not self.errors:
            return
        errors = sorted(self.errors, key=lambda p: (p.origin.file, p.origin.line))
        lines = [p.message() for p in errors[:MAX_LISTED_ERRORS]]
        if len(errors) > MAX_LISTED_ERRORS:
            lines.append(f"... and {len(errors) - MAX_LISTED_ERRORS} more")
        lines.append(f"({len(errors)} bad row(s); data.on_bad_rows is 'error': set data.on_bad_rows=drop "
                     "to drop such rows and count them in the data card)")
        raise DataError("\n".join(lines))

    def card(self) -> dict:
        return {reason: {"count": len(keys), "ids": keys} for reason, keys in sorted(self.dropped.items())}

    def summary(self) -> str:
        return ", ".join(f"{r} {len(k)}" for r, k in sorted(self.dropped.items())) or "none"


def run(params: dict, args=None) -> None:
    from sumrl.models.load import load_tokenizer

    cfg = Config.of(params)
    tokenizer = load_tokenizer(stages.BASE, cfg.compute.trust_remote_code)
    splits, card = prepare(load_rows(cfg), tokenizer, cfg)
    write_splits(stages.PREPARED, splits, card)
    log.info("prepared %s; dropped %s", card["rows"], {r: d["count"] for r, d in card["drops"].items()})


def prepare(loaded: Loaded, tokenizer, params: Config | Mapping) -> tuple[dict[str, list[Row]], dict]:
    """Rows of `load_rows(params)` -> ({"sft", "pref", "rl", "test": rows}, data card). Pure: writes nothing."""
    cfg = Config.of(params)
    data, seed = cfg.data, cfg.seed
    ledger = Ledger(data.on_bad_rows)
    for problem in loaded.problems:
        ledger.bad(problem)
    items = [(with_test_split(normalize_row(row), data.test_split), origin)
             for row, origin in zip(loaded.rows, loaded.origins)]
    items = drop_duplicate_ids(items, data.fields.id, ledger)
    items = drop_leaks(items, "test", data.fields.document, ledger)
    ledger.raise_errors()
    items = drop_duplicate_documents(items, ledger)
    rows, lengths = filter_lengths([row for row, _ in items], tokenizer, data, ledger)
    test = cap([r for r in rows if r["split"] == "test"], data.max_test, seed, ledger)
    fractions = dataclasses.asdict(data.splits)
    splits = {**assign_splits([r for r in rows if r["split"] != "test"], fractions, seed, ledger), "test": test}
    check_not_empty(splits, loaded, ledger, data.test_split)
    tokens = {name: {f: length_stats([lengths[r["id"]][f] for r in split_rows]) for f in ("document", "summary")}
              for name, split_rows in splits.items()}
    card = data_card("Data card: prepared data", [], loaded.source, loaded.read, splits, ledger, tokens)
    card.update(seed=seed, params=dataclasses.asdict(data),
                tokenizer={"class": type(tokenizer).__name__, "vocab_size": len(tokenizer)})
    return {name: [output_row(r) for r in split_rows] for name, split_rows in splits.items()}, card


_SPACES = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def normalize_whitespace(text: str) -> str:
    """Runs of spaces and tabs become one space and lines are trimmed, but line breaks stay (at most one
    blank line): in dialogues and posts they carry the turn and paragraph structure."""
    lines = (_SPACES.sub(" ", line).strip() for line in text.replace("\r\n", "\n").split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def normalize_row(row: Row) -> Row:
    out = {k: normalize_whitespace(v) if isinstance(v, str) and k not in ("id", "split") else v for k, v in row.items()}
    if REFERENCES in out:
        out[REFERENCES] = [normalize_whitespace(ref) for ref in out[REFERENCES]]
    return out


def first_copies(items: list[Item], key: Callable[[Row], Hashable]) -> tuple[list[Item], list[tuple[Item, Item]]]:
    """The first item per key, in input order; and each later one paired with the first one it repeats."""
    first: dict[Hashable, Item] = {}
    repeats = []
    for item in items:
        k = key(item[0])
        if k in first:
            repeats.append((item, first[k]))
        else:
            first[k] = item
    return list(first.values()), repeats


def drop_duplicate_ids(items: list[Item], id_field: str, ledger: Ledger) -> list[Item]:
    kept, repeats = first_copies(items, lambda row: row["id"])
    for (row, origin), (_, first_origin) in repeats:
        ledger.bad(Problem(origin, "duplicate_id", f"duplicate id '{row['id']}' (first at {first_origin})",
                           id_field, row["id"]))
    return kept


def drop_leaks(items: list[Item], held_out: str, document_field: str, ledger: Ledger) -> list[Item]:
    """A document both in the held-out split and in another one leaks: the held-out copy stays, so the
    evaluation set does not depend on what the training files hold."""
    held = {}
    for row, origin in items:
        if row["split"] == held_out:
            held.setdefault(row["document"], (row["id"], origin))
    kept = []
    for row, origin in items:
        match = held.get(row["document"]) if row["split"] != held_out else None
        if match:
            ledger.bad(Problem(origin, "leakage", f"same document as {held_out} row '{match[0]}' at {match[1]} "
                               "(leakage across splits)", document_field, row["id"]))
        else:
            kept.append((row, origin))
    return kept


def drop_duplicate_documents(items: list[Item], ledger: Ledger) -> list[Item]:
    kept, repeats = first_copies(items, lambda row: row["document"])
    for (row, _), _ in repeats:
        ledger.drop("duplicate_document", row["id"])
    return kept


def token_lengths(tokenizer, texts: list[str]) -> list[int]:
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def filter_lengths(rows: list[Row], tokenizer, data: DataConfig, ledger: Ledger
                   ) -> tuple[list[Row], dict[str, dict]]:
    """Rows within the token limits, and every kept row's lengths by id (for the card)."""
    doc_lens = token_lengths(tokenizer, [r["document"] for r in rows])
    sum_lens = token_lengths(tokenizer, [r["summary"] for r in rows])
    kept, lengths = [], {}
    for row, doc_len, sum_len in zip(rows, doc_lens, sum_lens):
        if doc_len > data.max_document_tokens:
            ledger.drop("document_too_long", row["id"])
        elif sum_len > data.max_summary_tokens:
            ledger.drop("summary_too_long", row["id"])
        elif sum_len < data.min_summary_tokens:
            ledger.drop("summary_too_short", row["id"])
        else:
            kept.append(row)
            lengths[row["id"]] = {"document": doc_len, "summary": sum_len}
    return kept, lengths


def unit_hash(seed: int, key: str) -> float:
    """A number in [0, 1) fixed by (seed, key): the same on every machine and Python run, unlike hash()."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def cap(rows: list[Row], limit: int | None, seed: int, ledger: Ledger) -> list[Row]:
    """At most `limit` rows, chosen by hash (not by file order, which may be sorted by topic or length)."""
    if limit is None or len(rows) <= limit:
        return rows
    chosen = set(sorted((r["id"] for r in rows), key=lambda i: unit_hash(seed, i))[:limit])
    for row in rows:
        if row["id"] not in chosen:
            ledger.drop("over_max_test", row["id"])
    return [r for r in rows if r["id"] in chosen]


def assign_splits(rows: list[Row], fractions: dict, seed: int, ledger: Ledger) -> dict[str, list[Row]]:
    """sft / pref / rl by hash of (seed, id): a row keeps its split when other rows come or go."""
    bounds, total = [], 0.0
    for name in TRAIN_SPLITS:
        total += fractions[name]
        bounds.append((name, total))
    out: dict[str, list[Row]] = {name: [] for name in TRAIN_SPLITS}
    for row in rows:
        u = unit_hash(seed, row["id"])
        name = next((n for n, bound in bounds if u < bound), None)
        if name is None:  # the fractions sum to less than 1
            ledger.drop("outside_split_fractions", row["id"])
        else:
            out[name].append(row)
    return out


def with_test_split(row: Row, test_split: str) -> Row:
    """data.test_split names the source split held out as the test set; a source `test` split it displaces
    joins the pool the other splits are drawn from."""
    if test_split == "test" or row["split"] not in (test_split, "test"):
        return row
    return {**row, "split": "test" if row["split"] == test_split else "validation"}


def check_not_empty(splits: dict[str, list], loaded: Loaded, ledger: Ledger, test_split: str = "test") -> None:
    empty = [name for name, rows in splits.items() if not rows]
    if not empty:
        return
    files = ", ".join(f"{f} ({s})" for f, s in loaded.source.get("files", {}).items())
    hint = ""
    if "test" in empty and not loaded.read[test_split]:
        hint = (f"; the source has no '{test_split}' split (data.test_split): name a file or split *{test_split}*, "
                "or set data.test_split to one it has")
    raise DataError(f"{loaded.source.get('path', loaded.source['kind'])}: split(s) {', '.join(empty)} empty after "
                    f"filtering; rows read {dict(loaded.read)} from {files or 'the source'}; "
                    f"dropped: {ledger.summary()}{hint}")


def output_row(row: Row) -> Row:
    out = {"id": row["id"], "document": row["document"], "summary": row["summary"]}
    if REFERENCES in row:
        out[REFERENCES] = row[REFERENCES]
    return out


def length_stats(lengths: list[int]) -> dict:
    if not lengths:
        return {"count": 0}
    return {"count": len(lengths), "min": min(lengths), "median": statistics.median(lengths),
            "mean": round(statistics.fmean(lengths), 1), "max": max(lengths)}


def data_card(title: str, notes: list[str], source: dict, read: dict[str, int], splits: dict[str, list],
              ledger: Ledger, tokens: dict) -> dict:
    """The card fields prepare and pairs share; fails if a row went missing without a recorded reason."""
    kept = sum(len(rows) for rows in splits.values())
    if sum(read.values()) != kept + ledger.total:
        raise RuntimeError(f"data card does not add up: read {sum(read.values())} != kept {kept} + "
                           f"dropped {ledger.total}; a row was lost without a reason")
    return {"title": title, "notes": notes, "source": source, "rows_read": read,
            "rows": {name: len(rows) for name, rows in splits.items()},
            "dropped": ledger.total, "drops": ledger.card(), "tokens": tokens}


def render_card(card: dict) -> str:
    """card.md: the same facts as card.json, for people."""
    out = [f"# {card['title']}", ""]
    out += [f"> {note}\n" for note in card["notes"]]
    source = card["source"]
    shown = {k: v for k, v in source.items() if isinstance(v, (str, int, float)) and v}
    out.append("Source: " + ", ".join(f"{k} `{v}`" for k, v in shown.items()))
    out += [f"- `{f}` -> {s}" for f, s in source.get("files", {}).items()]
    out += [f"- `{f}` left out (its name says no split)" for f in source.get("ignored_files", [])]
    out += ["", f"Rows read: {sum(card['rows_read'].values())} "
            f"({', '.join(f'{s} {n}' for s, n in card['rows_read'].items())}); "
            f"kept {sum(card['rows'].values())}; dropped {card['dropped']}.", ""]
    fields = next((list(t) for t in card["tokens"].values()), [])
    out += ["| split | rows | " + " | ".join(f"{f} tokens min / median / mean / max" for f in fields) + " |",
            "|---|---:|" + "---|" * len(fields)]
    for name, rows in card["rows"].items():
        stats = [card["tokens"][name][f] for f in fields]
        cells = [" / ".join(str(s.get(k, "-")) for k in ("min", "median", "mean", "max")) for s in stats]
        out.append(f"| {name} | {rows} | " + " | ".join(cells) + " |")
    out += ["", f"## Dropped rows ({card['dropped']})", ""]
    if card["drops"]:
        out += ["| reason | count | ids |", "|---|---:|---|"]
        for reason, drop in card["drops"].items():
            ids = ", ".join(f"`{i}`" for i in drop["ids"][:MAX_LISTED_IDS])
            hidden = drop["count"] - MAX_LISTED_IDS
            more = f" and {hidden} more (all in card.json)" if hidden > 0 else ""
            out.append(f"| {reason} | {drop['count']} | {ids}{more} |")
    else:
        out.append("None.")
    return "\n".join(out) + "\n"


def write_splits(out_dir: str | Path, splits: dict[str, list[dict]], card: dict) -> None:
    """`<split>.jsonl` per split plus card.json and card.md, replacing `out_dir` in one rename."""
    with atomic_path(out_dir, is_dir=True) as tmp:
        for name, rows in splits.items():
            write_jsonl(tmp / f"{name}.jsonl", rows)
        write_json(tmp / "card.json", card)
        (tmp / "card.md").write_text(render_card(card), encoding="utf-8")
