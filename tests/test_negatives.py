"""Rejected summaries that differ from the reference in content, not length (data/negatives.py), by hand."""

from __future__ import annotations

import random

from sumrl.data import negatives as neg

REFS = [
    "Parsers fail on long inputs. We chunk the input. Accuracy rises by 3 points.",
    "Dialogue data is scarce. We crowdsource dialogues. The corpus has 10k turns.",
    "Short one.",
    "Translation drops rare words. We add a copy mechanism. BLEU improves on rare words.",
]
words = lambda text: len(text.split())  # noqa: E731  a stand-in token counter


def test_sentences_split_after_terminal_punctuation_only():
    assert neg.sentences('He said "stop." Then 3.5 points (p < 0.1). Done!') == [
        'He said "stop."', "Then 3.5 points (p < 0.1).", "Done!"]
    assert neg.ends_a_sentence("It works.") and not neg.ends_a_sentence("It works and then")


def test_matched_sample_cuts_at_the_sentence_end_closest_in_length():
    sample = "One two three. Four five six seven. Eight nine ten eleven twelve and then it ran out of"
    got = neg.matched_sample(sample, sampled_eos=False, target_tokens=7, count_tokens=words, max_log_ratio=0.25)
    assert got == neg.Negative("matched_sample", "One two three. Four five six seven.")  # 7 words
    too_far = neg.matched_sample(sample, False, target_tokens=20, count_tokens=words, max_log_ratio=0.25)
    assert too_far.text is None and too_far.why == "no_length_match"
    cut = neg.matched_sample("no sentence end at all", False, 5, words, 0.25)
    assert cut.why == "no_sentence_end"
    # a sample the model ended itself (EOS) may be used whole, even without final punctuation
    assert neg.matched_sample("a b c d e", True, 5, words, 0.25).text == "a b c d e"


def test_other_reference_is_another_document_closest_in_length():
    lengths = [words(r) for r in REFS]  # 14, 12, 2, 14
    assert neg.other_reference(0, REFS, lengths).text == REFS[3]  # same length, not itself
    assert neg.other_reference(2, REFS, lengths).text == REFS[1]
    assert neg.other_reference(0, REFS[:1], lengths[:1]).why == "no_other_document"


def test_swapped_sentence_replaces_one_sentence_by_another_documents():
    got = neg.swapped_sentence(0, REFS, random.Random(0))
    own, new = neg.sentences(REFS[0]), neg.sentences(got.text)
    assert len(new) == len(own) and sum(a != b for a, b in zip(own, new)) == 1
    changed = next(b for a, b in zip(own, new) if a != b)
    assert any(changed in neg.sentences(r) for r in REFS[1:])
    assert neg.swapped_sentence(2, REFS, random.Random(0)).why == "single_sentence"


def test_shuffled_keeps_the_sentences_in_another_order():
    got = neg.shuffled(REFS[0], random.Random(3))
    assert got.text != REFS[0] and sorted(neg.sentences(got.text)) == sorted(neg.sentences(REFS[0]))
    assert neg.shuffled("One sentence only.", random.Random(0)).why == "single_sentence"
