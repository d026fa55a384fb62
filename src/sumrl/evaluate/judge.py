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
decoding settings and the sample index, so a rerun with the same inputs sends no request at all. Only this
module's light imports run at import time: the CLI imports it for every command, and a disabled judge writes
{"enabled": false} without loading torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sumrl import stages
from sumrl.artifacts import DataError, read_jsonl, write_json

log = logging.getLogger(__name__)

CACHE = Path(".cache/judge/replies.jsonl")
REFERENCE = "reference"
BACKOFF_S = 1.0          # first retry wait; doubled per retry
ERROR_BODY_CHARS = 300   # of an endpoint's error body, in our error message
SHOWN_INVALID = 3        # invalid replies quoted in the log per policy and measurement
HASH_CHUNK = 1 << 20


class JudgeError(RuntimeError):
    """The judge could not be asked: endpoint unreachable, an HTTP error, a reply without a message."""


class TransientError(Exception):
    """A failed request that a retry may cure; never leaves OpenAIBackend (it becomes a scrubbed JudgeError)."""


# ---- prompts ---------------------------------------------------------------------------------------

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


# ---- queries and the reply cache -------------------------------------------------------------------

@dataclass(frozen=True)
class Query:
    """One judge call. temperature None is greedy decoding; `sample` tells sampled replies of one prompt apart."""

    prompt: str
    max_new_tokens: int
    temperature: float | None = None
    seed: int | None = None
    sample: int = 0


def reply_key(judge_id: Mapping, query: Query) -> str:
    """The cache key: everything that decides the reply, and nothing that does not (not the endpoint's URL)."""
    fields = {"judge": dict(judge_id), "prompt": query.prompt, "max_new_tokens": query.max_new_tokens,
              "temperature": query.temperature, "seed": query.seed, "sample": query.sample}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


