"""`sumrl pairs`: preference pairs (document, chosen, rejected) for the reward model.

`pairs.source: generated` (ACLSum has no human preferences): chosen = the human reference summary of a
`pref` row, rejected = one summary per kind in `pairs.negatives` (data/negatives.py: length-matched base-model
samples, other documents' references, references with a sentence swapped in). These are not human
judgements, and the card says so, with each kind's length ratio and how often each side ends.
`jsonl | parquet | hf`: human preference pairs read from `pairs.path` through `pairs.fields`, checked
like `prepare-data` checks its rows (bad rows are errors or counted drops by `data.on_bad_rows`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import statistics
from collections.abc import Mapping
from pathlib import Path

from sumrl import stages
from sumrl.artifacts import DataError, read_jsonl
from sumrl.config import Config
from sumrl.data import negatives as neg
from sumrl.data.prepare import (
    Item,
    Ledger,
    data_card,
    drop_duplicate_ids,
    drop_leaks,
    first_copies,
    length_stats,
    normalize_row,
    normalize_whitespace,
    token_lengths,
    unit_hash,
    write_splits,
)
from sumrl.data.sources import Loaded, Problem, Row, load_pair_rows

log = logging.getLogger(__name__)

GENERATED = "reference_vs_generated_negative"
HUMAN = "human"
PAIR_SPLITS = ("train", "validation")
TEXT_FIELDS = ("document", "chosen", "rejected")
GENERATED_NOTE = (
    "These pairs are NOT human preferences. chosen = the human reference summary, rejected = a summary made "
    "to be worse (pairs.negatives: base-model samples, or other documents' references, whole or spliced in). "
    "A reward model trained on them learns to tell the reference from these negatives, which is a proxy for "
    "quality, not a judgement of it."
)


def run(params: dict, args=None) -> None:
    from sumrl import runtime
    from sumrl.models.load import load_tokenizer

    cfg = Config.of(params)
    device = runtime.setup(cfg.seed, cfg.compute.threads, cfg.compute.device)
    tokenizer = load_tokenizer(stages.BASE, cfg.compute.trust_remote_code)
    if cfg.pairs.source == "generated":
        rows = read_jsonl(Path(stages.PREPARED) / "pref.jsonl")
        splits, card = generated_pairs(rows, tokenizer, cfg, lambda: base_samples(rows, tokenizer, cfg, device))
    else:
        splits, card = human_pairs(load_pair_rows(cfg), tokenizer, cfg)
    write_splits(stages.PAIRS, splits, card)
    log.info("pairs (%s): %s; dropped %s", card["origin"], card["rows"],
             {r: d["count"] for r, d in card["drops"].items()})


def base_samples(rows: list[Row], tokenizer, params: Config | Mapping, device):
    """One base-model sample per row (texts, has_eos), seeded so that the samples depend on the seed alone."""
    import torch

    from sumrl.data.prompts import PromptFormat
    from sumrl.generation import generate
    from sumrl.models.load import load_policy

    cfg = Config.of(params)
    p = cfg.pairs
    model = load_policy(stages.BASE, cfg, device).eval()
    fmt = PromptFormat.from_params(tokenizer, cfg)
    torch.manual_seed(cfg.seed)
    return generate(model, tokenizer, [fmt.prompt(r["document"]) for r in rows], max_new_tokens=p.max_new_tokens,
                    do_sample=True, temperature=p.temperature, batch_size=p.batch_size)


def generated_pairs(rows: list[Row], tokenizer, params: Config | Mapping, sampler
                    ) -> tuple[dict[str, list[dict]], dict]:
    """For each prepared `pref` row, the human reference (chosen) against one rejected summary per kind in
    `pairs.negatives` (data/negatives.py). `sampler()` gives the base-model samples; it is called only when a
    kind needs them. Reference-made negatives come from documents of the same split (no leak across splits)."""
    cfg = Config.of(params)
    p = cfg.pairs
    kinds = list(p.negatives)
    split_of = [pair_split(row["document"], p.validation_fraction, cfg.seed) for row in rows]
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    lengths = [count(row["summary"]) for row in rows]
    samples = sampler() if set(kinds) & set(neg.SAMPLE_KINDS) else None
    rng = random.Random(cfg.seed)
    by_split = {name: [i for i, s in enumerate(split_of) if s == name] for name in PAIR_SPLITS}
    position = {i: k for members in by_split.values() for k, i in enumerate(members)}
    references = {name: [rows[j]["summary"] for j in members] for name, members in by_split.items()}
    reference_lengths = {name: [lengths[j] for j in members] for name, members in by_split.items()}
    ledger = Ledger("drop")  # an unusable negative is the generator's doing, not bad data: always a counted skip
    splits: dict[str, list[dict]] = {name: [] for name in PAIR_SPLITS}
    for i, row in enumerate(rows):
        split = split_of[i]
        built = {n.kind: n for n in neg.reference_negatives(kinds, position[i], references[split],
                                                            reference_lengths[split], rng)}
        if samples is not None:
            text, eos = samples.texts[i], bool(samples.has_eos[i])
            built["sample"] = neg.Negative("sample", text, ends=eos)
            built["matched_sample"] = neg.matched_sample(text, eos, lengths[i], count, p.max_length_log_ratio)
        for kind in kinds:
            negative = built[kind]
            pair_id = f"{row['id']}:{kind}"
            reason = unusable(negative, row["summary"])
            if reason:
                ledger.drop(f"{kind}: {reason}", pair_id)
                continue
            pair = pair_row(pair_id, row["document"], row["summary"], negative.text, GENERATED)
            splits[split].append({**pair, "negative": kind, "rejected_ends": negative.ends})
    check_not_empty(splits)
    source = {"kind": "generated", "path": f"{stages.PREPARED}/pref.jsonl", "negatives": ", ".join(kinds)}
    if samples is not None:
        source.update(sampler=stages.BASE, temperature=p.temperature, max_new_tokens=p.max_new_tokens)
    stats = negative_stats(splits, kinds, count)
    notes = [GENERATED_NOTE, *(negative_note(kind, s) for kind, s in stats.items())]
    no_eos = None if samples is None else int((~samples.has_eos).sum())
    if no_eos is not None:
        notes.append(f"{no_eos} of {len(rows)} base-model samples stopped at pairs.max_new_tokens = "
                     f"{p.max_new_tokens} without an end-of-sequence token.")
    card = pairs_card(notes, source, {kind: len(rows) for kind in kinds}, splits, ledger, tokenizer, cfg)
    card["negatives"] = stats
    if no_eos is not None:
        card["samples_without_eos"] = no_eos
    return splits, card


def pair_split(document: str, validation_fraction: float, seed: int) -> str:
    """Hash of the document, not of the id: all pairs of one document land in one split (no prompt leaks)."""
    return "validation" if unit_hash(seed, document) < validation_fraction else "train"


def unusable(negative: neg.Negative, reference: str) -> str:
    if negative.text is None:
        return negative.why
    if not negative.text.strip():
        return "empty"
    if normalize_whitespace(negative.text) == normalize_whitespace(reference):
        return "equals_reference"
    return ""


def negative_stats(splits: dict[str, list[dict]], kinds: list[str], count) -> dict[str, dict]:
    """Per negative kind, over both splits: what a reward model could learn besides content. The length
    ratio of chosen to rejected (log, mean), how often rejected is the shorter side, and how often each side
    ends at a sentence end or a sampled EOS rather than being cut off."""
    out = {}
    for kind in kinds:
        pairs = [p for rows in splits.values() for p in rows if p["negative"] == kind]
        if not pairs:
            out[kind] = {"pairs": 0}
            continue
        log_ratio = [math.log(count(p["chosen"]) / max(count(p["rejected"]), 1)) for p in pairs]
        out[kind] = {
            "pairs": len(pairs),
            "mean_log_length_ratio": round(statistics.fmean(log_ratio), 4),
            "mean_abs_log_length_ratio": round(statistics.fmean(abs(r) for r in log_ratio), 4),
            "rejected_shorter": round(sum(r > 0 for r in log_ratio) / len(pairs), 4),
            "chosen_ends": round(sum(neg.ends_a_sentence(p["chosen"]) for p in pairs) / len(pairs), 4),
            "rejected_ends": round(sum(p["rejected_ends"] for p in pairs) / len(pairs), 4),
        }
    return out


def negative_note(kind: str, s: dict) -> str:
    if not s["pairs"]:
        return f"`{kind}`: no usable pairs (see the drops)."
    return (f"`{kind}`: {s['pairs']} pairs; mean log(len chosen / len rejected) {s['mean_log_length_ratio']:+.2f} "
            f"(mean |.| {s['mean_abs_log_length_ratio']:.2f}); rejected is the shorter side in "
            f"{s['rejected_shorter']:.0%}; ends: chosen {s['chosen_ends']:.0%}, rejected {s['rejected_ends']:.0%}.")


def human_pairs(loaded: Loaded, tokenizer, params: Config | Mapping) -> tuple[dict[str, list[dict]], dict]:
    """Human-labelled pairs: the source's train/validation files when it has both, else a hash split."""
    cfg = Config.of(params)
    fields = cfg.pairs.fields
    ledger = Ledger(cfg.data.on_bad_rows)
    for problem in loaded.problems:
        ledger.bad(problem)
    items = [(normalize_row(row), origin) for row, origin in zip(loaded.rows, loaded.origins)]
    items = drop_duplicate_ids(items, fields.id, ledger)
    items = drop_identical_sides(items, fields.rejected, ledger)
    use_source_splits = set(PAIR_SPLITS) <= {row["split"] for row, _ in items}
    if use_source_splits:
        items = drop_unused_test(items, ledger)
        items = drop_leaks(items, "validation", fields.document, ledger)
    ledger.raise_errors()
    items = drop_duplicate_pairs(items, ledger)
    pairs = [pair_row(row["id"], row["document"], row["chosen"], row["rejected"], HUMAN) for row, _ in items]
    if use_source_splits:
        splits = {name: [pair for pair, (row, _) in zip(pairs, items) if row["split"] == name] for name in PAIR_SPLITS}
        check_not_empty(splits)
    else:
        splits = split_by_document(pairs, cfg.pairs.validation_fraction, cfg.seed)
    source = {**loaded.source, "split": "the source's files" if use_source_splits else "hash of the document"}
    # Labeler disagreement is real information about label noise: such pairs are kept, and counted.
    conflicts = conflicting_labels(pairs)
    notes = [f"{len(conflicts)} pair(s) of rows compare the same two summaries with opposite labels (labeler "
             f"disagreement), kept: {', '.join('/'.join(ids) for ids in conflicts)}"] if conflicts else []
    card = pairs_card(notes, source, loaded.read, splits, ledger, tokenizer, cfg)
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
    splits = {name: [] for name in PAIR_SPLITS}
    for pair in pairs:
        splits[pair_split(pair["document"], validation_fraction, seed)].append(pair)
    check_not_empty(splits)
    return splits


def check_not_empty(splits: dict[str, list]) -> None:
    empty = [name for name, rows in splits.items() if not rows]
    if empty:
        sizes = {name: len(rows) for name, rows in splits.items()}
        raise DataError(f"pairs: split(s) {', '.join(empty)} empty ({sizes}); need more pairs or another "
                        "pairs.validation_fraction")


def pairs_card(notes: list[str], source: dict, read: dict, splits: dict, ledger: Ledger, tokenizer,
               cfg: Config) -> dict:
    origin = GENERATED if source["kind"] == "generated" else HUMAN
    tokens = {name: {f: length_stats(token_lengths(tokenizer, [r[f] for r in rows])) for f in TEXT_FIELDS}
              for name, rows in splits.items()}
    title = "Preference pairs: " + ("human reference vs generated negatives" if origin == GENERATED
                                    else "human preferences")
    card = data_card(title, notes, source, read, splits, ledger, tokens)
    card.update(origin=origin, seed=cfg.seed, params=dataclasses.asdict(cfg.pairs))
    return card
