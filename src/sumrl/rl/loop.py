"""`sumrl rl --method M --seed S`: one readable loop shared by every method.

    for each step:
        prompts        <- the next rollout_batch_size / k prompts (k samples each)
        rollout        <- sample y ~ pi(.|x); log pi_old, log pi_ref, V (PPO); score r_phi(x, y) - EOS penalty
        advantages     <- the method's (moving-average / leave-one-out baseline, or GAE)
        for epoch, mini-batch:
            loss       <- the method's loss on fresh log pi (and V)
            step the optimizer on the LoRA adapter (and value head)
        log reward, KL, entropy, length, EOS rate, loss, clip fraction, value loss, seconds
        checkpoint every rl.checkpoint_every steps (resumed automatically after a kill)
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from sumrl import runtime, stages
from sumrl.artifacts import CurveLogger, atomic_path, read_jsonl, write_json
from sumrl.data.prompts import PromptFormat
from sumrl.models.load import load_policy, load_reward_model, load_tokenizer, save_model
from sumrl.rl import advantages as F
from sumrl.rl.core import ValueHead, add_lora, forward_completion, rollout
from sumrl.rl.methods import Method, build_method

log = logging.getLogger("sumrl.rl")


def run(params: dict, args) -> None:
    name = stages.rl_policy(args.method, args.seed)
    compute = params["compute"]
    if compute["launcher"] != "python" or compute["deepspeed"] != "none":
        # Not yet: RL samples with generate() every step, which under ZeRO-3 needs gathered weights.
        log.warning("compute.launcher/deepspeed apply to SFT and reward; the RL stage runs in one process")
    device = runtime.setup(args.seed, compute["threads"], compute["device"])
    train(params, args.method, args.seed, out_dir=Path(stages.RL.format(method=args.method, seed=args.seed)),
          curve_path=Path(stages.CURVES) / f"rl_{name}.csv", ckpt_dir=Path("checkpoints/rl") / name,
          restart=getattr(args, "restart", False), device=device)


def train(params: dict, method_name: str, seed: int, out_dir: Path, curve_path: Path, ckpt_dir: Path,
          restart: bool = False, device: torch.device | str = "cpu", sft_dir: str = stages.SFT,
          reward_dir: str = stages.REWARD, prompts_path: str = f"{stages.PREPARED}/rl.jsonl",
          stop_after: int | None = None) -> dict:
    cfg = params["rl"]
    method = build_method(method_name, cfg)
    k = method.samples_per_prompt
    if cfg["rollout_batch_size"] % k:
        raise ValueError(f"rl.rollout_batch_size ({cfg['rollout_batch_size']}) must be a multiple of rloo.k ({k})")
    prompts_per_step = cfg["rollout_batch_size"] // k
    num_steps = cfg["total_episodes"] // cfg["rollout_batch_size"]

    tokenizer = load_tokenizer(sft_dir, params["compute"]["trust_remote_code"])
    fmt = PromptFormat.from_params(tokenizer, params)
    prompts = [fmt.prompt(row["document"]) for row in read_jsonl(prompts_path)]
    if not prompts:
        raise ValueError(f"{prompts_path}: no RL prompts")
    policy = add_lora(load_policy(sft_dir, params, device), cfg["lora"])
    reward_model, rm_meta = load_reward_model(reward_dir, params, device)
    rm_tokenizer = load_tokenizer(reward_dir, params["compute"]["trust_remote_code"])
    value_head = ValueHead(policy.config.hidden_size).to(device) if method.needs_values else None
    trainable = [p for p in policy.parameters() if p.requires_grad]
    if value_head is not None:
        trainable += list(value_head.parameters())
    optimizer = torch.optim.AdamW(trainable, lr=cfg["learning_rate"], eps=1e-6)

    fingerprint = _fingerprint(params, method_name, seed)
    start = 0 if restart else _resume(ckpt_dir, fingerprint, policy, value_head, optimizer, method)
    if start == 0 and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    logger = CurveLogger(curve_path, resume=start > 0)
    logger.truncate_after(start)

    t_run = time.perf_counter()
    for step in tqdm(range(start, num_steps), desc=f"rl {method_name} s{seed}", initial=start, total=num_steps):
        t0 = time.perf_counter()
        # Sampling draws from torch's RNG: reseed per step so a resumed run samples what it would have.
        runtime.seed_everything(seed * 100_003 + step)
        batch_prompts = [p for p in _prompts_for_step(prompts, step, prompts_per_step, seed) for _ in range(k)]
        batch, _, stats = rollout(policy, fmt, reward_model, rm_tokenizer, rm_meta["kind"], batch_prompts,
                                  cfg, value_head)
        adv, extra = method.advantages(batch)
        seq_kl = F.sequence_kl(batch.logp, batch.ref_logp, batch.mask)

        losses, extras = update(policy, value_head, optimizer, trainable, method, batch, adv, extra, cfg)

        logger.log({
            "step": step + 1,
            "episodes": (step + 1) * cfg["rollout_batch_size"],
            "reward_mean": F.kl_shaped_return(batch.scores, seq_kl, cfg["kl_coef"]).mean().item(),
            "reward_std": batch.scores.std().item() if len(batch) > 1 else 0.0,
            "score_mean": stats["score_mean"],
            "kl": seq_kl.mean().item(),
            "entropy": stats["entropy"],
            "length": stats["length"],
            "eos_rate": stats["eos_rate"],
            "loss": sum(losses) / len(losses),
            "clip_frac": _mean_of(extras, "clip_frac"),
            "value_loss": _mean_of(extras, "value_loss"),
            "seconds": time.perf_counter() - t0,
        })
        if (step + 1) % cfg["checkpoint_every"] == 0 and step + 1 < num_steps:
            _checkpoint(ckpt_dir, step + 1, fingerprint, policy, value_head, optimizer, method)
        if stop_after is not None and step + 1 >= stop_after:
            return {"stopped_at": step + 1}

    summary = {"method": method_name, "seed": seed, "steps": num_steps, "resumed_from": start,
               "seconds": round(time.perf_counter() - t_run, 1)}
    with atomic_path(out_dir, is_dir=True) as tmp:
        save_model(policy.merge_and_unload(), tokenizer, tmp)
        write_json(tmp / "sumrl_rl.json", {**summary, "rl": cfg})
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return summary


def update(policy, value_head, optimizer, trainable, method: Method, batch, adv, extra, cfg: dict
           ) -> tuple[list[float], list[dict]]:
    """rl.epochs passes over the rollout in rl.mini_batches shuffled mini-batches, one optimizer step each.

    A mini-batch's gradient is accumulated over micro-batches of rl.micro_batch_size completions, each
    loss weighted by its share of the mini-batch (method.loss_weight), so the step is the same as one
    pass over the whole mini-batch while only one micro-batch's activations are alive at a time.
    """
    policy.train()
    losses, extras = [], []
    for _epoch in range(cfg["epochs"]):
        for idx in torch.randperm(len(batch)).chunk(cfg["mini_batches"]):
            optimizer.zero_grad(set_to_none=True)
            loss_sum, stats = 0.0, {}
            for micro in idx.split(cfg["micro_batch_size"] or len(idx)):
                logp, values, _ = forward_completion(policy, batch.input_ids[micro], batch.attention_mask[micro],
                                                     batch.completion_len, cfg["temperature"], value_head)
                loss, loss_stats = method.loss(logp * batch.mask[micro], batch, micro, adv, extra, values)
                weight = method.loss_weight(batch, micro, idx)
                (loss * weight).backward()
                loss_sum += weight * loss.item()
                for key, value in loss_stats.items():
                    stats[key] = stats.get(key, 0.0) + weight * value
            torch.nn.utils.clip_grad_norm_(trainable, cfg["max_grad_norm"])
            optimizer.step()
            losses.append(loss_sum)
            extras.append(stats)
    return losses, extras


def _prompts_for_step(prompts: list[str], step: int, n: int, seed: int) -> list[str]:
    """Epoch-wise shuffles seeded by (seed, epoch): the data position is a pure function of the step."""
    out = []
    for i in range(step * n, (step + 1) * n):
        epoch, pos = divmod(i, len(prompts))
        order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(seed * 7919 + epoch))
        out.append(prompts[order[pos]])
    return out


def _mean_of(rows: list[dict], key: str):
    values = [r[key] for r in rows if key in r]
    return sum(values) / len(values) if values else ""


def _fingerprint(params: dict, method: str, seed: int) -> str:
    """A checkpoint is resumed only by a run with the same RL params, method and seed."""
    text = json.dumps({"rl": params["rl"], "prompt": params["prompt"], "method": method, "seed": seed}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _checkpoint(ckpt_dir: Path, step: int, fingerprint: str, policy, value_head, optimizer, method: Method) -> None:
    with atomic_path(ckpt_dir, is_dir=True) as tmp:
        adapter = {k: v.detach().contiguous() for k, v in policy.state_dict().items() if "lora_" in k}
        save_file(adapter, str(tmp / "adapter.safetensors"))
        if value_head is not None:
            save_file(value_head.state_dict(), str(tmp / "value_head.safetensors"))
        torch.save({"optimizer": optimizer.state_dict()}, tmp / "optimizer.pt")
        write_json(tmp / "state.json", {"step": step, "fingerprint": fingerprint, "method": method.state_dict()})
    log.info("checkpoint at step %d -> %s", step, ckpt_dir)


def _resume(ckpt_dir: Path, fingerprint: str, policy, value_head, optimizer, method: Method) -> int:
    state_path = ckpt_dir / "state.json"
    if not state_path.is_file():
        return 0
    state = json.loads(state_path.read_text())
    if state["fingerprint"] != fingerprint:
        log.warning("%s: checkpoint is from other params; starting clean", ckpt_dir)
        return 0
    missing = policy.load_state_dict(load_file(str(ckpt_dir / "adapter.safetensors")), strict=False)
    if missing.unexpected_keys:
        raise RuntimeError(f"{ckpt_dir}/adapter.safetensors: unexpected keys {missing.unexpected_keys[:3]}")
    if value_head is not None:
        value_head.load_state_dict(load_file(str(ckpt_dir / "value_head.safetensors")))
    blob = torch.load(ckpt_dir / "optimizer.pt", weights_only=True)
    optimizer.load_state_dict(blob["optimizer"])
    method.load_state_dict(state["method"])
    log.info("resuming %s from step %d", ckpt_dir, state["step"])
    return state["step"]
