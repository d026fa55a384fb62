"""`sumrl consolidate --stage sft|reward|<method>_s<seed>`: a training run -> one verified Hugging Face folder.

Reads models/<stage>_run/ (an RL run: models/rl_run/<method>_s<seed>/) with sumrl_run.json, checkpoint-N/
and final/, and the base model the manifest names (models/base; models/sft for an RL run); writes models/<stage>/
(models/rl/<method>_s<seed>/: safetensors, config, tokenizer; sumrl_reward.json for a reward model) and
reports/consolidate/<stage>.json.

The trained weights come from the last ZeRO checkpoint when the run used DeepSpeed (rebuilt in fp32 by
DeepSpeed's zero_to_fp32: the optimizer's master weights, not the bf16 copies a GPU run trains with), else
from final/ (what `trainer.save_model()` wrote). A LoRA adapter is merged into the base. Nothing is
trusted, since ZeRO-3 checkpoints are known to come back with layers missing:
  - the rebuilt weights must cover every trained tensor and equal what the engine saved in final/;
  - the written folder is reloaded: same parameter names, shapes, count and tied embeddings as the model
    in memory, the same weights, and logits on fixed inputs within TOLERANCE (relative to the largest logit) of
    the unmerged trained model.
Logits are compared in float64, where the model's own arithmetic adds no error, so what is left is what the
written weights change; the LoRA merge is done in float64 too and rounded to fp32 once, on saving.
Any failure raises ConsolidationError naming the file, and models/<stage>/ is not written.
"""

from __future__ import annotations

import logging
import pickle
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from sumrl.artifacts import DataError, atomic_path, read_json, write_json
from sumrl.config import Config
from sumrl.models.load import REWARD_META
from sumrl.scale.deepspeed import weights_only_torch_load
from sumrl.stages import CONSOLIDATION, trained_run

log = logging.getLogger(__name__)

RUN_MANIFEST = "sumrl_run.json"
FINAL = "final"
TASKS = {"causal_lm": AutoModelForCausalLM, "sequence_classification": AutoModelForSequenceClassification}
ZERO_STAGES = {"zero2": 2, "zero3": 3}
# Consolidation runs in fp32 (ZeRO master weights are fp32; loaders cast to model.dtype). A wrong merge or a
# lost layer moves logits by the adapter's effect (~2 on SmolLM2-135M). Weights, and the reloaded model's
# logits against the merged one, must agree to TOLERANCE absolute (they are exact). Against the *unmerged*
# trained model the logits are held to TOLERANCE relative to their largest magnitude: storing W + s B A in
# fp32 rounds every merged weight by up to half an ulp, which alone moved SmolLM2-135M's logits (|logit| up
# to ~30, 30 layers) by 1.4e-5 after a 4-step ZeRO-2 run; a full fine-tune has no merge and is exact.
TOLERANCE = 1e-5
PROBE = {"rows": 3, "tokens": 24, "seed": 0}


class ConsolidationError(DataError):
    """A run cannot be consolidated, or what was written does not match it; `report` holds the figures so far."""

    def __init__(self, message: str, report: dict | None = None):
        super().__init__(message)
        self.report = report or {}


@dataclass
class Trained:
    model: torch.nn.Module  # unmerged: a PeftModel for LoRA runs
    source: str  # "zero3 checkpoint-8" | "adapter" | "final"
    checkpoint: str | None
    source_diff: float  # max |weights used - weights the engine saved in final/|


def run(params: dict, args) -> None:
    from sumrl import runtime

    cfg = Config.of(params)
    runtime.setup(cfg.seed, cfg.compute.threads, "cpu")
    run_dir, out_dir, kind = trained_run(args.stage)
    report_path = Path(CONSOLIDATION.format(stage=args.stage))
    try:
        report = consolidate(Path(run_dir), Path(out_dir), kind, cfg.compute.trust_remote_code)
    except DataError as exc:  # ConsolidationError included; a report says why the folder is missing
        write_json(report_path, {**getattr(exc, "report", {}), "ok": False, "stage": args.stage, "error": str(exc)})
        raise
    write_json(report_path, report)
    log.info("consolidated %s -> %s (%s, max logit diff %.2e)", run_dir, out_dir, report["source"],
             report["max_logit_diff"])


