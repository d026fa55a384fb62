"""`sumrl generate --policy NAME`: one summary per test document, written to reports/generations/<policy>.jsonl.

Every policy is prompted through the same PromptFormat the training stages use, so the table compares
policies and not prompts. Each row keeps the generated token ids: evaluation scores log-probabilities of
exactly the tokens the policy produced, not of a re-tokenization of the decoded text (which need not match).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from tqdm import tqdm

from sumrl import runtime, stages
from sumrl.artifacts import read_jsonl, write_jsonl
from sumrl.config import Config, GenerateConfig
from sumrl.data.prompts import PromptFormat
from sumrl.generation import generate
from sumrl.models.load import load_policy, load_tokenizer
from sumrl.params import PROMPT_TEMPLATE_TOKENS

log = logging.getLogger(__name__)

TEST_SPLIT = Path(stages.PREPARED) / "test.jsonl"


def references_of(row: dict) -> list[str]:
    """The row's summary first, then any further references, without repeats."""
    return list(dict.fromkeys([row["summary"], *row.get("references", [])]))


def max_prompt_tokens(params: Config | Mapping) -> int:
    return Config.of(params).data.max_document_tokens + PROMPT_TEMPLATE_TOKENS


def warn_if_truncated(tokenizer, prompts: list[str], limit: int) -> None:
    # prepare_data already caps documents, so a prompt over the limit means the template or instruction
    # grew: say so, because truncation drops the end of the prompt (the assistant header).
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    over = sum(n > limit for n in lengths)
    if over:
        log.warning("%d of %d prompts exceed %d tokens and are truncated (longest: %d)",
                    over, len(prompts), limit, max(lengths))


def generation_rows(model, tokenizer, fmt: PromptFormat, tests: list[dict], gen: GenerateConfig, prompt_limit: int,
                    desc: str = "generate") -> list[dict]:
    """Generate for `tests` in batches of generate.batch_size; one output row per test row, in order."""
    prompts = [fmt.prompt(row["document"]) for row in tests]
    warn_if_truncated(tokenizer, prompts, prompt_limit)
    size = gen.batch_size
    out = []
    for start in tqdm(range(0, len(tests), size), desc=desc, unit="batch"):
        batch = generate(
            model, tokenizer, prompts[start:start + size], max_new_tokens=gen.max_new_tokens,
            do_sample=gen.do_sample, temperature=gen.temperature, max_prompt_tokens=prompt_limit,
        )
        for i, text in enumerate(batch.texts):
            row = tests[start + i]
            n = int(batch.lengths[i])
            out.append({
                "id": row["id"],
                "document": row["document"],
                "prompt": prompts[start + i],
                "summary": text,
                "reference": row["summary"],
                "references": references_of(row),
                "has_eos": bool(batch.has_eos[i]),
                "length": n,
                "completion_ids": batch.completion_ids[i, :n].tolist(),
            })
    return out


def run(params: dict, args) -> None:
    policy = args.policy
    cfg = Config.of(params)
    device = runtime.setup(cfg.seed, cfg.compute.threads, cfg.compute.device)
    folder = stages.policy_dir(policy)
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"{folder}: policy folder not found (policy '{policy}')")
    tests = read_jsonl(TEST_SPLIT)
    tokenizer = load_tokenizer(folder, cfg.compute.trust_remote_code)
    model = load_policy(folder, cfg, device).eval()
    fmt = PromptFormat.from_params(tokenizer, cfg)
    rows = generation_rows(model, tokenizer, fmt, tests, cfg.generate, max_prompt_tokens(cfg),
                           desc=f"generate {policy}")
    out = stages.GENERATIONS.format(policy=policy)
    write_jsonl(out, rows)
    log.info("%s: %d generations, EOS rate %.2f", out, len(rows), sum(r["has_eos"] for r in rows) / max(len(rows), 1))
