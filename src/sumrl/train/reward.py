"""`sumrl reward`: the reward model, with trl's RewardTrainer and a LoRA adapter.

Two heads (reward.kind):
  scalar         one logit, Bradley-Terry loss -log sigmoid(r_chosen - r_rejected) (trl's own loss);
  probabilistic  a distribution over scores 1..n, loss -log sum_{i>j} p_chosen(i) p_rejected(j);
                 reward = E[s], and its spread sigma is available to the RL methods.
How far the trained model agrees with held-out and human preferences is `sumrl reward-eval`'s job
(evaluate/reward_eval.py), on the consolidated model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification
from trl import RewardConfig, RewardTrainer

from sumrl import runtime, stages
from sumrl.artifacts import read_jsonl
from sumrl.data.prompts import PromptFormat
from sumrl.models.load import load_tokenizer, lora_config, torch_dtype, use_distinct_pad
from sumrl.models.scoring import probabilistic_preference_loss, rewards_from_logits
from sumrl.train.common import CurveCallback, checkpoint_dir, run_trainer, trainer_args, write_run


class ProbabilisticRewardTrainer(RewardTrainer):
    """RewardTrainer with the probabilistic head's loss; data handling and training stay trl's."""

    def __init__(self, model, *args, **kwargs):
        # trl refuses models whose config has num_labels != 1 (it assumes a scalar head); the check reads
        # only the config, and this loss is written for n logits, so show it 1 and restore n after.
        n = model.config.num_labels
        model.config.num_labels = 1
        try:
            super().__init__(model, *args, **kwargs)
        finally:
            model.config.num_labels = n

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        inputs["use_cache"] = False
        outputs = model(**inputs)
        chosen, rejected = torch.chunk(outputs.logits, chunks=2)  # trl stacks chosen then rejected
        loss = probabilistic_preference_loss(chosen, rejected)
        with torch.no_grad():
            r_c, _ = rewards_from_logits(chosen, "probabilistic")
            r_r, _ = rewards_from_logits(rejected, "probabilistic")
            self._metrics[mode]["accuracy"].append((r_c > r_r).float().mean().item())
            self._metrics[mode]["margin"].append((r_c - r_r).mean().item())
        return (loss, outputs) if return_outputs else loss


def preference_dataset(rows: list[dict], fmt: PromptFormat) -> Dataset:
    return Dataset.from_list([{"prompt": fmt.prompt(r["document"]), "chosen": fmt.completion(r["chosen"]),
                               "rejected": fmt.completion(r["rejected"])} for r in rows])


def reward_base(params: dict) -> str:
    return params["model"]["reward_base"] or stages.BASE


def num_labels(cfg: dict) -> int:
    return 1 if cfg["kind"] == "scalar" else cfg["num_scores"]


def run(params: dict, args) -> None:
    from sumrl.scale.deepspeed import prepare_distributed_env
    from sumrl.scale.launch import maybe_relaunch

    maybe_relaunch(params)
    prepare_distributed_env(params)
    cfg = params["reward"]
    device = runtime.setup(params["seed"], params["compute"]["threads"], params["compute"]["device"])
    base = reward_base(params)
    tokenizer = load_tokenizer(base, params["compute"]["trust_remote_code"], padding_side="right")
    use_distinct_pad(tokenizer)
    fmt = PromptFormat.from_params(tokenizer, params)
    train_rows = read_jsonl(Path(stages.PAIRS) / "train.jsonl")
    val_rows = read_jsonl(Path(stages.PAIRS) / "validation.jsonl")
    work_dir, resume_from = checkpoint_dir("reward", params, getattr(args, "restart", False))
    config = RewardConfig(
        **trainer_args(cfg, params, work_dir, "reward"),
        max_length=params["data"]["max_document_tokens"] + params["data"]["max_summary_tokens"] + 64,
    )
    # Loaded after the config: under ZeRO-3 the weights are partitioned as they load.
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=num_labels(cfg), dtype=torch_dtype(params),
        trust_remote_code=params["compute"]["trust_remote_code"], use_safetensors=True,
    ).to(device)
    model.config.pad_token_id = tokenizer.pad_token_id
    trainer_cls = RewardTrainer if cfg["kind"] == "scalar" else ProbabilisticRewardTrainer
    trainer = trainer_cls(
        model=model,
        args=config,
        train_dataset=preference_dataset(train_rows, fmt),
        processing_class=tokenizer,
        peft_config=lora_config(cfg["lora"], "SEQ_CLS"),
        callbacks=[CurveCallback(Path(stages.CURVES) / "reward.csv",
                                 {"loss": "loss", "accuracy": "accuracy", "margin": "margin",
                                  "learning_rate": "learning_rate"}, resume_from)],
    )
    run_trainer(trainer, params, resume_from)
    write_run(Path(stages.REWARD_RUN), work_dir, trainer, {
        "stage": "reward", "task": "sequence_classification", "base": base, "num_labels": num_labels(cfg),
        "reward": {"kind": cfg["kind"], "num_scores": num_labels(cfg)},
        "deepspeed": params["compute"]["deepspeed"], "lora": True, "steps": trainer.state.global_step,
        "train_pairs": len(train_rows), "validation_pairs": len(val_rows),
    })
