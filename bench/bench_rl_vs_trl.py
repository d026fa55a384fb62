"""RL steps of sumrl against trl, same settings, in one run; prints episodes/s and peak memory.
--method rloo (the default) compares with trl.RLOOTrainer, --method grpo with trl.GRPOTrainer (its `grpo` loss,
std-scaled group advantages, beta * k3 KL in the loss; sumrl's rl.grpo set to the same).

Same policy (SmolLM2-135M-Instruct from models/base, or --model), same prompts (ACLSum abstracts formatted by
sumrl's PromptFormat), same k, completion length, LoRA config, KL coefficient, temperature, weight dtype
(--dtype, both sides) and reward model (models/reward if present, else a fresh scalar head on the base model).
Each side runs in its own process so peak RSS is its own; each does `--warmup` untimed steps, then `--steps`
timed steps, and reports the mean completion length it sampled (both sample, so lengths differ a little).
sumrl runs the step `sumrl rl` runs (rl.loop.rl_step) twice: the whole rollout in one forward/backward (one
epoch, one mini-batch: that forward is also pi_old), and in micro-batches of --micro completions
(rl.micro_batch_size: the same gradient, less activation memory, one more no-grad pass for pi_old).
trl runs with its defaults (gradient checkpointing on).

    .venv/bin/python bench/bench_rl_vs_trl.py                 # after `make run` (uses models/base, models/reward)
    .venv/bin/python bench/bench_rl_vs_trl.py --method grpo --k 4 --prompts 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIDES = ("sumrl", "sumrl-micro", "trl")


def settings(args) -> dict:
    return {"method": args.method, "k": args.k, "prompts_per_step": args.prompts, "max_new_tokens": args.tokens,
            "lora_r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "kl_coef": 0.05,
            "temperature": 1.0, "learning_rate": 2e-4, "threads": args.threads, "dtype": args.dtype}


def load_prompts(model_dir: str, n: int) -> list[str]:
    from aclsum import ACLSum

    from sumrl.data.prompts import PromptFormat
    from sumrl.models.load import load_tokenizer
    from sumrl.params import load_params

    params = load_params(ROOT / "params.yaml", check_files=False)
    fmt = PromptFormat.from_params(load_tokenizer(model_dir), params)
    return [fmt.prompt(" ".join(d.sentences["abstract"])) for d in list(ACLSum("val"))[:n]]


def reward_dir(model_dir: str, workdir: Path) -> str:
    """models/reward if the workflow has run; otherwise a fresh scalar head (identical cost per step)."""
    if (ROOT / "models" / "reward" / "sumrl_reward.json").is_file():
        return str(ROOT / "models" / "reward")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = workdir / "rm"
    rm = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    tok = AutoTokenizer.from_pretrained(model_dir)
    rm.config.pad_token_id = tok.pad_token_id
    rm.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "sumrl_reward.json").write_text(json.dumps({"kind": "scalar", "num_scores": 1}))
    return str(out)


def run_sumrl(cfg: dict, model_dir: str, rm_dir: str, steps: int, warmup: int, micro: int | None) -> dict:
    import torch

    from sumrl.config import LoraSettings, RLConfig
    from sumrl.data.prompts import PromptFormat
    from sumrl.models.load import load_policy, load_reward_model, load_tokenizer
    from sumrl.params import load_params
    from sumrl.rl.core import add_lora
    from sumrl.rl.engine import PlainEngine
    from sumrl.rl.loop import rl_step
    from sumrl.rl.methods import build_method

    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    method_keys = {  # trl's GRPO objective: KL as beta * k3 in the loss, advantages over the group's std
        "rloo": [f"rl.rloo.k={cfg['k']}"],
        "grpo": [f"rl.grpo.k={cfg['k']}", "rl.grpo.kl=loss", "rl.grpo.scale_rewards=group"],
    }[cfg["method"]]
    params = load_params(ROOT / "params.yaml", check_files=False, overrides=[
        *method_keys, f"rl.kl_coef={cfg['kl_coef']}", f"rl.max_new_tokens={cfg['max_new_tokens']}",
        f"rl.rollout_batch_size={cfg['k'] * cfg['prompts_per_step']}", "rl.mini_batches=1", "rl.epochs=1",
        f"rl.micro_batch_size={'null' if micro is None else micro}", f"model.dtype={cfg['dtype']}",
        "rl.length_penalty=0"])  # trl has no length penalty: the same objective on both sides
    rl = RLConfig.from_params(params).replace(learning_rate=cfg["learning_rate"])
    tok = load_tokenizer(model_dir)
    lora = LoraSettings(r=cfg["lora_r"], alpha=cfg["lora_alpha"], dropout=0.0,
                        target_modules=tuple(cfg["target_modules"]))
    policy = add_lora(load_policy(model_dir, params), lora)
    rm, meta = load_reward_model(rm_dir, params)
    rm_tok = load_tokenizer(rm_dir)
    method = build_method(cfg["method"], rl)
    engine = PlainEngine(policy, rl)
    fmt = PromptFormat.from_params(tok, params)
    prompts = [p for p in load_prompts(model_dir, cfg["prompts_per_step"]) for _ in range(cfg["k"])]
    times, lengths = [], []
    for step in range(warmup + steps):
        t0 = time.perf_counter()
        # `sumrl rl`'s step
        _, stats, _, _ = rl_step(engine, policy, method, fmt, rm, rm_tok, meta["kind"], prompts, rl)
        if step >= warmup:
            times.append(time.perf_counter() - t0)
            lengths.append(stats["length"])
    return {"step_seconds": times, "completion_length": lengths}


def run_trl(cfg: dict, model_dir: str, rm_dir: str, steps: int, warmup: int, micro: None = None) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    from sumrl.models.load import load_tokenizer

    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    tok = load_tokenizer(model_dir)
    prompts = load_prompts(model_dir, cfg["prompts_per_step"])
    dtype = getattr(torch, cfg["dtype"])
    rm = AutoModelForSequenceClassification.from_pretrained(rm_dir, dtype=dtype)
    stamps: list[float] = []
    lengths: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            stamps.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            stamps.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                lengths.append(logs["completions/mean_length"])

    with tempfile.TemporaryDirectory() as out:
        config_cls, trainer_cls, extra = {
            "rloo": (RLOOConfig, RLOOTrainer, {}),
            # trl's GRPO: its own loss (per-completion token mean), std scaling, beta * k3 in the loss
            "grpo": (GRPOConfig, GRPOTrainer, {"loss_type": "grpo", "scale_rewards": "group"}),
        }[cfg["method"]]
        config = config_cls(
            **extra,
            output_dir=out, max_steps=warmup + steps, per_device_train_batch_size=cfg["k"] * cfg["prompts_per_step"],
            num_generations=cfg["k"], max_completion_length=cfg["max_new_tokens"], temperature=cfg["temperature"],
            beta=cfg["kl_coef"], learning_rate=cfg["learning_rate"], use_cpu=True, bf16=False, report_to="none",
            logging_steps=1, save_strategy="no", seed=0,
        )
        trainer = trainer_cls(
            model=AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype), reward_funcs=rm, args=config,
            train_dataset=Dataset.from_list([{"prompt": p} for p in prompts] * (warmup + steps)),
            processing_class=tok, reward_processing_classes=load_tokenizer(rm_dir),
            peft_config=LoraConfig(r=cfg["lora_r"], lora_alpha=cfg["lora_alpha"], lora_dropout=0.0,
                                   target_modules=cfg["target_modules"], task_type="CAUSAL_LM"),
            callbacks=[Clock()],
        )
        trainer.train()
    spans = [stamps[i + 1] - stamps[i] for i in range(0, len(stamps) - 1, 2)]
    return {"step_seconds": spans[warmup:], "completion_length": lengths[warmup:],
            "gradient_checkpointing": config.gradient_checkpointing}


def child(args) -> None:
    cfg = json.loads(args.child_cfg)
    fn = run_trl if args.child == "trl" else run_sumrl
    micro = args.micro if args.child == "sumrl-micro" else None
    result = fn(cfg, args.model, args.reward, args.steps, args.warmup, micro)
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "models" / "base"))
    ap.add_argument("--method", default="rloo", choices=["rloo", "grpo"],
                    help="rloo: against trl.RLOOTrainer; grpo: against trl.GRPOTrainer")
    ap.add_argument("--prompts", type=int, default=4, help="prompts per step")
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64, help="completion length")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per side (one step varies by ~15%% here)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                    help="weights, both sides (auto: model.dtype's rule, bf16 only with native bf16 matmuls)")
    ap.add_argument("--micro", type=int, default=2, help="completions per forward/backward (sumrl-micro)")
    ap.add_argument("--reward", default=None)
    ap.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--child-cfg", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    if not Path(args.model).is_dir():
        sys.exit(f"{args.model}: no model folder; run `make run` (or `sumrl base-model`) first")
    from sumrl.models.load import dtype_for

    args.dtype = str(dtype_for(args.dtype, "cpu")).removeprefix("torch.")
    cfg = settings(args)
    with tempfile.TemporaryDirectory() as tmp:
        rm = args.reward or reward_dir(args.model, Path(tmp))
        results = {}
        for side in SIDES:
            cmd = [sys.executable, __file__, "--child", side, "--child-cfg", json.dumps(cfg), "--model", args.model,
                   "--reward", rm, "--steps", str(args.steps), "--warmup", str(args.warmup), "--micro", str(args.micro)]
            out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
            if out.returncode or not line:
                sys.exit(f"{side} failed:\n{out.stderr[-3000:]}")
            results[side] = json.loads(line[0][7:])
    episodes = cfg["k"] * cfg["prompts_per_step"]
    print(f"settings: {json.dumps(cfg)}")
    print(f"{'':12s} {'s/step':>8s} {'episodes/s':>11s} {'peak RSS GB':>12s} "
          f"{'speed vs trl':>13s} {'memory vs trl':>14s}"
          f" {'completion length':>18s}")
    trl = results["trl"]
    for r in results.values():
        r["episodes_per_s"] = episodes * len(r["step_seconds"]) / sum(r["step_seconds"])
    for side, r in results.items():
        speed, mem = r["episodes_per_s"] / trl["episodes_per_s"], r["peak_rss_gb"] / trl["peak_rss_gb"]
        print(f"{side:12s} {episodes / r['episodes_per_s']:8.2f} {r['episodes_per_s']:11.3f} {r['peak_rss_gb']:12.2f}"
              f" {speed:12.2f}x {mem:13.2f}x {sum(r['completion_length']) / len(r['completion_length']):18.1f}")
    print("targets: speed >= 3.0x, memory <= 0.6x")
    print(f"trl gradient_checkpointing: {trl.get('gradient_checkpointing')}")


if __name__ == "__main__":
    main()
