"""Model cards: one Hugging Face model card per policy, written by the report stage to
reports/cards/<policy>/README.md, and uploaded as the model's README by `sumrl push`.

The card's metadata is huggingface_hub's ModelCardData (base_model, datasets, library_name, pipeline_tag, tags);
its body says how the policy was trained (the stage chain and the params that decided it, the git revision), its
evaluation figures (the same numbers as reports/metrics.json) and its limitations, plainly: a reward model
trained on generated pairs, a small test set, a length-hacking flag.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from sumrl import stages
from sumrl.config import Config
from sumrl.params import select
from sumrl.report.inputs import Inputs

CARDS = Path("reports/cards")
# metrics.json key -> what the card calls it, in table order
CARD_METRICS = {
    "lc_reward_delta_vs_sft": "Reward vs SFT at equal length (Δ, length-controlled)",
    "win_rate_vs_sft": "Win rate vs SFT (reward model)",
    "win_rate_vs_reference": "Win rate vs the human reference (reward model)",
    "reward": "Mean reward",
    "rougeL": "ROUGE-L",
    "rouge1": "ROUGE-1",
    "kl_to_sft": "KL to SFT (nats per summary)",
    "length": "Mean length (tokens)",
    "length_vs_sft": "Length / SFT's",
    "eos_rate": "Ends with EOS",
}


def card_path(policy: str) -> Path:
    return CARDS / policy / "README.md"


def git_revision() -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else "unknown (not a git checkout)"


def _hub_id(name: str | None) -> str | None:
    """A hub id (`org/name`) for the card's base_model, or None for a local folder or a packaged GGUF file."""
    if not name or name.startswith(("gguf:", ".", "/")) or name.count("/") != 1 or Path(name).exists():
        return None
    return name


def _chain(policy: str, inputs: Inputs) -> str:
    if policy == "base":
        return "the base model, untrained (`model.base`)"
    if policy == "sft":
        return "base model -> SFT (LoRA, merged)"
    method = inputs.methods[policy]
    return f"base model -> SFT (LoRA, merged) -> {method} (LoRA on the SFT weights, merged)"


def _params_used(policy: str, params: dict, inputs: Inputs) -> dict:
    """The params keys that decided this policy: its training stage's table keys (flattened to leaves)."""
    if policy == "base":
        return select(params, ["model.base", "model.dtype"])
    if policy == "sft":
        return stages.result_params("sft", params)
    return stages.result_params("rl", params, method=inputs.methods[policy])


def _figure(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    if value is None:
        return "n/a"
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    if f"{key}_low" in metrics and metrics.get(f"{key}_low") is not None:
        text += f" [{metrics[f'{key}_low']:.4g}, {metrics[f'{key}_high']:.4g}] (95% CI)"
    elif metrics.get(f"{key}_se") is not None:
        text += f" ± {metrics[f'{key}_se']:.3g} (s.e.)"
    return text


def _limitations(policy: str, metrics: dict, cfg: Config, inputs: Inputs) -> list[str]:
    out = []
    if cfg.pairs.source == "generated":
        out.append("The reward model that scores this policy (and that RL optimized) was trained on **generated** "
                   "pairs (the human reference against a made-worse summary), not on human preference judgements: "
                   "its rewards are a proxy, and the win rates above are the reward model's, not people's.")
    out.append(f"Evaluated on {metrics.get('n', '?')} test documents: the intervals are wide.")
    if metrics.get("length_hacking"):
        out.append("**Length-hacking flag set**: the reward gain over SFT is not significant at equal length, or "
                   "the summaries' length moved more than 25% from SFT's. Read the reward gain as a length effect.")
    if policy == "base":
        out.append("The base model was not trained for this task.")
    return out


def model_card(policy: str, metrics: dict, params: dict, inputs: Inputs, revision: str) -> ModelCard:
    cfg = Config.of(params)
    method = inputs.methods.get(policy, policy)
    data = ModelCardData(
        base_model=_hub_id(cfg.model.base),
        datasets=[cfg.data.path] if cfg.data.source == "hf" else None,
        library_name="transformers",
        pipeline_tag="summarization",
        tags=["sumrl", "summarization", *(["rlhf"] if policy not in ("base", "sft") else []), method],
    )
    rows = "\n".join(f"| {label} | {_figure(metrics, key)} |" for key, label in CARD_METRICS.items()
                     if key in metrics)
    used = "\n".join(f"- `{key}`: `{value}`" for key, value in _params_used(policy, params, inputs).items())
    data_source = cfg.data.path or cfg.data.source
    body = "\n".join([
        "---", data.to_yaml(), "---", "",
        f"# sumrl `{policy}`", "",
        f"A summarization policy trained by sumrl ({_chain(policy, inputs)}), from "
        f"`{cfg.model.base}`, on `{data_source}`.", "",
        "## Evaluation", "",
        "On the test split, every policy on the same inputs; the same figures as `reports/metrics.json` "
        "(README, \"Trustworthy results\", says how to read them).", "",
        "| measure | value |", "|---|---|", rows, "",
        "## Training", "",
        f"- Stage chain: {_chain(policy, inputs)}.",
        f"- Git revision: `{revision}`.",
        "- The params that decided it (the stage table's keys for its training stage):", "", used, "",
        "## Limitations", "",
        *(f"- {line}" for line in _limitations(policy, metrics, cfg, inputs)), "",
    ])
    return ModelCard(body)


def write_cards(summary: dict[str, dict], params: dict, inputs: Inputs, folder: Path) -> list[str]:
    """A card per policy under `folder` (the report stage's reports/cards, written atomically by the caller)."""
    revision = git_revision()
    for policy in inputs.policies:
        path = folder / policy / "README.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        model_card(policy, summary[policy], params, inputs, revision).save(path)
    return list(inputs.policies)
