"""`sumrl rl --method dpo --seed S`: DPO (Rafailov et al. 2023) with trl's DPOTrainer, as one of the methods of
the `rl` stage, so that its run is consolidated, generated from, evaluated and reported like the RL runs.

Offline: from the consolidated SFT policy with a fresh LoRA adapter (rl.lora), on the reward model's training
pairs (data/pairs/train.jsonl), the reference being the same weights with the adapter disabled (trl does
this for a peft model; no second copy). No reward model and no sampling: the budget is stated as the pairs
and passes it trained on (sumrl_run.json: pairs, epochs, sequences).
"""

from __future__ import annotations

from pathlib import Path

from trl import DPOConfig as TrlDPOConfig
from trl import DPOTrainer

from sumrl import stages
from sumrl.artifacts import read_jsonl
from sumrl.config import Config
from sumrl.models.load import load_policy, lora_config
from sumrl.train.common import (
    curve_callback,
    max_length,
    preference_dataset,
    start_session,
    train_and_write,
    trainer_args,
)


def run(params: dict, args) -> None:
    params = {**params, "seed": args.seed}  # the run's seed, as the RL methods take it
    cfg = Config.of(params)
    rl, dpo = cfg.rl, cfg.rl.dpo
    # rl_<policy>: the curve the stage table names (reports/curves/rl_dpo_s<seed>.csv), and the checkpoint folder
    name = f"rl_{stages.rl_policy('dpo', args.seed)}"
    session = start_session(name, params, stages.SFT, getattr(args, "restart", False), table_stage="rl",
                            method="dpo")
    pairs = read_jsonl(Path(stages.PAIRS) / "train.jsonl")
    config = TrlDPOConfig(
        **trainer_args(dpo, cfg, session.work_dir, "rl.dpo"),
        beta=dpo.beta, loss_type=[dpo.loss_type], max_length=max_length(cfg),
    )
    trainer = DPOTrainer(
        model=load_policy(stages.SFT, cfg, session.device),
        args=config,
        train_dataset=preference_dataset(pairs, session.fmt),
        processing_class=session.tokenizer,
        peft_config=lora_config(rl.lora, "CAUSAL_LM"),
        callbacks=[curve_callback(session, {"loss": "loss", "rewards/accuracies": "reward_accuracy",
                                            "rewards/margins": "reward_margin", "learning_rate": "learning_rate"})],
    )
    train_and_write(trainer, cfg, session, stages.RL_RUN.format(method="dpo", seed=args.seed), {
        "stage": "rl", "task": "causal_lm", "base": stages.SFT, "num_labels": None, "reward": None,
        "method": "dpo", "seed": args.seed, "aux_modules": [], "rl": rl.as_dict(),
        "budget": {"pairs": len(pairs), "epochs": dpo.epochs, "sequences": 2 * len(pairs) * dpo.epochs},
    })
