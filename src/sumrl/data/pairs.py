"""`sumrl pairs`: preference pairs (document, chosen, rejected) for the reward model.

`pairs.source: generated` (ACLSum has no human preferences): chosen = the human reference summary of a
`pref` row, rejected = a sample from the base model. These are not human judgements, and the card says
so. `jsonl | parquet | hf`: human preference pairs read from `pairs.path` through `pairs.fields`, checked
like `prepare-data` checks its rows (bad rows are errors or counted drops by `data.on_bad_rows`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from sumrl import stages
from sumrl.artifacts import DataError, read_jsonl
from sumrl.data.prepare import (Item, Ledger, data_card, drop_duplicate_ids, drop_leaks, first_copies,
                                length_stats, normalize_row, normalize_whitespace, token_lengths, unit_hash,
                                write_splits)
from sumrl.data.sources import Loaded, Problem, Row, load_pair_rows

log = logging.getLogger(__name__)

GENERATED = "reference_vs_base_sample"
HUMAN = "human"
PAIR_SPLITS = ("train", "validation")
TEXT_FIELDS = ("document", "chosen", "rejected")
GENERATED_NOTE = (
    "These pairs are NOT human preferences. chosen = the human reference summary, rejected = a sample from "
    "the base model. A reward model trained on them learns to tell reference summaries from base-model "
    "samples, which is a proxy for quality, not a judgement of it."
)


def run(params: dict, args=None) -> None:
    from sumrl import runtime
    from sumrl.models.load import load_policy, load_tokenizer

    device = runtime.setup(params["seed"], params["compute"]["threads"], params["compute"]["device"])
    tokenizer = load_tokenizer(stages.BASE, params["compute"]["trust_remote_code"])
    if params["pairs"]["source"] == "generated":
        rows = read_jsonl(Path(stages.PREPARED) / "pref.jsonl")
        model = load_policy(stages.BASE, params, device).eval()
        splits, card = generated_pairs(rows, model, tokenizer, params)
    else:
        splits, card = human_pairs(load_pair_rows(params), tokenizer, params)
    write_splits(stages.PAIRS, splits, card)
    log.info("pairs (%s): %s; dropped %s", card["origin"], card["rows"],
             {r: d["count"] for r, d in card["drops"].items()})


def generated_pairs(rows: list[Row], model, tokenizer, params: dict) -> tuple[dict[str, list[dict]], dict]:
    """Reference (chosen) vs one base-model sample (rejected) per prepared `pref` row."""
    import torch

    from sumrl.data.prompts import PromptFormat
    from sumrl.generation import generate

    p = params["pairs"]
    fmt = PromptFormat.from_params(tokenizer, params)
    torch.manual_seed(params["seed"])  # the samples depend on the seed alone, not on what ran before
    samples = generate(model, tokenizer, [fmt.prompt(r["document"]) for r in rows], max_new_tokens=p["max_new_tokens"],
                       do_sample=True, temperature=p["temperature"], batch_size=p["batch_size"])
    ledger = Ledger("drop")  # an unusable sample is the model's doing, not bad data: always a counted skip
    pairs = []
    for row, sample in zip(rows, samples.texts):
        if not sample.strip():
            ledger.drop("empty_sample", row["id"])
        elif normalize_whitespace(sample) == normalize_whitespace(row["summary"]):
            ledger.drop("sample_equals_reference", row["id"])
        else:
            pairs.append(pair_row(row["id"], row["document"], row["summary"], sample, GENERATED))
    splits = split_by_document(pairs, p["validation_fraction"], params["seed"])
    source = {"kind": "generated", "path": f"{stages.PREPARED}/pref.jsonl", "sampler": stages.BASE,
              "temperature": p["temperature"], "max_new_tokens": p["max_new_tokens"]}
    # A sample cut at max_new_tokens has no EOS: an easy cue for the reward model, so say how many.
    no_eos = int((~samples.has_eos).sum())
    notes = [GENERATED_NOTE, f"{no_eos} of {len(rows)} samples stopped at pairs.max_new_tokens = "
             f"{p['max_new_tokens']} without an end-of-sequence token."]
    card = pairs_card(notes, source, {"pref": len(rows)}, splits, ledger, tokenizer, params)
    card["samples_without_eos"] = no_eos
    return splits, card


def human_pairs(loaded: Loaded, tokenizer, params: dict) -> tuple[dict[str, list[dict]], dict]:
    """Human-labelled pairs: the source's train/validation files when it has both, else a hash split."""
    fields = params["pairs"]["fields"]
    ledger = Ledger(params["data"]["on_bad_rows"])
    for problem in loaded.problems:
        ledger.bad(problem)
    items = [(normalize_row(row), origin) for row, origin in zip(loaded.rows, loaded.origins)]
    items = drop_duplicate_ids(items, fields["id"], ledger)
    items = drop_identical_sides(items, fields["rejected"], ledger)
    use_source_splits = set(PAIR_SPLITS) <= {row["split"] for row, _ in items}
    if use_source_splits:
        items = drop_unused_test(items, ledger)
        items = drop_leaks(items, "validation", fields["document"], ledger)
    ledger.raise_errors()
    items = drop_duplicate_pairs(items, ledger)
    pairs = [pair_row(row["id"], row["document"], row["chosen"], row["rejected"], HUMAN) for row, _ in items]
    if use_source_splits:
        splits = {name: [pair for pair, (row, _) in zip(pairs, items) if row["split"] == name] for name in PAIR_SPLITS}
        check_not_empty(splits)
    else:
        splits = split_by_document(pairs, params["pairs"]["validation_fraction"], params["seed"])
    source = {**loaded.source, "split": "the source's files" if use_source_splits else "hash of the document"}
    # Labeler disagreement is real information about label noise: such pairs are kept, and counted.
    conflicts = conflicting_labels(pairs)
    notes = [f"{len(conflicts)} pair(s) of rows compare the same two summaries with opposite labels (labeler "
             f"disagreement), kept: {', '.join('/'.join(ids) for ids in conflicts)}"] if conflicts else []
    card = pairs_card(notes, source, loaded.read, splits, ledger, tokenizer, params)
    card["conflicting_labels"] = {"count": len(conflicts), "ids": conflicts}
    return splits, card


