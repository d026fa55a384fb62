"""The judge's two prompts (pairwise, G-Eval) and the parsing of its replies."""

from __future__ import annotations

import re

PAIRWISE = """You are comparing two summaries of the same document.

Document:
{document}

Summary A:
{a}

Summary B:
{b}

Which summary is better? A better summary states only facts supported by the document, covers its main \
points, and is concise, coherent and fluent. Answer with a single letter: A or B."""

GEVAL = """You will be given a document and a summary of it. Rate the summary on a scale of 1 to 10.

Evaluation criteria:
- Coherence: the summary is well structured and organized, not a heap of related facts.
- Consistency: every fact in the summary is supported by the document; nothing is made up.
- Fluency: the sentences are grammatical and easy to read.
- Relevance: the summary keeps the important information of the document and leaves out the rest.

Evaluation steps:
1. Read the document and note its main points.
2. Read the summary and compare it with the document: which main points it covers, whether its facts are \
supported, and how well it is organized and written.
3. Give one overall score from 1 (worst) to 10 (best).

Document:
{document}

Summary:
{summary}

Answer with the score only: one integer from 1 to 10."""


def pairwise_prompt(document: str, a: str, b: str) -> str:
    return PAIRWISE.format(document=document.strip(), a=a.strip() or "(empty)", b=b.strip() or "(empty)")


def geval_prompt(document: str, summary: str) -> str:
    return GEVAL.format(document=document.strip(), summary=summary.strip() or "(empty)")


# ---- parsing replies -------------------------------------------------------------------------------

# From the most to the least explicit form; the first form that names exactly one letter decides, and a form
# naming both letters makes the reply ambiguous (invalid) rather than falling through to a vaguer form.
VERDICT_FORMS = (
    re.compile(r"^\W*([AB])\W*$"),                                                       # "B", "**A**."
    re.compile(r"\b([AB])\)?\s+is\s+(?:the\s+)?(?:better|best|preferred|superior)\b"),  # "Summary A is better"
    re.compile(r"(?i:summary|answer|choice|option|verdict|prefer)\s*(?:is\s+)?[:\-]?\s*\(?([AB])\b"),  # "Answer: B"
    re.compile(r"^\W*([AB])(?:[).:,;]|\s*\n)"),                                           # "B. Because ..."
)
# Echoes of the prompt must not be read as a score: "on a scale of 1 to 10", and the numbered evaluation steps
# ("1. Read the document ...") that small judges repeat instead of answering.
SCALE_ECHO = re.compile(r"\b(?:1|one)\s*(?:-|–|to)\s*(?:10|ten)\b", re.IGNORECASE)
LIST_ITEM = re.compile(r"^\s*\d+[.)]\s+(?=[A-Za-z])", re.MULTILINE)
OUT_OF_TEN = re.compile(r"(\d+(?:\.\d+)?)\s*(?:/|out\s+of)\s*10\b")
NUMBER = re.compile(r"(\d+(?:\.\d+)?)")
SCORE_RANGE = (1.0, 10.0)


def parse_verdict(reply: str) -> str | None:
    """'A' or 'B' from a pairwise reply; None when it names neither or both."""
    for form in VERDICT_FORMS:
        letters = set(form.findall(reply.strip()))
        if len(letters) == 1:
            return letters.pop()
        if letters:
            return None
    return None


def parse_score(reply: str) -> float | None:
    """The score of a G-Eval reply: "N/10" if present, else the first number; None unless 1 <= N <= 10."""
    text = LIST_ITEM.sub(" ", SCALE_ECHO.sub(" ", reply))
    match = OUT_OF_TEN.search(text) or NUMBER.search(text)
    if not match:
        return None
    value = float(match.group(1))
    return value if SCORE_RANGE[0] <= value <= SCORE_RANGE[1] else None


def pair_outcome(policy_first: str | None, policy_second: str | None) -> float | None:
    """The policy's result over both orders: it is summary A in the first prompt and B in the second."""
    if policy_first is None or policy_second is None:
        return None
    return ((policy_first == "A") + (policy_second == "B")) / 2
