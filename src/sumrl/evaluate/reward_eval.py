"""`sumrl reward-eval`: how far the reward model agrees with preferences it never trained on, and whether it
prefers the shorter summary more often than the people did.

A reward model's accuracy on its own validation pairs cannot show a shortcut: those pairs share it. So each
preference set is scored three ways (reading-results.md, "How a reward model learns the shortcut"):
- pairwise accuracy (chosen scored above rejected) with its standard error;
- the share of pairs where the RM prefers the shorter side, next to the share where the label did;
- accuracy on the length-balanced subset: pairs whose two sides are within 10% in tokens.
Sets: the RM's own validation pairs (per negative kind when they were generated), and every file in
`reward.eval_pairs` (e.g. human comparisons from another source). Output: reports/reward_eval.json.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import torch

from sumrl import runtime, stages
from sumrl.artifacts import DataError, read_json, read_jsonl, write_json
from sumrl.config import Config, EvalPairsSpec
from sumrl.data.prompts import PromptFormat
from sumrl.data.sources import load_source
from sumrl.models.load import load_reward_model, load_tokenizer
from sumrl.models.scoring import score_texts

log = logging.getLogger(__name__)

OUT = Path("reports/reward_eval.json")
BALANCED = 0.10  # |len chosen - len rejected| <= 10% of the longer side


# ---- pure ---------------------------------------------------------------------------------------------

def share(flags: list[bool]) -> tuple[float | None, float | None]:
    """Mean of 0/1 flags and its binomial standard error; (None, None) without any."""
    n = len(flags)
    if not n:
        return None, None
    p = sum(flags) / n
    return p, math.sqrt(p * (1 - p) / n)


def preference_stats(chosen: list[float], rejected: list[float], chosen_len: list[int], rejected_len: list[int]
                     ) -> dict:
    """Accuracy, shorter-side preference of the RM and of the labels, and length-balanced accuracy."""
    correct = [c > r for c, r in zip(chosen, rejected)]
    unequal = [i for i, (a, b) in enumerate(zip(chosen_len, rejected_len)) if a != b]
    chosen_shorter = [chosen_len[i] < rejected_len[i] for i in unequal]
    # The RM prefers the side it scores higher: the chosen one exactly where it is correct.
    rm_shorter = [correct[i] == chosen_shorter[k] for k, i in enumerate(unequal)]
    balanced = [i for i, (a, b) in enumerate(zip(chosen_len, rejected_len)) if abs(a - b) <= BALANCED * max(a, b, 1)]
    accuracy, accuracy_se = share(correct)
    balanced_accuracy, balanced_se = share([correct[i] for i in balanced])
    return {
        "pairs": len(correct),
        "accuracy": accuracy,
        "accuracy_se": accuracy_se,
        "rm_prefers_shorter": share(rm_shorter)[0],
        "label_prefers_shorter": share(chosen_shorter)[0],
        "pairs_unequal_length": len(unequal),
        "length_balanced_pairs": len(balanced),
        "length_balanced_accuracy": balanced_accuracy,
        "length_balanced_accuracy_se": balanced_se,
        "mean_margin": sum(c - r for c, r in zip(chosen, rejected)) / len(correct) if correct else None,
    }


# ---- scoring ------------------------------------------------------------------------------------------

@torch.no_grad()
def score_pairs(model, tokenizer, fmt: PromptFormat, rows: list[dict], kind: str, batch_size: int) -> dict:
    """preference_stats of `rows` ({document, chosen, rejected}), scored as the RM was trained:
    prompt + summary + EOS; lengths in the RM tokenizer's tokens."""
    model.eval()
    prompts = [fmt.prompt(r["document"]) for r in rows]
    scores = {side: score_texts(model, tokenizer, [p + fmt.completion(r[side]) for p, r in zip(prompts, rows)],
                                kind, batch_size)[0].tolist() for side in ("chosen", "rejected")}
    lengths = {side: [len(ids) for ids in tokenizer([r[side] for r in rows], add_special_tokens=False)["input_ids"]]
               for side in ("chosen", "rejected")}
    return preference_stats(scores["chosen"], scores["rejected"], lengths["chosen"], lengths["rejected"])


def validation_sets(rows: list[dict]) -> dict[str, list[dict]]:
    """The RM's validation pairs, and, when they were generated, each negative kind alone."""
    sets = {"validation": rows}
    for kind in dict.fromkeys(r["negative"] for r in rows if "negative" in r):
        sets[f"validation:{kind}"] = [r for r in rows if r.get("negative") == kind]
    return sets


def eval_file_rows(spec: EvalPairsSpec, key: str) -> list[dict]:
    """The rows of one `reward.eval_pairs` entry, every split of it; a bad row is an error naming its line."""
    loaded = load_source(spec.source, spec.path, spec.hf_config, dataclasses.asdict(spec.fields))
    if loaded.problems:
        raise DataError(f"{key}: {len(loaded.problems)} unusable row(s); first: {loaded.problems[0].message()}")
    if not loaded.rows:
        raise DataError(f"{key}: no preference pairs in {spec.path}")
    return loaded.rows


def run(params: dict, args=None) -> None:
    cfg = Config.of(params)
    device = runtime.setup(cfg.seed, cfg.compute.threads, cfg.compute.device)
    model, meta = load_reward_model(stages.REWARD, cfg, device)
    tokenizer = load_tokenizer(stages.REWARD, cfg.compute.trust_remote_code)
    fmt = PromptFormat.from_params(tokenizer, cfg)
    batch_size = cfg.evaluate.batch_size
    sets = validation_sets(read_jsonl(Path(stages.PAIRS) / "validation.jsonl"))
    sources = {name: f"{stages.PAIRS}/validation.jsonl" for name in sets}
    for i, spec in enumerate(cfg.reward.eval_pairs):
        sets[spec.name] = eval_file_rows(spec, f"reward.eval_pairs[{i}] ({spec.name})")
        sources[spec.name] = spec.path
    results = {}
    for name, rows in sets.items():
        results[name] = {"source": sources[name], **score_pairs(model, tokenizer, fmt, rows, meta["kind"], batch_size)}
        log.info("%s: accuracy %.3f on %d pairs; RM prefers shorter %s, labels %s", name,
                 results[name]["accuracy"], len(rows), results[name]["rm_prefers_shorter"],
                 results[name]["label_prefers_shorter"])
    validation = results["validation"]
    write_json(OUT, {
        "kind": meta["kind"],
        "pairs_origin": pairs_origin(),
        "validation_pairs": validation["pairs"],
        "accuracy": validation["accuracy"],
        "accuracy_se": validation["accuracy_se"],
        "sets": results,
    })


def pairs_origin() -> str:
    card = Path(stages.PAIRS) / "card.json"
    return read_json(card).get("origin", "unknown") if card.is_file() else "unknown"
