"""Judge queries and the reply cache: a reply is paid for once, whatever reruns."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sumrl.evaluate.judge.backends import Backend

log = logging.getLogger(__name__)

CACHE = Path(".cache/judge/replies.jsonl")


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
