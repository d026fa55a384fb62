"""`sumrl sft`: supervised fine-tuning with trl's SFTTrainer and a LoRA adapter.

Rows are prompt/completion pairs formatted by PromptFormat, so the loss covers only the summary
(completion-only loss) and every summary ends with EOS: the policy learns to stop.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from sumrl import runtime, stages
from sumrl.artifacts import read_jsonl
from sumrl.data.prompts import PromptFormat
from sumrl.models.load import load_policy, load_tokenizer, lora_config
from sumrl.train.common import CurveCallback, checkpoint_dir, run_trainer, trainer_args, write_run


def sft_dataset(rows: list[dict], fmt: PromptFormat) -> Dataset:
    return Dataset.from_list([{"prompt": fmt.prompt(r["document"]), "completion": fmt.completion(r["summary"])}
                              for r in rows])


def run(params: dict, args) -> None:
    from sumrl.scale.deepspeed import prepare_distributed_env
    from sumrl.scale.launch import maybe_relaunch

    maybe_relaunch(params)
    prepare_distributed_env(params)
    cfg = params["sft"]
    device = runtime.setup(params["seed"], params["compute"]["threads"], params["compute"]["device"])
    tokenizer = load_tokenizer(stages.BASE, params["compute"]["trust_remote_code"], padding_side="right")
    fmt = PromptFormat.from_params(tokenizer, params)
    train_set = sft_dataset(read_jsonl(Path(stages.PREPARED) / "sft.jsonl"), fmt)
    work_dir, resume_from = checkpoint_dir("sft", params, getattr(args, "restart", False))
    config = SFTConfig(
        **trainer_args(cfg, params, work_dir, "sft"),
        max_length=params["data"]["max_document_tokens"] + params["data"]["max_summary_tokens"] + 64,
        completion_only_loss=True,
        packing=False,
    )
    trainer = SFTTrainer(
        model=load_policy(stages.BASE, params, device),
        args=config,
        train_dataset=train_set,
        processing_class=tokenizer,
        peft_config=lora_config(cfg["lora"], "CAUSAL_LM"),
        callbacks=[CurveCallback(Path(stages.CURVES) / "sft.csv",
                                 {"loss": "loss", "learning_rate": "learning_rate", "grad_norm": "grad_norm",
                                  "mean_token_accuracy": "token_accuracy"}, resume_from)],
    )
    run_trainer(trainer, params, resume_from)
    write_run(Path(stages.SFT_RUN), work_dir, trainer, {
        "stage": "sft", "task": "causal_lm", "base": stages.BASE, "num_labels": None, "reward": None,
        "deepspeed": params["compute"]["deepspeed"], "lora": True, "steps": trainer.state.global_step,
        "train_rows": len(train_set),
    })
