"""`sumrl evaluate --policy NAME`: ROUGE, reward, KL to SFT, length and EOS rate of one policy's generations.

The metric functions at the top are pure (strings, lists, tensors in; numbers out) so tests can check them
by hand; `run` only loads models and files around them. Output: reports/eval/<policy>.json with the means
under "metrics" and one entry per test example under "examples" (the report's sample table reads those).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from sumrl import runtime, stages
from sumrl.artifacts import DataError, read_jsonl, write_json
from sumrl.config import Config
from sumrl.data.prompts import PromptFormat
from sumrl.evaluate.generate import max_prompt_tokens
from sumrl.models.load import load_policy, load_reward_model, load_tokenizer
from sumrl.models.scoring import completion_logprobs, score_texts
from sumrl.rl.advantages import sequence_kl  # the same estimate the RL loop uses (one place)

log = logging.getLogger(__name__)

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


# ---- pure metric functions -------------------------------------------------------------------------

def rouge_scorer():
    from rouge_score import rouge_scorer as rs

    return rs.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def rouge_f1(prediction: str, references: Sequence[str], scorer=None) -> dict[str, float]:
    """ROUGE-1/2/L F1 of one prediction; with several references, the best reference per metric."""
    if not references:
        raise ValueError("rouge_f1: no reference summary")
    scorer = scorer or rouge_scorer()
    scores = [scorer.score(ref, prediction) for ref in references]
    return {kind: float(max(s[kind].fmeasure for s in scores)) for kind in ROUGE_TYPES}


def mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if len(values) else math.nan


def sample_std(values: Sequence[float]) -> float | None:
    """Standard deviation with ddof=1; None where n < 2 leaves it undefined."""
    n = len(values)
    if n < 2:
        return None
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (n - 1))


def mean_stderr(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and its standard error sample_std / sqrt(n)."""
    std = sample_std(values)
    return mean(values), None if std is None else std / math.sqrt(len(values))




def eos_rate(has_eos: Sequence[bool]) -> float:
    return mean([float(bool(x)) for x in has_eos])


# ---- model passes ----------------------------------------------------------------------------------

def reward_texts(fmt: PromptFormat, rows: list[dict]) -> list[str]:
    """prompt + summary + EOS: the text shape the reward model was trained on."""
    return [row["prompt"] + fmt.completion(row["summary"]) for row in rows]


def completion_batch(tokenizer, rows: list[dict], prompt_limit: int, device) -> tuple[torch.Tensor, ...]:
    """[left-padded prompt | right-padded generated tokens], the attention mask, and the completion mask."""
    tokenizer.padding_side = "left"
    enc = tokenizer([r["prompt"] for r in rows], return_tensors="pt", padding=True, add_special_tokens=False,
                    truncation=True, max_length=prompt_limit)
    width = max(1, max(len(r["completion_ids"]) for r in rows))
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row["completion_ids"])
        ids[i, :n] = torch.tensor(row["completion_ids"], dtype=torch.long)
        mask[i, :n] = 1
    input_ids = torch.cat([enc["input_ids"], ids], 1).to(device)
    attention = torch.cat([enc["attention_mask"], mask], 1).to(device)
    return input_ids, attention, mask.to(device)


@torch.no_grad()
def kl_per_example(policy, reference, tokenizer, rows: list[dict], batch_size: int, prompt_limit: int,
                   device) -> list[float]:
    """sequence_kl of each row's generated tokens under `policy` versus `reference`."""
    out: list[float] = []
    for start in tqdm(range(0, len(rows), batch_size), desc="KL to SFT", unit="batch"):
        input_ids, attention, mask = completion_batch(tokenizer, rows[start:start + batch_size], prompt_limit, device)
        width = mask.size(1)
        logp = completion_logprobs(policy, input_ids, attention, width)
        ref_logp = completion_logprobs(reference, input_ids, attention, width)
        out.extend(sequence_kl(logp, ref_logp, mask).cpu().tolist())
    return out