class ReplyCache:
    """Replies by key in an append-only JSONL file: each reply is on disk as soon as it arrives, so a killed
    run keeps what it paid for. Only keys and reply texts are stored (no prompt, URL or key)."""

    def __init__(self, path: Path = CACHE):
        self.path = path
        self.replies: dict[str, str] = {}
        self.torn_end = False  # the last line lacks its newline: the next one must not be glued to it
        if path.is_file():
            self._load(path.read_text(encoding="utf-8"))

    def _load(self, text: str) -> None:
        unreadable = 0
        for line in text.splitlines():
            try:
                entry = json.loads(line)
                if not isinstance(entry.get("reply"), str):
                    raise TypeError
                self.replies[entry["key"]] = entry["reply"]
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                unreadable += 1
        self.torn_end = bool(text) and not text.endswith("\n")
        if unreadable:  # a line torn by a killed run: its reply is simply asked for again
            log.warning("%s: %d unreadable lines ignored; those replies will be requested again", self.path,
                        unreadable)

    def __contains__(self, key: str) -> bool:
        return key in self.replies

    def __getitem__(self, key: str) -> str:
        return self.replies[key]

    def add(self, key: str, reply: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write("\n" * self.torn_end + json.dumps({"key": key, "reply": reply}, ensure_ascii=False) + "\n")
        self.torn_end = False
        self.replies[key] = reply


def answer(queries: Iterable[Query], judge_id: Mapping, cache: ReplyCache,
           make_backend: Callable[[], Backend]) -> tuple[dict[Query, str], dict]:
    """A reply for every query, from the cache where it has one; the backend is built only if something is missing."""
    keys = {query: reply_key(judge_id, query) for query in queries}
    missing = list({keys[q]: q for q in keys if keys[q] not in cache}.values())
    if missing:
        for query, reply in make_backend().replies(missing):
            cache.add(keys[query], reply)
    counts = {"total": len(set(keys.values())), "requested": len(missing),
              "from_cache": len(set(keys.values())) - len(missing)}
    return {q: cache[k] for q, k in keys.items()}, counts


# ---- backends --------------------------------------------------------------------------------------

class Backend:
    def replies(self, queries: Sequence[Query]) -> Iterator[tuple[Query, str]]:
        raise NotImplementedError


class OpenAIBackend(Backend):
    """POST {url}/chat/completions with the standard library; the key only in the Authorization header."""

    def __init__(self, judge: Mapping, environ: Mapping[str, str] = os.environ):
        self.model = judge["model"]
        self.where = f"the judge endpoint in ${judge['url_env']}"
        self.base = environ[judge["url_env"]].strip()
        self.key = environ.get(judge["key_env"], "").strip() or None
        self.timeout = judge["timeout_s"]
        self.retries = judge["retries"]

    def replies(self, queries: Sequence[Query]) -> Iterator[tuple[Query, str]]:
        from tqdm import tqdm

        for query in tqdm(queries, desc="judge requests", unit="request"):
            yield query, self.complete(query)

    def body(self, query: Query) -> dict:
        body = {"model": self.model, "messages": [{"role": "user", "content": query.prompt}],
                "max_tokens": query.max_new_tokens, "temperature": query.temperature or 0.0}
        if query.seed is not None:  # servers that honour a seed return the same sample on a cache-less rerun
            body["seed"] = query.seed + query.sample
        return body

    def complete(self, query: Query) -> str:
        data = self.post(self.body(query))
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise JudgeError(self.scrub(f"{self.where}: reply has no choices[0].message.content: "
                                        f"{json.dumps(data)[:ERROR_BODY_CHARS]}")) from None
        return content or ""  # a refusal or an empty message is an (invalid) reply, not a transport error

    def post(self, body: dict) -> dict:
        request = self.request(body)
        for attempt in range(self.retries + 1):
            try:
                raw = self.send(request)
                break
            except TransientError as exc:
                if attempt == self.retries:
                    message = f"{self.where}: no answer in {attempt + 1} attempt(s): {exc}"
                    raise JudgeError(self.scrub(message)) from None
                wait = BACKOFF_S * 2 ** attempt
                log.warning("%s", self.scrub(f"{self.where}: {exc}; retrying in {wait:.0f} s"))
                time.sleep(wait)
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            raise JudgeError(self.scrub(f"{self.where}: reply is not JSON: "
                                        f"{raw[:ERROR_BODY_CHARS].decode('utf-8', 'replace')}")) from None

    def request(self, body: dict) -> urllib.request.Request:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        return urllib.request.Request(self.base.rstrip("/") + "/chat/completions",
                                      data=json.dumps(body).encode("utf-8"), headers=headers, method="POST")

    def send(self, request: urllib.request.Request) -> bytes:
        """The response body; TransientError for what a retry may cure (no connection, timeout, HTTP 429, 5xx)."""
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            problem = f"HTTP {exc.code} {exc.reason}: {exc.read()[:ERROR_BODY_CHARS].decode('utf-8', 'replace')}"
            if exc.code == 429 or exc.code >= 500:
                raise TransientError(problem) from None
            raise JudgeError(self.scrub(f"{self.where}: {problem}")) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise TransientError(str(getattr(exc, "reason", exc))) from None

    def scrub(self, text: str) -> str:
        """Every message leaving this class: the key and the URL (it may carry credentials) replaced."""
        for secret, shown in ((self.key, "***"), (self.base, "<url>")):
            if secret:
                text = text.replace(secret, shown)
        return text


class HFBackend(Backend):
    """A local causal LM through its chat template, batched and seeded (runtime.setup)."""

    def __init__(self, folder: str, params: dict):
        from sumrl import runtime
        from sumrl.data.prompts import PromptFormat
        from sumrl.models.load import load_policy, load_tokenizer

        compute = params["compute"]
        device = runtime.setup(params["seed"], compute["threads"], compute["device"])
        self.tokenizer = load_tokenizer(folder, compute["trust_remote_code"])
        # The judge's prompt is one user turn; PromptFormat with no instruction is exactly that plus the header.
        self.format = PromptFormat(self.tokenizer, instruction="", use_chat_template=True)
        if not self.format.chat:
            raise JudgeError(f"{folder}: the judge model has no chat template; set judge.model to an "
                             "instruction-tuned model")
        self.model = load_policy(folder, params, device).eval()
        self.batch_size = params["judge"]["batch_size"]

    def replies(self, queries: Sequence[Query]) -> Iterator[tuple[Query, str]]:
        from tqdm import tqdm

        from sumrl.generation import generate

        by_settings: dict[tuple, list[Query]] = {}
        for query in queries:  # generate() takes one decoding setting per call
            by_settings.setdefault((query.max_new_tokens, query.temperature), []).append(query)
        for (max_new_tokens, temperature), group in by_settings.items():
            for start in tqdm(range(0, len(group), self.batch_size), desc="judge", unit="batch"):
                batch = group[start:start + self.batch_size]
                out = generate(self.model, self.tokenizer, [self.format.prompt(q.prompt) for q in batch],
                               max_new_tokens=max_new_tokens, do_sample=temperature is not None,
                               temperature=temperature or 1.0)
                yield from zip(batch, out.texts)


def folder_fingerprint(folder: Path) -> str:
    """sha256 over every file of a model folder: a retrained models/base must not reuse the old judge's replies."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode("utf-8") + b"\0")
        with open(path, "rb") as fh:
            while chunk := fh.read(HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def hf_model_path(judge: Mapping) -> str:
    path = judge["model"] or stages.BASE
    looks_local = path == stages.BASE or path.startswith(("./", "/", "../")) or Path(path).exists()
    if looks_local and not Path(path).is_dir():
        raise FileNotFoundError(f"{path}: judge model folder not found (judge.model)")
    return path


def judge_backend(params: dict, environ: Mapping[str, str] = os.environ) -> tuple[dict, Callable[[], Backend]]:
    """The judge's identity (what the cache key and the report name) and a factory for its backend."""
    judge = params["judge"]
    if judge["backend"] == "openai":
        return {"backend": "openai", "model": judge["model"]}, lambda: OpenAIBackend(judge, environ)
    path = hf_model_path(judge)
    # A hub id is named by itself (its revision may move; pin one by downloading it to a folder).
    identity = {"backend": "hf", "model": path}
    if Path(path).is_dir():
        identity["sha256"] = folder_fingerprint(Path(path))
    return identity, lambda: HFBackend(path, params)


# ---- the measurements ------------------------------------------------------------------------------

TEXT_FIELDS = ("document", "summary", "reference")


def read_policy_rows(policy: str, max_rows: int | None) -> list[dict]:
    path = stages.GENERATIONS.format(policy=policy)
    rows = read_jsonl(path)
    if not rows:
        raise DataError(f"{path}: no generations to judge")
    for lineno, row in enumerate(rows, 1):
        missing = ["id"] * (row.get("id") is None) + [f for f in TEXT_FIELDS if not isinstance(row.get(f), str)]
        if missing:
            raise DataError(f"{path}: line {lineno}: missing or non-text field(s) {missing}; "
                            f"rerun `sumrl generate --policy {policy}`")
    return rows[:max_rows]


def opponents(rows: list[dict], against: str, sft_rows: dict[str, dict]) -> list[str]:
    if against == REFERENCE:
        return [row["reference"] for row in rows]
    missing = [row["id"] for row in rows if row["id"] not in sft_rows]
    if missing:
        raise DataError(f"{stages.GENERATIONS.format(policy='sft')}: no summary for test ids {missing[:5]}; "
                        "judge.against: sft needs the SFT summary of every judged row")
    return [sft_rows[row["id"]]["summary"] for row in rows]


def pairwise_queries(rows: list[dict], rivals: list[str], max_new_tokens: int) -> list[tuple[Query, Query]]:
    """(policy as A, policy as B) per row; always greedy: a verdict is a choice, not a sample."""
    return [(Query(pairwise_prompt(row["document"], row["summary"], rival), max_new_tokens),
             Query(pairwise_prompt(row["document"], rival, row["summary"]), max_new_tokens))
            for row, rival in zip(rows, rivals, strict=True)]


def geval_queries(documents: list[str], summaries: list[str], judge: Mapping, seed: int) -> list[list[Query]]:
    """judge.samples queries per summary: one greedy, or several sampled at judge.temperature."""
    n = judge["samples"]
    temperature, seed_or_none = (None, None) if n == 1 else (judge["temperature"], seed)
    return [[Query(geval_prompt(doc, summary), judge["max_new_tokens"], temperature, seed_or_none, i)
             for i in range(n)] for doc, summary in zip(documents, summaries, strict=True)]


def pairwise_result(pairs: list[tuple[Query, Query]], replies: Mapping[Query, str]) -> tuple[dict, list[str]]:
    from sumrl.evaluate.metrics import mean_stderr

    outcomes, invalid = [], []
    for first, second in pairs:
        verdicts = [parse_verdict(replies[q]) for q in (first, second)]
        invalid += [replies[q] for q, v in zip((first, second), verdicts) if v is None]
        outcomes.append(pair_outcome(*verdicts))
    valid = [o for o in outcomes if o is not None]
    rate, se = mean_stderr(valid) if valid else (None, None)
    return {"pairs": len(outcomes), "valid": len(valid), "invalid": len(outcomes) - len(valid),
            "invalid_replies": len(invalid), "wins": valid.count(1.0), "ties": valid.count(0.5),
            "losses": valid.count(0.0), "win_rate": rate, "win_rate_se": se}, invalid


def geval_result(queries: list[list[Query]], replies: Mapping[Query, str]) -> tuple[dict, list[str]]:
    from sumrl.evaluate.metrics import mean, mean_stderr

    per_summary, invalid = [], []
    for samples in queries:
        scores = [parse_score(replies[q]) for q in samples]
        invalid += [replies[q] for q, s in zip(samples, scores) if s is None]
        valid = [s for s in scores if s is not None]
        if valid:
            per_summary.append(mean(valid))
    score, se = mean_stderr(per_summary) if per_summary else (None, None)
    return {"summaries": len(queries), "scored": len(per_summary), "unscored": len(queries) - len(per_summary),
            "replies": sum(map(len, queries)), "invalid_replies": len(invalid), "mean": score, "se": se}, invalid


def log_invalid(name: str, what: str, invalid: list[str]) -> None:
    if invalid:
        shown = "; ".join(repr(r[:80]) for r in invalid[:SHOWN_INVALID])
        log.warning("%s %s: %d replies did not parse (counted as invalid), e.g. %s", name, what, len(invalid), shown)


# ---- the stage -------------------------------------------------------------------------------------

def write_disabled() -> None:
    write_json(stages.JUDGE, {"enabled": False})
    log.info("judge.enabled is false: wrote %s without judging", stages.JUDGE)


def build_queries(params: dict, rows: dict[str, list[dict]]) -> tuple[dict, dict]:
    """Pairwise queries per judged policy, and G-Eval queries per policy plus the references."""
    judge, seed = params["judge"], params["seed"]
    against = judge["against"]
    sft_rows = {row["id"]: row for row in read_policy_rows("sft", None)} if against == "sft" else {}
    # Against SFT, SFT would be judged against itself: it gets a G-Eval score and no win rate.
    pairs = {p: pairwise_queries(r, opponents(r, against, sft_rows), judge["max_new_tokens"])
             for p, r in rows.items() if not (against == "sft" and p == "sft")}
    scores = {p: geval_queries([x["document"] for x in r], [x["summary"] for x in r], judge, seed)
              for p, r in rows.items()}
    anchor = next(iter(rows.values()))  # every policy's file holds the same test rows and references
    scores[REFERENCE] = geval_queries([x["document"] for x in anchor], [x["reference"] for x in anchor], judge, seed)
    return pairs, scores


def all_queries(pairs: dict, scores: dict) -> list[Query]:
    return ([q for per in pairs.values() for two in per for q in two]
            + [q for per in scores.values() for samples in per for q in samples])


def results(pairs: dict, scores: dict, replies: Mapping[Query, str]) -> dict[str, dict]:
    """name -> {"pairwise": ... or None, "geval": ...} for every policy and the references."""
    out = {}
    for name in scores:
        entry = out[name] = {"pairwise": None}
        if name in pairs:
            entry["pairwise"], invalid = pairwise_result(pairs[name], replies)
            log_invalid(name, "pairwise", invalid)
        entry["geval"], invalid = geval_result(scores[name], replies)
        log_invalid(name, "G-Eval", invalid)
    return out


def run(params: dict, args=None) -> None:
    judge = params["judge"]
    if not judge["enabled"]:
        return write_disabled()
    rows = {p: read_policy_rows(p, judge["max_rows"]) for p in stages.policies(params)}
    pairs, scores = build_queries(params, rows)
    identity, make_backend = judge_backend(params)
    replies, counts = answer(all_queries(pairs, scores), identity, ReplyCache(), make_backend)
    log.info("judge %s %s: %d replies, %d from cache, %d requested", identity["backend"], identity["model"],
             counts["total"], counts["from_cache"], counts["requested"])
    write_json(stages.JUDGE, {"enabled": True, "judge": identity, "against": judge["against"],
                              "rows": len(next(iter(rows.values()))), "samples": judge["samples"],
                              "replies": counts, "policies": results(pairs, scores, replies)})
    log.info("wrote %s", stages.JUDGE)