def pair_row(row_id: str, document: str, chosen: str, rejected: str, origin: str) -> dict:
    return {"id": row_id, "document": document, "chosen": chosen, "rejected": rejected, "origin": origin}


def drop_identical_sides(items: list[Item], rejected_field: str, ledger: Ledger) -> list[Item]:
    kept = []
    for row, origin in items:
        if row["chosen"] == row["rejected"]:
            ledger.bad(Problem(origin, "identical_pair", "same text as chosen", rejected_field, row["id"]))
        else:
            kept.append((row, origin))
    return kept


def drop_unused_test(items: list[Item], ledger: Ledger) -> list[Item]:
    """With train and validation files present, a test file has no role here; its rows are counted."""
    for row, _ in items:
        if row["split"] == "test":
            ledger.drop("test_split_unused", row["id"])
    return [(row, origin) for row, origin in items if row["split"] != "test"]


def drop_duplicate_pairs(items: list[Item], ledger: Ledger) -> list[Item]:
    kept, repeats = first_copies(items, lambda row: (row["document"], row["chosen"], row["rejected"]))
    for (row, _), _ in repeats:
        ledger.drop("duplicate_pair", row["id"])
    return kept


def conflicting_labels(pairs: list[dict]) -> list[list[str]]:
    """[id, id] for each two pairs that compare the same summaries of one document the opposite way round."""
    first = {(p["document"], p["chosen"], p["rejected"]): p["id"] for p in pairs}
    found = []
    for p in pairs:
        other = first.get((p["document"], p["rejected"], p["chosen"]))
        if other is not None and other < p["id"]:
            found.append([other, p["id"]])
    return sorted(found)


def split_by_document(pairs: list[dict], validation_fraction: float, seed: int) -> dict[str, list[dict]]:
    """Hash of the document, not of the id: all pairs of one document land in one split (no prompt leaks)."""
    splits = {name: [] for name in PAIR_SPLITS}
    for pair in pairs:
        name = "validation" if unit_hash(seed, pair["document"]) < validation_fraction else "train"
        splits[name].append(pair)
    check_not_empty(splits)
    return splits


def check_not_empty(splits: dict[str, list]) -> None:
    empty = [name for name, rows in splits.items() if not rows]
    if empty:
        sizes = {name: len(rows) for name, rows in splits.items()}
        raise DataError(f"pairs: split(s) {', '.join(empty)} empty ({sizes}); need more pairs or another "
                        "pairs.validation_fraction")


def pairs_card(notes: list[str], source: dict, read: dict, splits: dict, ledger: Ledger, tokenizer,
               params: dict) -> dict:
    origin = GENERATED if source["kind"] == "generated" else HUMAN
    tokens = {name: {f: length_stats(token_lengths(tokenizer, [r[f] for r in rows])) for f in TEXT_FIELDS}
              for name, rows in splits.items()}
    title = "Preference pairs: " + ("reference vs base-model sample" if origin == GENERATED else "human preferences")
    card = data_card(title, notes, source, read, splits, ledger, tokens)
    card.update(origin=origin, seed=params["seed"], params=params["pairs"])
    return card
