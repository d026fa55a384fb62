"""Everything the report reads, gathered in one place.

Evaluation and generation files of the listed policies are required: a report that silently dropped a
policy would compare the wrong things. Everything else (reward-model evaluation, consolidation checks,
the pairs card, training curves) is optional: a missing file becomes a sentence in the report.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sumrl import stages
from sumrl.artifacts import DataError, read_json, read_jsonl
from sumrl.config import Config

REWARD_EVAL = Path("reports/reward_eval.json")
PAIRS_CARD = Path(stages.PAIRS) / "card.json"
JUDGE = Path(stages.JUDGE)
TRAINED_STAGES = ("sft", "reward")


@dataclass
class Inputs:
    policies: list[str]
    methods: dict[str, str]                 # RL policy -> method
    evals: dict[str, dict]                  # policy -> reports/eval/<policy>.json
    generations: dict[str, dict[str, dict]]  # policy -> example id -> generation row
    reward_eval: dict | None
    consolidation: dict[str, dict | None]   # sft, reward and each RL policy -> check file, None if absent
    pairs_card: dict | None
    curves: dict[str, dict[str, list[float]]]  # curve name (sft, reward, rl policy) -> column -> values
    judge: dict | None = None               # reports/judge.json when the judge ran (judge.enabled)


def curve_path(name: str) -> Path:
    return Path(stages.CURVES) / f"{name}.csv"


def rl_curve_name(policy: str) -> str:
    return f"rl_{policy}"


def consolidation_path(stage: str) -> Path:
    return Path(stages.CONSOLIDATION.format(stage=stage))


def read_optional_json(path: Path) -> dict | None:
    return read_json(path) if path.is_file() else None


def read_curve(path: Path) -> dict[str, list[float]]:
    """CSV columns as floats; empty cells (a column a method does not log) become NaN, which plots skip.

    A file without rows (a run that stopped before its first step) reads as {}.
    """
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    if not rows:
        return {}
    if "step" not in reader.fieldnames:
        raise DataError(f"{path}: no 'step' column; training curves are plotted against step")
    return {col: [_number(r[col], path, col) for r in rows] for col in reader.fieldnames}


def _number(text: str | None, path: Path, column: str) -> float:
    if text is None or text.strip() == "":
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise DataError(f"{path}: column '{column}': not a number: {text!r}") from None


def read_eval(policy: str) -> dict:
    path = Path(stages.EVAL.format(policy=policy))
    if not path.is_file():
        raise DataError(f"{path}: evaluation of policy '{policy}' not found; run `sumrl evaluate --policy {policy}`")
    ev = read_json(path)
    for key in ("metrics", "examples"):
        if key not in ev:
            raise DataError(f"{path}: no '{key}' entry; rerun `sumrl evaluate --policy {policy}`")
    return ev


def read_generations(policy: str) -> dict[str, dict]:
    path = Path(stages.GENERATIONS.format(policy=policy))
    if not path.is_file():
        raise DataError(f"{path}: generations of policy '{policy}' not found; run `sumrl generate --policy {policy}`")
    return {row["id"]: row for row in read_jsonl(path)}


def rl_methods(params: Config | Mapping) -> dict[str, str]:
    rl = Config.of(params).rl
    return {stages.rl_policy(m, s): m for m in rl.methods for s in rl.seeds}


def read_curves(names: list[str]) -> dict[str, dict[str, list[float]]]:
    curves = {name: read_curve(curve_path(name)) for name in names if curve_path(name).is_file()}
    return {name: curve for name, curve in curves.items() if curve}


def read_judge() -> dict | None:
    """The judge's results, or None when it is off (the default) or its file is absent: no section then."""
    judge = read_optional_json(JUDGE)
    if not judge or not judge.get("enabled"):
        return None
    if not isinstance(judge.get("policies"), dict) or "judge" not in judge:
        raise DataError(f"{JUDGE}: enabled but no 'judge' and 'policies' entries; rerun `sumrl judge`")
    return judge


def load_inputs(params: dict) -> Inputs:
    policies = stages.policies(params)
    methods = rl_methods(params)
    return Inputs(
        policies=policies,
        methods=methods,
        evals={p: read_eval(p) for p in policies},
        generations={p: read_generations(p) for p in policies},
        reward_eval=read_optional_json(REWARD_EVAL),
        consolidation={s: read_optional_json(consolidation_path(s))
                       for s in (*TRAINED_STAGES, *(p for p in policies if p not in stages.FIXED_POLICIES))},
        pairs_card=read_optional_json(PAIRS_CARD),
        curves=read_curves([*TRAINED_STAGES, *(rl_curve_name(p) for p in methods)]),
        judge=read_judge(),
    )
