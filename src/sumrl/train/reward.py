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
from transformers import AutoModelForSequenceClassification
from trl import RewardConfig as TrlRewardConfig
from trl import RewardTrainer

from sumrl import stages
from sumrl.artifacts import read_jsonl
from sumrl.config import Config
from sumrl.models.load import lora_config, torch_dtype, use_distinct_pad
from sumrl.models.scoring import probabilistic_preference_loss, rewards_from_logits
from sumrl.train.common import (
    curve_callback,
    max_length,
    preference_dataset,
    start_session,
    train_and_write,
    trainer_args,
)


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


def run(params: dict, args) -> None:
    cfg = Config.of(params)
    rm = cfg.reward
    base = cfg.model.reward_base or stages.BASE
    session = start_session("reward", params, base, getattr(args, "restart", False))
    use_distinct_pad(session.tokenizer)
    train_rows = read_jsonl(Path(stages.PAIRS) / "train.jsonl")
    val_rows = read_jsonl(Path(stages.PAIRS) / "validation.jsonl")
    config = TrlRewardConfig(**trainer_args(rm, cfg, session.work_dir, "reward"), max_length=max_length(cfg))
    # Loaded after the config: under ZeRO-3 the weights are partitioned as they load.
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=rm.num_labels, dtype=torch_dtype(cfg), trust_remote_code=cfg.compute.trust_remote_code,
        use_safetensors=True,
    ).to(session.device)
    model.config.pad_token_id = session.tokenizer.pad_token_id
    trainer_cls = RewardTrainer if rm.kind == "scalar" else ProbabilisticRewardTrainer
    trainer = trainer_cls(
        model=model,
        args=config,
        train_dataset=preference_dataset(train_rows, session.fmt),
        processing_class=session.tokenizer,
        peft_config=lora_config(rm.lora, "SEQ_CLS"),
        callbacks=[curve_callback(session, {"loss": "loss", "accuracy": "accuracy", "margin": "margin",
                                            "learning_rate": "learning_rate"})],
    )
    train_and_write(trainer, cfg, session, stages.REWARD_RUN, {
        "task": "sequence_classification", "base": base, "num_labels": rm.num_labels,
        "reward": {"kind": rm.kind, "num_scores": rm.num_labels},
        "train_pairs": len(train_rows), "validation_pairs": len(val_rows),
    })
