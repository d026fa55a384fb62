"""`sumrl sft`: supervised fine-tuning with trl's SFTTrainer and a LoRA adapter.

Rows are prompt/completion pairs formatted by PromptFormat, so the loss covers only the summary
(completion-only loss) and every summary ends with EOS: the policy learns to stop.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset
from trl import SFTConfig as TrlSFTConfig
from trl import SFTTrainer

from sumrl import stages
from sumrl.artifacts import read_jsonl
from sumrl.config import Config
from sumrl.data.prompts import PromptFormat
from sumrl.models.load import load_policy, lora_config
from sumrl.train.common import curve_callback, max_length, start_session, train_and_write, trainer_args


def sft_dataset(rows: list[dict], fmt: PromptFormat) -> Dataset:
    return Dataset.from_list([{"prompt": fmt.prompt(r["document"]), "completion": fmt.completion(r["summary"])}
                              for r in rows])


def run(params: dict, args) -> None:
    cfg = Config.of(params)
    session = start_session("sft", params, stages.BASE, getattr(args, "restart", False))
    train_set = sft_dataset(read_jsonl(Path(stages.PREPARED) / "sft.jsonl"), session.fmt)
    config = TrlSFTConfig(
        **trainer_args(cfg.sft, cfg, session.work_dir, "sft"),
        max_length=max_length(cfg),
        completion_only_loss=True,
        packing=False,
    )
    trainer = SFTTrainer(
        model=load_policy(stages.BASE, cfg, session.device),
        args=config,
        train_dataset=train_set,
        processing_class=session.tokenizer,
        peft_config=lora_config(cfg.sft.lora, "CAUSAL_LM"),
        callbacks=[curve_callback(session, {"loss": "loss", "learning_rate": "learning_rate",
                                            "grad_norm": "grad_norm", "mean_token_accuracy": "token_accuracy"})],
    )
    train_and_write(trainer, cfg, session, stages.SFT_RUN, {
        "task": "causal_lm", "base": stages.BASE, "num_labels": None, "reward": None, "train_rows": len(train_set),
    })
