"""`sumrl judge`: the measurements per policy and the stage that writes reports/judge.json."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from sumrl import stages
from sumrl.artifacts import DataError, read_jsonl, write_json
from sumrl.config import Config, JudgeConfig
from sumrl.evaluate.judge.backends import judge_backend
from sumrl.evaluate.judge.cache import Query, ReplyCache, answer
from sumrl.evaluate.judge.prompts import geval_prompt, pair_outcome, pairwise_prompt, parse_score, parse_verdict

log = logging.getLogger(__name__)

REFERENCE = "reference"
SHOWN_INVALID = 3        # invalid replies quoted in the log per policy and measurement

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


def geval_queries(documents: list[str], summaries: list[str], judge: JudgeConfig, seed: int) -> list[list[Query]]:
    """judge.samples queries per summary: one greedy, or several sampled at judge.temperature."""
    n = judge.samples
    temperature, seed_or_none = (None, None) if n == 1 else (judge.temperature, seed)
    return [[Query(geval_prompt(doc, summary), judge.max_new_tokens, temperature, seed_or_none, i)
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


def build_queries(params: Config | Mapping, rows: dict[str, list[dict]]) -> tuple[dict, dict]:
    """Pairwise queries per judged policy, and G-Eval queries per policy plus the references."""
    cfg = Config.of(params)
    judge, seed = cfg.judge, cfg.seed
    against = judge.against
    sft_rows = {row["id"]: row for row in read_policy_rows("sft", None)} if against == "sft" else {}
    # Against SFT, SFT would be judged against itself: it gets a G-Eval score and no win rate.
    pairs = {p: pairwise_queries(r, opponents(r, against, sft_rows), judge.max_new_tokens)
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
    cfg = Config.of(params)
    judge = cfg.judge
    if not judge.enabled:
        return write_disabled()
    rows = {p: read_policy_rows(p, judge.max_rows) for p in stages.policies(params)}
    pairs, scores = build_queries(cfg, rows)
    identity, make_backend = judge_backend(cfg)
    replies, counts = answer(all_queries(pairs, scores), identity, ReplyCache(), make_backend)
    log.info("judge %s %s: %d replies, %d from cache, %d requested", identity["backend"], identity["model"],
             counts["total"], counts["from_cache"], counts["requested"])
    write_json(stages.JUDGE, {"enabled": True, "judge": identity, "against": judge.against,
                              "rows": len(next(iter(rows.values()))), "samples": judge.samples,
                              "replies": counts, "policies": results(pairs, scores, replies)})
    log.info("wrote %s", stages.JUDGE)