def consolidate(run_dir: Path, out_dir: Path, stage: str, trust_remote_code: bool = False) -> dict:
    """Write `out_dir` from the run in `run_dir` and return the verification report; raise if any check fails."""
    started = time.time()
    manifest = read_manifest(run_dir, stage)
    base_dir = Path(manifest["base"])
    # The trained tokenizer (saved with the adapter in final/) carries the run's pad token: a reward model
    # pads with a non-EOS token so its head reads the EOS (sumrl.models.load.use_distinct_pad).
    trained_tok = run_dir / "final" / "tokenizer_config.json"
    tok_dir = trained_tok.parent if trained_tok.is_file() else base_dir
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir), trust_remote_code=trust_remote_code)
    base = load_base_model(manifest, tokenizer, trust_remote_code)
    trained = load_trained(base, manifest, run_dir)
    probe = probe_inputs(base.config)
    expected_logits = logits(trained.model, probe)
    effect = adapter_effect(trained.model, probe, expected_logits)
    merged = merge(trained.model.double()).float()  # W + s B A in float64, rounded to fp32 once
    merged_logits = logits(merged, probe)
    report = {
        "stage": stage,
        "task": manifest["task"],
        "source": trained.source,
        "checkpoint": trained.checkpoint,
        "lora": bool(manifest["lora"]),
        "tied_embeddings": tied(merged),
        "max_source_diff": trained.source_diff,
        "tolerance": TOLERANCE,
        "logits_dtype": "float64",
        "adapter_effect": effect,
        "probe": PROBE,
    }
    with atomic_path(out_dir, is_dir=True) as tmp:
        save_consolidated(merged, tokenizer, manifest, tmp)
        reloaded = reload(tmp, manifest, trust_remote_code)
        report.update(compare_weights(merged, reloaded))
        reloaded_logits = logits(reloaded, probe)
        report["max_reload_logit_diff"] = max_logit_diff(reloaded_logits, merged_logits)
        report["max_logit_diff"] = max_logit_diff(reloaded_logits, expected_logits)
        report["max_abs_logit"] = expected_logits.abs().max().item()
        report["logit_tolerance"] = TOLERANCE * max(1.0, report["max_abs_logit"])
        report["seconds"] = round(time.time() - started, 2)
        failures = failed_checks(report)
        report["ok"] = not failures
        if failures:
            raise ConsolidationError(f"{out_dir}: verification failed, not written: {'; '.join(failures)}", report)
    return report


# ---- reading the run ----------------------------------------------------------------------------------


def read_manifest(run_dir: Path, stage: str) -> dict:
    path = run_dir / RUN_MANIFEST
    manifest = read_json(path)
    missing = [k for k in ("stage", "task", "base", "deepspeed", "lora") if k not in manifest]
    if missing:
        raise ConsolidationError(f"{path}: missing keys {missing}")
    if manifest["stage"] != stage:
        raise ConsolidationError(f"{path}: a '{manifest['stage']}' run, but consolidating '{stage}'")
    if manifest["task"] not in TASKS:
        raise ConsolidationError(f"{path}: task '{manifest['task']}' is not one of {sorted(TASKS)}")
    if manifest["deepspeed"] not in ("none", *ZERO_STAGES):
        raise ConsolidationError(f"{path}: deepspeed '{manifest['deepspeed']}' is not none, zero2 or zero3")
    return manifest


def load_base_model(manifest: dict, tokenizer, trust_remote_code: bool) -> torch.nn.Module:
    """The untrained model of the run's task, in fp32; a reward model gets its (untrained) head here."""
    extra = {}
    if manifest["task"] == "sequence_classification":
        extra["num_labels"] = manifest.get("num_labels") or 1
    model = TASKS[manifest["task"]].from_pretrained(
        manifest["base"], dtype=torch.float32, trust_remote_code=trust_remote_code, use_safetensors=True, **extra
    )
    if manifest["task"] == "sequence_classification" or model.config.pad_token_id is None:
        # Sequence classification finds each row's last token through the pad id: it must be the one trained with.
        pad = tokenizer.pad_token_id
        model.config.pad_token_id = pad if pad is not None else tokenizer.eos_token_id
    return model


