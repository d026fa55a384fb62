"""Who answers: a local transformers model (hf) or an OpenAI-compatible endpoint (openai)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from sumrl import stages
from sumrl.config import Config, JudgeConfig
from sumrl.evaluate.judge.cache import Query

log = logging.getLogger(__name__)

BACKOFF_S = 1.0          # first retry wait; doubled per retry
ERROR_BODY_CHARS = 300   # of an endpoint's error body, in our error message
HASH_CHUNK = 1 << 20


class JudgeError(RuntimeError):
    """The judge could not be asked: endpoint unreachable, an HTTP error, a reply without a message."""


class TransientError(Exception):
    """A failed request that a retry may cure; never leaves OpenAIBackend (it becomes a scrubbed JudgeError)."""


class Backend:
    def replies(self, queries: Sequence[Query]) -> Iterator[tuple[Query, str]]:
        raise NotImplementedError


class OpenAIBackend(Backend):
    """POST {url}/chat/completions with the standard library; the key only in the Authorization header."""

    def __init__(self, judge: JudgeConfig, environ: Mapping[str, str] = os.environ):
        self.model = judge.model
        self.where = f"the judge endpoint in ${judge.url_env}"
        self.base = environ[judge.url_env].strip()
        self.key = environ.get(judge.key_env, "").strip() or None
        self.timeout = judge.timeout_s
        self.retries = judge.retries

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

    def __init__(self, folder: str, cfg: Config):
        from sumrl import runtime
        from sumrl.data.prompts import PromptFormat
        from sumrl.models.load import load_policy, load_tokenizer

        device = runtime.setup(cfg.seed, cfg.compute.threads, cfg.compute.device)
        self.tokenizer = load_tokenizer(folder, cfg.compute.trust_remote_code)
        # The judge's prompt is one user turn; PromptFormat with no instruction is exactly that plus the header.
        self.format = PromptFormat(self.tokenizer, instruction="", use_chat_template=True)
        if not self.format.chat:
            raise JudgeError(f"{folder}: the judge model has no chat template; set judge.model to an "
                             "instruction-tuned model")
        self.model = load_policy(folder, cfg, device).eval()
        self.batch_size = cfg.judge.batch_size

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


def hf_model_path(judge: JudgeConfig) -> str:
    path = judge.model or stages.BASE
    looks_local = path == stages.BASE or path.startswith(("./", "/", "../")) or Path(path).exists()
    if looks_local and not Path(path).is_dir():
        raise FileNotFoundError(f"{path}: judge model folder not found (judge.model)")
    return path


def judge_backend(cfg: Config, environ: Mapping[str, str] = os.environ) -> tuple[dict, Callable[[], Backend]]:
    """The judge's identity (what the cache key and the report name) and a factory for its backend."""
    judge = cfg.judge
    if judge.backend == "openai":
        return {"backend": "openai", "model": judge.model}, lambda: OpenAIBackend(judge, environ)
    path = hf_model_path(judge)
    # A hub id is named by itself (its revision may move; pin one by downloading it to a folder).
    identity = {"backend": "hf", "model": path}
    if Path(path).is_dir():
        identity["sha256"] = folder_fingerprint(Path(path))
    return identity, lambda: HFBackend(path, cfg)
