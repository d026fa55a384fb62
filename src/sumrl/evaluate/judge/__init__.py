"""`sumrl judge`: an LLM judge's verdicts on every policy's test summaries, in reports/judge.json.

Two measurements per policy, on the first `judge.max_rows` rows of its generations:

- pairwise win rate against `judge.against` (the human reference, or the SFT policy's summary of the same row).
  Each pair is judged in both orders, because small judges prefer whichever summary comes first: the policy
  scores 1 if it wins both orders, 0.5 if the orders disagree, 0 if it loses both.
- a G-Eval-style score from 1 to 10 (Liu et al. 2023: criteria and evaluation steps in the prompt), the mean
  of `judge.samples` replies per summary (1: greedy). The references are scored too, as an anchor.

A reply that does not parse is counted as invalid and shown in the output, never skipped unseen: a pair with an
invalid reply in either order leaves the win rate, a summary with no valid score leaves the G-Eval mean.

Backends: `hf` runs a local transformers model (default: models/base); `openai` POSTs to an OpenAI-compatible
/chat/completions endpoint whose URL and key come from the environment (`judge.url_env`, `judge.key_env`) and
are never written to a log, an error message or a file.

Replies are cached in .cache/judge/replies.jsonl, keyed by a hash of the judge's identity, the prompt, the
decoding settings and the sample index, so a rerun with the same inputs sends no request at all. Only light
imports run at import time: the CLI imports this package for every command, and a disabled judge writes
{"enabled": false} without loading torch.

The package, by concern: prompts.py (the two prompts and the parsing of replies), cache.py (queries and the
reply cache), backends.py (hf and openai), stage.py (the measurements and `sumrl judge`).
"""


from sumrl.evaluate.judge.backends import Backend, HFBackend, JudgeError, OpenAIBackend, judge_backend
from sumrl.evaluate.judge.cache import CACHE, Query, ReplyCache, answer, reply_key
from sumrl.evaluate.judge.prompts import geval_prompt, pair_outcome, pairwise_prompt, parse_score, parse_verdict
from sumrl.evaluate.judge.stage import all_queries, build_queries, read_policy_rows, results, run, write_disabled

__all__ = [
    "CACHE", "Backend", "HFBackend", "JudgeError", "OpenAIBackend", "Query", "ReplyCache", "all_queries", "answer",
    "build_queries", "geval_prompt", "judge_backend", "pair_outcome", "pairwise_prompt", "parse_score",
    "parse_verdict", "read_policy_rows", "reply_key", "results", "run", "write_disabled",
]