def load_trained(base: torch.nn.Module, manifest: dict, run_dir: Path) -> Trained:
    """The unmerged trained model, with its weights from the ZeRO checkpoint or from final/."""
    final = run_dir / FINAL
    saved = read_safetensors_folder(final)
    model = attach_adapter(base, final) if manifest["lora"] else base
    checkpoint = None
    if manifest["deepspeed"] in ZERO_STAGES:
        ckpt = last_checkpoint(run_dir, manifest)
        checkpoint = str(ckpt)
        weights = read_zero_checkpoint(ckpt, ZERO_STAGES[manifest["deepspeed"]])
        load_weights(model, without_aux_modules(weights, manifest), ckpt)
        source = f"{manifest['deepspeed']} {ckpt.name}"
    elif manifest["lora"]:
        source = "adapter"  # PeftModel.from_pretrained loaded final/; the comparison below catches dropped keys
    else:
        load_weights(model, saved, final)
        source = "final"
    return Trained(model, source, checkpoint, diff_against_saved(model, saved, final, manifest["lora"]))


def without_aux_modules(weights: dict[str, torch.Tensor], manifest: dict) -> dict[str, torch.Tensor]:
    """Drop what the engine trained beside the model (PPO's value head), named in sumrl_run.json's aux_modules."""
    prefixes = tuple(f"{name}." for name in manifest.get("aux_modules", ()))
    return {k: v for k, v in weights.items() if not k.startswith(prefixes)} if prefixes else weights


def attach_adapter(base: torch.nn.Module, final: Path):
    from peft import PeftModel

    if not (final / "adapter_config.json").is_file():
        raise ConsolidationError(f"{final / 'adapter_config.json'}: missing; sumrl_run.json says the run is LoRA")
    # is_trainable: the adapter (and a reward head in modules_to_save) is then exactly what requires grad,
    # which is the set of tensors a checkpoint must supply.
    return PeftModel.from_pretrained(base, str(final), is_trainable=True)


