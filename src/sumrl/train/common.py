"""What the two trl-based training stages (SFT, reward) share: trainer arguments, curve logging, resumable
checkpoints, and the run folder that `consolidate` reads."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset
from transformers import TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from sumrl import runtime, stages
from sumrl.artifacts import CurveLogger, atomic_path, write_json
from sumrl.config import Config, DPOConfig, RewardConfig, SFTConfig
from sumrl.data.prompts import PromptFormat
from sumrl.models.load import load_tokenizer
from sumrl.params import PROMPT_TEMPLATE_TOKENS

log = logging.getLogger("sumrl.train")


def per_process_batch(batch_size: int, key: str, world_size: int | None = None) -> int:
    """The trainer's per-device batch for a global batch of `batch_size`: the params give the global batch, so
    that running under `accelerate launch` on N processes (compute.launcher) trains the same model."""
    world_size = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else world_size
    if batch_size % world_size:
        raise ValueError(f"{key}: a batch of {batch_size} does not split over {world_size} processes; make it a "
                         "multiple of the process count")
    return batch_size // world_size


def trainer_args(section: SFTConfig | RewardConfig | DPOConfig, params: Config | Mapping, output_dir: Path,
                 stage: str) -> dict:
    """Keyword arguments shared by trl's SFTConfig, RewardConfig and DPOConfig, from the stage's section."""
    from sumrl.scale.deepspeed import trainer_kwargs

    cfg = Config.of(params)
    return dict(
        output_dir=str(output_dir),
        learning_rate=section.learning_rate,
        num_train_epochs=section.epochs,
        per_device_train_batch_size=per_process_batch(section.batch_size, f"{stage}.batch_size"),
        gradient_accumulation_steps=getattr(section, "grad_accum", 1),
        warmup_steps=getattr(section, "warmup_ratio", 0.0),  # a float in [0, 1) is a ratio of total steps
        lr_scheduler_type="linear",
        logging_steps=1,
        save_strategy="steps",
        save_steps=section.checkpoint_every,
        save_total_limit=1,
        report_to="none",
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=cfg.compute.device == "cpu" or not _cuda(),
        # No autocast: the base weights are loaded in model.dtype already (auto: bf16 only where matmuls are native)
        # and the LoRA adapters stay fp32; the trainer's bf16 flag would also refuse a CPU without bf16 support.
        bf16=False,
        gradient_checkpointing=False,  # 20-25% faster at this size; costs ~1 GB
        dataloader_num_workers=0,
        disable_tqdm=False,
        **trainer_kwargs(params),
    )


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


class CurveCallback(TrainerCallback):
    """Forwards the trainer's per-step logs to a CSV curve that DVC plots read."""

    def __init__(self, path: Path, columns: dict[str, str], resume_from: str | None, live_dir: str | None = None):
        self.logger = CurveLogger(path, resume=resume_from is not None, live_dir=live_dir)
        if resume_from is not None:  # the resumed trainer logs again from the checkpoint's step on
            self.logger.truncate_after(int(Path(resume_from).name.rsplit("-", 1)[-1]))
        self.columns = columns  # trainer log key -> CSV column

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero or "loss" not in logs:
            return
        self.logger.log({"step": state.global_step,
                         **{col: logs.get(key, "") for key, col in self.columns.items()}})


def run_trainer(trainer, params: Config | Mapping, resume_from: str | None) -> None:
    """trainer.train(), refusing a ZeRO config that the trainer is not running under DeepSpeed (it would
    train something other than what was asked, and leave no ZeRO checkpoint to consolidate)."""
    from sumrl.scale.deepspeed import weights_only_torch_load

    wanted = Config.of(params).compute.deepspeed
    if wanted != "none" and not trainer.is_deepspeed_enabled:
        raise RuntimeError(f"compute.deepspeed is '{wanted}' but the trainer's accelerator has no DeepSpeed plugin "
                           "(was it launched with `accelerate launch --cpu`?); refusing to train without ZeRO")
    with weights_only_torch_load():  # DeepSpeed resumes with torch.load(weights_only=False)
        trainer.train(resume_from_checkpoint=resume_from)