def reward_per_example(cfg: Config, rows: list[dict], device) -> tuple[dict[str, list[float]], dict]:
    """The RM's reward (and sigma) of each row's summary and of its human reference, on the same input:
    the reference's score is what the report's win rate against the reference compares with."""
    reward_model, meta = load_reward_model(stages.REWARD, cfg, device)
    tokenizer = load_tokenizer(stages.REWARD, cfg.compute.trust_remote_code)
    fmt = PromptFormat.from_params(tokenizer, cfg)
    batch_size = cfg.evaluate.batch_size
    rewards, sigmas = score_texts(reward_model, tokenizer, reward_texts(fmt, rows), meta["kind"], batch_size)
    references = [{"prompt": row["prompt"], "summary": row["reference"]} for row in rows]
    reference_rewards, _ = score_texts(reward_model, tokenizer, reward_texts(fmt, references), meta["kind"], batch_size)
    return {"reward": rewards.tolist(), "sigma": sigmas.tolist(), "reference_reward": reference_rewards.tolist()}, meta


def kl_to_sft_per_example(cfg: Config, policy_name: str, tokenizer, rows: list[dict], device) -> list[float]:
    folder = stages.policy_dir(policy_name)
    policy = load_policy(folder, cfg, device).eval()
    reference = load_policy(stages.SFT, cfg, device).eval()
    return kl_per_example(policy, reference, tokenizer, rows, cfg.evaluate.batch_size, max_prompt_tokens(cfg), device)


# ---- assembling the eval file ----------------------------------------------------------------------

def example_records(rows: list[dict], scores: dict[str, list[float]], kls: list[float],
                    ref_lengths: list[int]) -> list[dict]:
    scorer = rouge_scorer()
    return [
        {"id": row["id"], **rouge_f1(row["summary"], row.get("references") or [row["reference"]], scorer),
         "reward": r, "sigma": s, "kl_to_sft": kl, "length": row["length"], "has_eos": row["has_eos"],
         "reference_reward": ref_r, "reference_length": ref_n}
        for row, r, s, ref_r, kl, ref_n in zip(rows, scores["reward"], scores["sigma"], scores["reference_reward"],
                                                kls, ref_lengths, strict=True)
    ]


def aggregate(examples: list[dict], probabilistic: bool) -> dict:
    """The policy's row of the comparison table."""
    column = lambda key: [e[key] for e in examples]  # noqa: E731
    reward, reward_se = mean_stderr(column("reward"))
    kl, kl_se = mean_stderr(column("kl_to_sft"))
    return {
        **{kind: mean(column(kind)) for kind in ROUGE_TYPES},
        "reward": reward,
        "reward_se": reward_se,
        # A scalar head has no spread; null keeps "not measured" apart from "zero uncertainty".
        "sigma": mean(column("sigma")) if probabilistic else None,
        "kl_to_sft": kl,
        "kl_to_sft_se": kl_se,
        "length": mean(column("length")),
        "reference_length": mean(column("reference_length")),
        "eos_rate": eos_rate(column("has_eos")),
    }


def run(params: dict, args) -> None:
    policy = args.policy
    cfg = Config.of(params)
    device = runtime.setup(cfg.seed, cfg.compute.threads, cfg.compute.device)
    generations = stages.GENERATIONS.format(policy=policy)
    rows = read_jsonl(generations)
    if not rows:
        raise DataError(f"{generations}: no generations to evaluate")
    if any("completion_ids" not in row for row in rows):
        raise DataError(f"{generations}: rows without completion_ids; rerun `sumrl generate --policy {policy}`")
    scores, meta = reward_per_example(cfg, rows, device)
    tokenizer = load_tokenizer(stages.policy_dir(policy), cfg.compute.trust_remote_code)
    kls = kl_to_sft_per_example(cfg, policy, tokenizer, rows, device)
    fmt = PromptFormat.from_params(tokenizer, cfg)
    examples = example_records(rows, scores, kls, fmt.completion_lengths([row["reference"] for row in rows]))
    result = {
        "policy": policy,
        "n": len(examples),
        "reward_model": {"kind": meta["kind"], "num_scores": meta.get("num_scores")},
        "metrics": aggregate(examples, meta["kind"] == "probabilistic"),
        "examples": examples,
    }
    out = Path(stages.EVAL.format(policy=policy))
    write_json(out, result)
    m = result["metrics"]
    log.info("%s: ROUGE-L %.3f, reward %.3f, KL to SFT %.3f, EOS rate %.2f",
             out, m["rougeL"], m["reward"], m["kl_to_sft"], m["eos_rate"])
