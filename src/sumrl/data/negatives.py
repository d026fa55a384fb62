"""Rejected summaries for corpora without human preferences, built to differ from the chosen (the human
reference) in content rather than in length or in how they end.

A reward model learns the cheapest feature that separates chosen from rejected. When every rejected side is
a base-model sample cut off at the token limit, that feature is "short and ends" (Singhal et al. 2023), and RL
then optimizes exactly that. Each kind below (`pairs.negatives`) removes the shortcut in its own way:

  sample            the base-model sample as it is (the old pairs; kept to reproduce them, and as a contrast)
  matched_sample    the base-model sample cut at the sentence end whose length is closest to the reference's;
                    dropped (and counted) when no sentence end is within pairs.max_length_log_ratio of it
  other_reference   the human reference of another document of the same split, the closest in length:
                    fluent, the right length and style, wrong content; teaches faithfulness to the document
  swapped_sentence  the reference with one sentence replaced by the same-position sentence of another
                    document's reference (needs two sentences)
  shuffled          the reference's sentences in another order (needs two sentences)

Pure functions on strings and token counts; `pairs.py` runs the sampler and writes the pairs.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

SAMPLE_KINDS = ("sample", "matched_sample")
REFERENCE_KINDS = ("other_reference", "swapped_sentence", "shuffled")
KINDS = (*SAMPLE_KINDS, *REFERENCE_KINDS)

_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+")


def sentences(text: str) -> list[str]:
    """Split after ., ! or ? followed by white space (closing quotes and brackets stay with their sentence)."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def ends_a_sentence(text: str) -> bool:
    return bool(re.search(r"[.!?][\"')\]]*$", text.strip()))


@dataclass(frozen=True)
class Negative:
    kind: str
    text: str | None        # None: this kind cannot be built for this row (`why` says why)
    ends: bool = True       # ends at a sentence end or an EOS the model sampled (not cut off by a token limit)
    why: str = ""


def matched_sample(sample: str, sampled_eos: bool, target_tokens: int, count_tokens: Callable[[str], int],
                   max_log_ratio: float) -> Negative:
    """The prefix of `sample` ending at a sentence end (or the whole sample if the model stopped by itself)
    whose token count is closest to `target_tokens`, if within exp(+-max_log_ratio) of it."""
    parts = sentences(sample)
    candidates = [" ".join(parts[:i]) for i in range(1, len(parts) + 1)]
    candidates = [c for c in candidates if ends_a_sentence(c) or (sampled_eos and c == " ".join(parts))]
    if not candidates:
        return Negative("matched_sample", None, why="no_sentence_end")
    gaps = [abs(math.log(max(count_tokens(c), 1) / max(target_tokens, 1))) for c in candidates]
    best = min(range(len(candidates)), key=gaps.__getitem__)
    if gaps[best] > max_log_ratio:
        return Negative("matched_sample", None, why="no_length_match")
    return Negative("matched_sample", candidates[best])


def other_reference(index: int, references: Sequence[str], lengths: Sequence[int]) -> Negative:
    """The reference of another document closest in length to references[index] (ties: the earlier one)."""
    others = [j for j in range(len(references)) if j != index and references[j] != references[index]]
    if not others:
        return Negative("other_reference", None, why="no_other_document")
    j = min(others, key=lambda j: (abs(lengths[j] - lengths[index]), j))
    return Negative("other_reference", references[j])


def swapped_sentence(index: int, references: Sequence[str], rng: random.Random) -> Negative:
    """One sentence of references[index] replaced by the sentence at the same position (or the last one) of a
    randomly chosen other document's reference."""
    own = sentences(references[index])
    if len(own) < 2:
        return Negative("swapped_sentence", None, why="single_sentence")
    others = [j for j in range(len(references)) if j != index and sentences(references[j])]
    if not others:
        return Negative("swapped_sentence", None, why="no_other_document")
    donor = sentences(references[rng.choice(others)])
    position = rng.randrange(len(own))
    replacement = donor[min(position, len(donor) - 1)]
    if replacement == own[position]:
        return Negative("swapped_sentence", None, why="same_sentence")
    return Negative("swapped_sentence", " ".join([*own[:position], replacement, *own[position + 1:]]))


def shuffled(text: str, rng: random.Random) -> Negative:
    """The sentences of `text` in a random order other than their own."""
    own = sentences(text)
    if len(own) < 2 or len(set(own)) < 2:
        return Negative("shuffled", None, why="single_sentence")
    order = list(range(len(own)))
    while order == sorted(order):
        rng.shuffle(order)
    return Negative("shuffled", " ".join(own[i] for i in order))


def reference_negatives(kinds: Sequence[str], index: int, references: Sequence[str], lengths: Sequence[int],
                        rng: random.Random) -> list[Negative]:
    """The reference-made negatives of row `index` among `references` (one split's), in `kinds` order."""
    build = {
        "other_reference": lambda: other_reference(index, references, lengths),
        "swapped_sentence": lambda: swapped_sentence(index, references, rng),
        "shuffled": lambda: shuffled(references[index], rng),
    }
    return [build[kind]() for kind in kinds if kind in build]