def checkpoint_dir(name: str, params: Mapping, restart: bool, stage: str | None = None,
                   **fields) -> tuple[Path, str | None]:
    """checkpoints/<name>: the trainer's output_dir, kept across a kill so the stage resumes.

    A checkpoint is reused only by a run with the same result params (the stage table's keys, the ones DVC
    and Snakemake rerun the stage for); `--restart` wipes it.
    """
    path = Path("checkpoints") / name
    keys = stages.result_params(stage or name, params, **fields)
    fingerprint = hashlib.sha256(json.dumps({"params": keys, "seed": Config.of(params).seed}, sort_keys=True).encode()
                                 ).hexdigest()[:16]
    marker = path / "fingerprint.txt"
    if restart or not marker.is_file() or marker.read_text() != fingerprint:
        if path.exists():
            log.info("%s: starting clean (%s)", path, "--restart" if restart else "new params")
            shutil.rmtree(path)
        path.mkdir(parents=True)
        marker.write_text(fingerprint)
        return path, None
    last = get_last_checkpoint(str(path))
    if last:
        log.info("resuming %s from %s", name, last)
    return path, last


@dataclass
class Session:
    """What a trl training stage has once it is set up: where it runs, how it tokenizes and prompts, where it
    checkpoints, and the checkpoint it resumes from (None: a fresh start). `name` names the curve
    (reports/curves/<name>.csv) and the checkpoint folder (checkpoints/<name>)."""

    name: str
    device: object
    tokenizer: object
    fmt: PromptFormat
    work_dir: Path
    resume_from: str | None


def start_session(name: str, params: Mapping, base: str, restart: bool, table_stage: str | None = None,
                  **fields) -> Session:
    """The common start of `sumrl sft`, `sumrl reward` and `sumrl rl --method dpo`: relaunch under accelerate if
    asked, seed, threads and device, the base's tokenizer (right padding, as trl trains), and the resumable
    checkpoint folder, whose fingerprint is the result params of `table_stage` (default: `name`) filled with
    `fields` (method=...)."""
    from sumrl.scale.deepspeed import prepare_distributed_env
    from sumrl.scale.launch import maybe_relaunch

    cfg = Config.of(params)
    maybe_relaunch(cfg)
    prepare_distributed_env(cfg)
    device = runtime.setup(cfg.seed, cfg.compute.threads, cfg.compute.device)
    tokenizer = load_tokenizer(base, cfg.compute.trust_remote_code, padding_side="right")
    work_dir, resume_from = checkpoint_dir(name, params, restart, table_stage or name, **fields)
    return Session(name, device, tokenizer, PromptFormat.from_params(tokenizer, cfg), work_dir, resume_from)


def max_length(cfg: Config) -> int:
    """Tokens of a training example: the document, the summary and the prompt template around them."""
    return cfg.data.max_document_tokens + cfg.data.max_summary_tokens + PROMPT_TEMPLATE_TOKENS


def curve_callback(session: Session, columns: dict[str, str]) -> CurveCallback:
    """reports/curves/<stage>.csv, fed from the trainer's logs (trainer key -> CSV column)."""
    return CurveCallback(Path(stages.CURVES) / f"{session.name}.csv", columns, session.resume_from,
                         live_dir=stages.LIVE.format(name=session.name))


def preference_dataset(rows: list[dict], fmt: PromptFormat) -> Dataset:
    """Preference pairs as trl's RewardTrainer and DPOTrainer read them: prompt, chosen and rejected completions."""
    return Dataset.from_list([{"prompt": fmt.prompt(r["document"]), "chosen": fmt.completion(r["chosen"]),
                               "rejected": fmt.completion(r["rejected"])} for r in rows])


def train_and_write(trainer, cfg: Config, session: Session, run_dir: str, info: dict) -> None:
    """Train (resuming if there is a checkpoint), then write the run folder `consolidate` reads."""
    run_trainer(trainer, cfg, session.resume_from)
    write_run(Path(run_dir), session.work_dir, trainer, {
        "stage": session.name, **info, "deepspeed": cfg.compute.deepspeed, "lora": True,
        "steps": trainer.state.global_step,
    })


def write_run(out_dir: Path, work_dir: Path, trainer, info: dict) -> None:
    """models/<stage>_run: final adapter (+ the last ZeRO checkpoint when DeepSpeed ran) + sumrl_run.json."""
    copied = None
    with atomic_path(out_dir, is_dir=True) as tmp:
        trainer.save_model(str(tmp / "final"))
        if info["deepspeed"] != "none":
            last = get_last_checkpoint(str(work_dir))
            if last is None:
                raise RuntimeError(f"{work_dir}: DeepSpeed run left no checkpoint to consolidate")
            shutil.copytree(last, tmp / Path(last).name)
            copied = Path(last).name
        write_json(tmp / "sumrl_run.json", {**info, "last_checkpoint": copied})
    shutil.rmtree(work_dir, ignore_errors=True)