def read_safetensors_folder(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor in folder/*.safetensors (an adapter, one model file, or shards), by name."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ConsolidationError(f"{folder}: no *.safetensors file; expected the output of trainer.save_model()")
    tensors = {}
    for path in files:
        try:
            tensors.update(load_file(str(path)))
        except Exception as exc:  # safetensors raises its own error types for truncated headers and data
            raise ConsolidationError(f"{path}: unreadable safetensors file ({exc})") from exc
    return tensors


def last_checkpoint(run_dir: Path, manifest: dict) -> Path:
    name = manifest.get("last_checkpoint")
    if not name:
        steps = sorted((p for p in run_dir.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)),
                       key=lambda p: int(p.name.split("-")[1]))
        if not steps:
            raise ConsolidationError(f"{run_dir}: no checkpoint-N folder in a DeepSpeed run")
        return steps[-1]
    path = run_dir / name
    if not path.is_dir():
        raise ConsolidationError(f"{path}: missing (sumrl_run.json names it as the last checkpoint)")
    return path


# ---- ZeRO checkpoints --------------------------------------------------------------------------------


def read_zero_checkpoint(ckpt: Path, stage: int) -> dict[str, torch.Tensor]:
    """The fp32 weights of a ZeRO checkpoint, after checking that every rank's shard is there and readable.

    zero_to_fp32 itself counts only the optimizer shards and reports unreadable files without their names.
    """
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    tag = zero_tag(ckpt)
    check_shards(ckpt / tag, stage)
    try:
        with weights_only_torch_load():
            return get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag=tag)
    except Exception as exc:
        raise ConsolidationError(f"{ckpt / tag}: zero_to_fp32 could not rebuild the weights: {exc}") from exc


def zero_tag(ckpt: Path) -> str:
    latest = ckpt / "latest"
    if not latest.is_file():
        raise ConsolidationError(f"{latest}: missing; {ckpt} is not a DeepSpeed checkpoint")
    tag = latest.read_text().strip()
    if not (ckpt / tag).is_dir():
        raise ConsolidationError(f"{ckpt / tag}: missing (named by {latest})")
    return tag


def check_shards(tag_dir: Path, stage: int) -> None:
    """Raise, naming the file, if a rank's model or optimizer shard is missing or cannot be opened."""
    first = tag_dir / shard_names(stage, 0)[0]
    states = open_shard(first)
    world = int(states.get("dp_world_size", 1))
    saved_stage = int(states.get("ds_config", {}).get("zero_optimization", {}).get("stage", stage))
    if saved_stage != stage:
        raise ConsolidationError(f"{first}: a ZeRO-{saved_stage} checkpoint, but sumrl_run.json says zero{stage}")
    shards = {name: rank for rank in range(world) for name in shard_names(stage, rank)}
    shards.pop(first.name)  # opened above
    for name, rank in shards.items():
        open_shard(tag_dir / name, f"rank {rank} of {world}")


def shard_names(stage: int, rank: int) -> list[str]:
    """Model-state and optimizer-state files of one data-parallel rank (ZeRO-2 keeps one model file in all)."""
    model = f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt" if stage == 3 else "mp_rank_00_model_states.pt"
    return [model, f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"]


def open_shard(path: Path, which: str = "rank 0") -> dict:
    """Open a torch checkpoint file lazily (mmap): a truncated file fails here, its tensors are not read."""
    if not path.is_file():
        prefixed = path.with_name(f"bf16_{path.name}")  # DeepSpeed's bf16 optimizer names its shards so
        if not prefixed.is_file():
            raise ConsolidationError(f"{path}: missing ZeRO shard ({which})")
        path = prefixed
    try:
        with weights_only_torch_load():
            return torch.load(str(path), map_location="cpu", mmap=True)
    except pickle.UnpicklingError as exc:  # weights_only refused a global: not a plain DeepSpeed checkpoint
        raise ConsolidationError(f"{path}: ZeRO shard holds Python objects outside the allowlist; "
                                 f"not loaded ({exc})") from exc
    except Exception as exc:
        raise ConsolidationError(f"{path}: unreadable ZeRO shard, truncated or corrupted ({exc})") from exc


# ---- loading and comparing weights -------------------------------------------------------------------


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], where: Path) -> None:
    """Load `weights`; every parameter that training changes (requires_grad) must be among them."""
    _, unexpected = model.load_state_dict(weights, strict=False)
    absent = sorted(n for n, p in model.named_parameters() if p.requires_grad and n not in weights)
    if unexpected or absent:
        raise ConsolidationError(
            f"{where}: does not match the model: {len(absent)} trained tensors missing {absent[:3]}, "
            f"{len(unexpected)} unknown tensors {sorted(unexpected)[:3]}"
        )


def diff_against_saved(model, saved: dict[str, torch.Tensor], where: Path, lora: bool) -> float:
    """Max |model - final/| over the tensors final/ holds, compared in final/'s dtype (a bf16 run saves bf16)."""
    if lora:
        from peft import get_peft_model_state_dict

        current = get_peft_model_state_dict(model)
        required = set(current)
    else:
        current = model.state_dict()
        required = {n for n, _ in model.named_parameters()}  # tied duplicates are listed once, as saved
    unknown = sorted(set(saved) - set(current))
    absent = sorted(required - set(saved))
    if unknown or absent:
        raise ConsolidationError(
            f"{where}: tensors do not match the trained model: {len(absent)} missing {absent[:3]}, "
            f"{len(unknown)} unknown {unknown[:3]}"
        )
    return max_abs_diff({k: current[k] for k in saved}, saved, where)


def max_abs_diff(current: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], where: Path) -> float:
    worst = 0.0
    for name, ref in reference.items():
        value = current[name].detach()
        if value.shape != ref.shape:
            raise ConsolidationError(f"{where}: {name} has shape {tuple(ref.shape)}, the model {tuple(value.shape)}")
        worst = max(worst, (value.to(ref.dtype).float() - ref.float()).abs().max().item() if ref.numel() else 0.0)
    return worst


# ---- merging, saving, verifying ----------------------------------------------------------------------


def merge(model: torch.nn.Module) -> torch.nn.Module:
    """Fold a LoRA adapter (and a trained head in modules_to_save) into the base weights."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def probe_inputs(config) -> torch.Tensor:
    """Fixed token ids without the pad id (a reward model reads the last non-pad token of each row)."""
    generator = torch.Generator().manual_seed(PROBE["seed"])
    ids = torch.randint(0, config.vocab_size, (PROBE["rows"], PROBE["tokens"]), generator=generator)
    if config.pad_token_id is not None:
        ids[ids == config.pad_token_id] = (config.pad_token_id + 1) % config.vocab_size
    return ids


@torch.no_grad()
def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Run in float64, so that the comparison sees the weights, not the order of fp32 additions.

    fp32 -> fp64 -> fp32 is exact: the model comes back with the weights it had.
    """
    model.eval()
    dtype = next(model.parameters()).dtype
    model.double()
    try:
        return model(input_ids=ids).logits
    finally:
        model.to(dtype)


def max_logit_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def adapter_effect(model: torch.nn.Module, ids: torch.Tensor, trained_logits: torch.Tensor) -> float | None:
    """How much the adapter moves the logits: a merge that lost it would be off by this much."""
    if not hasattr(model, "disable_adapter"):
        return None
    with model.disable_adapter():
        return max_logit_diff(logits(model, ids), trained_logits)


def save_consolidated(model: torch.nn.Module, tokenizer, manifest: dict, out: Path) -> None:
    # save_pretrained drops the tied lm_head copy; the zero_to_fp32 script's --safe_serialization fails on it.
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    if manifest.get("reward"):
        reward = manifest["reward"]
        write_json(out / REWARD_META, {"kind": reward["kind"], "num_scores": reward["num_scores"]})


def reload(out: Path, manifest: dict, trust_remote_code: bool) -> torch.nn.Module:
    return TASKS[manifest["task"]].from_pretrained(
        str(out), dtype=torch.float32, trust_remote_code=trust_remote_code, use_safetensors=True
    )


def compare_weights(merged: torch.nn.Module, reloaded: torch.nn.Module) -> dict:
    """Names, shapes, count, ties and values of the reloaded folder against the model that was saved."""
    in_memory = dict(merged.named_parameters())
    on_disk = dict(reloaded.named_parameters())
    names_match = {n: p.shape for n, p in in_memory.items()} == {n: p.shape for n, p in on_disk.items()}
    return {
        "param_count": sum(p.numel() for p in on_disk.values()),
        "param_count_in_memory": sum(p.numel() for p in in_memory.values()),
        "names_match": names_match,
        "ties_match": tied(merged) == tied(reloaded),
        "max_weight_diff": max_abs_diff(on_disk, in_memory, Path("reloaded folder")) if names_match else None,
    }


def tied(model: torch.nn.Module) -> bool:
    out = model.get_output_embeddings()
    return out is not None and out.weight is model.get_input_embeddings().weight


def failed_checks(report: dict) -> list[str]:
    failures = []
    if not report["names_match"]:
        failures.append("parameter names or shapes differ between the model in memory and the reloaded folder")
    if report["param_count"] != report["param_count_in_memory"]:
        failures.append(f"{report['param_count']} parameters reloaded, {report['param_count_in_memory']} in memory")
    if not report["ties_match"]:
        failures.append("tied input/output embeddings were not preserved")
    for key, limit, what in (("max_source_diff", "tolerance", "checkpoint weights vs final/"),
                             ("max_weight_diff", "tolerance", "reloaded weights vs in memory"),
                             ("max_reload_logit_diff", "tolerance", "reloaded logits vs in memory"),
                             ("max_logit_diff", "logit_tolerance",
                              "reloaded logits vs the unmerged trained model, 1e-5 of the largest |logit|")):
        if report[key] is not None and not report[key] <= report[limit]:
            failures.append(f"{key} {report[key]:.3g} > {limit} {report[limit]:.3g} ({what})")
    return failures
