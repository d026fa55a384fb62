"""`sumrl rl --method M --seed S`: one readable loop shared by every method.

    for each step:                                                    (rl_step is one iteration)
        prompts        <- the next rollout_batch_size / k prompts (k samples each)
        rollout        <- sample y ~ pi(.|x); log pi_old, log pi_ref, V (PPO); score r_phi(x, y) - EOS penalty
        guards         <- normalize the scores, length penalty, the KL coefficient in force (rl/guards.py)
        advantages     <- the method's (moving-average / leave-one-out baseline, or GAE)
        for epoch, mini-batch:
            loss       <- the method's loss on fresh log pi (and V)
            step the optimizer on the LoRA adapter (and value head): plain torch or DeepSpeed (rl/engine.py)
        log reward, RM score, KL (k1 and k3), beta, entropy, length, EOS rate, loss, clip fraction, value loss,
            explained variance, seconds; adapt beta to the measured KL (adaptive control)
        checkpoint every rl.checkpoint_every steps (resumed automatically after a kill)

Every pass runs each prompt once, however many completions it has (rl/prefix.py). With one epoch and one
mini-batch the update's forward is taken first and serves as pi_old (and V): no separate pass.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import torch
from tqdm import tqdm

from sumrl import runtime, stages
from sumrl.artifacts import CurveLogger, atomic_path, read_jsonl, write_json
from sumrl.config import Config, RLConfig
from sumrl.data.prompts import PromptFormat
from sumrl.models.load import load_policy, load_reward_model, load_tokenizer
from sumrl.rl import advantages as F
from sumrl.rl.core import ValueHead, add_lora, forward_completion, rollout
from sumrl.rl.engine import build_engine, read_state
from sumrl.rl.guards import Guards
from sumrl.rl.method import Method
from sumrl.rl.methods import build_method

log = logging.getLogger("sumrl.rl")

VALUE_HEAD = "value_head"  # PPO's head, a submodule of the policy: one engine trains and shards both


def run(params: dict, args) -> None:
    from sumrl.scale.deepspeed import prepare_distributed_env
    from sumrl.scale.launch import maybe_relaunch

    maybe_relaunch(params)
    prepare_distributed_env(params)
    name = stages.rl_policy(args.method, args.seed)
    compute = Config.of(params).compute
    device = runtime.setup(args.seed, compute.threads, compute.device)
    train(params, args.method, args.seed, out_dir=Path(stages.RL_RUN.format(method=args.method, seed=args.seed)),
          curve_path=Path(stages.CURVES) / f"rl_{name}.csv", ckpt_dir=Path("checkpoints/rl") / name,
          restart=getattr(args, "restart", False), device=device, live_dir=stages.LIVE.format(name=f"rl_{name}"))


def train(params: dict, method_name: str, seed: int, out_dir: Path, curve_path: Path, ckpt_dir: Path,
          restart: bool = False, device: torch.device | str = "cpu", sft_dir: str = stages.SFT,
          reward_dir: str = stages.REWARD, prompts_path: str = f"{stages.PREPARED}/rl.jsonl",
          stop_after: int | None = None, live_dir: str | None = None) -> dict:
    """Train and write `out_dir`, the run folder that `sumrl consolidate` merges into the SFT weights:
    final/ (the adapter), checkpoint-N/ (the last ZeRO checkpoint, under DeepSpeed) and sumrl_run.json."""
    typed = Config.of(params)
    cfg, compute = typed.rl, typed.compute
    method = build_method(method_name, cfg)
    k = method.samples_per_prompt
    if cfg.rollout_batch_size % k:
        raise ValueError(f"rl.rollout_batch_size ({cfg.rollout_batch_size}) must be a multiple of rloo.k ({k})")
    prompts_per_step = cfg.rollout_batch_size // k
    num_steps = cfg.total_episodes // cfg.rollout_batch_size

    tokenizer = load_tokenizer(sft_dir, compute.trust_remote_code)
    fmt = PromptFormat.from_params(tokenizer, params)
    rows = read_jsonl(prompts_path)
    prompts = [fmt.prompt(row["document"]) for row in rows]
    if not prompts:
        raise ValueError(f"{prompts_path}: no RL prompts")
    reference_lengths = _reference_lengths(fmt, prompts, rows)
    policy = add_lora(load_policy(sft_dir, params, device), cfg.lora)
    if method.needs_values:
        policy.add_module(VALUE_HEAD, ValueHead(policy.config.hidden_size).to(device))
    reward_model, rm_meta = load_reward_model(reward_dir, params, device)
    rm_tokenizer = load_tokenizer(reward_dir, compute.trust_remote_code)
    engine = build_engine(policy, params, cfg)
    check_world_size(cfg, prompts_per_step, engine.world_size)
    main = engine.rank == 0

    guards = Guards(cfg)
    fingerprint = _fingerprint(params, method_name, seed)
    start = 0 if restart else _resume(ckpt_dir, fingerprint, engine, method, guards)
    if start == 0 and ckpt_dir.exists() and main:
        shutil.rmtree(ckpt_dir)
    logger = CurveLogger(curve_path, resume=start > 0, live_dir=live_dir) if main else None
    if logger:
        logger.truncate_after(start)

    t_run = time.perf_counter()
    for step in tqdm(range(start, num_steps), desc=f"rl {method_name} s{seed}", initial=start, total=num_steps,
                     disable=not main):
        t0 = time.perf_counter()
        # Sampling draws from torch's RNG: reseed per step (and rank) so a resumed run samples what it would have.
        runtime.seed_everything(seed * 100_003 + step + 7_919_111 * engine.rank)
        step_prompts = _prompts_for_step(prompts, step, prompts_per_step, seed)
        mine = step_prompts[engine.rank::engine.world_size]  # data parallel: each process its share of prompts
        rows_prompts = [p for p in mine for _ in range(k)]
        batch, stats, losses, extras = rl_step(engine, policy, method, fmt, reward_model, rm_tokenizer,
                                               rm_meta["kind"], rows_prompts, cfg, guards=guards,
                                               reference_lengths=_lengths_of(reference_lengths, rows_prompts))
        seq_kl = F.sequence_kl(batch.logp, batch.ref_logp, batch.mask)
        guards.update(seq_kl.mean().item(), len(batch))

        if logger:
            logger.log({
                "step": step + 1,
                "episodes": (step + 1) * cfg.rollout_batch_size,
                "reward_mean": F.kl_shaped_return(batch.scores, seq_kl, batch.kl_coef).mean().item(),
                "reward_std": batch.scores.std().item() if len(batch) > 1 else 0.0,
                "score_mean": stats["score_mean"],
                "kl": seq_kl.mean().item(),
                "kl_k3": F.masked_sum(F.kl_k3(batch.logp, batch.ref_logp), batch.mask, dim=1).mean().item(),
                "kl_coef": batch.kl_coef,
                "entropy": F.masked_mean(batch.entropy, batch.mask).item(),
                "length": stats["length"],
                "eos_rate": stats["eos_rate"],
                "loss": sum(losses) / len(losses),
                "clip_frac": _mean_of(extras, "clip_frac"),
                "value_loss": _mean_of(extras, "value_loss"),
                "explained_variance": stats.get("explained_variance", ""),
                "seconds": time.perf_counter() - t0,
            })
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < num_steps:
            engine.save(ckpt_dir, {"step": step + 1, "fingerprint": fingerprint, "method": method.state_dict(),
                                   "guards": guards.state_dict()})
            log.info("checkpoint at step %d -> %s", step + 1, ckpt_dir)
        if stop_after is not None and step + 1 >= stop_after:
            return {"stopped_at": step + 1}

    summary = {"method": method_name, "seed": seed, "steps": num_steps, "resumed_from": start,
               "seconds": round(time.perf_counter() - t_run, 1)}
    save_final(engine, policy, ckpt_dir, {"step": num_steps, "fingerprint": fingerprint, "method": method.state_dict(),
                                          "guards": guards.state_dict()})
    if main:
        write_run(out_dir, ckpt_dir, tokenizer, {
            **summary, "stage": "rl", "task": "causal_lm", "base": sft_dir, "num_labels": None, "reward": None,
            "deepspeed": compute.deepspeed, "lora": True,
            "aux_modules": [VALUE_HEAD] if _value_head(policy) is not None else [], "rl": cfg.as_dict(),
        })
    return summary


def save_final(engine, policy, ckpt_dir: Path, state: dict) -> None:
    """The trained adapter to ckpt_dir/final (and, under DeepSpeed, the last ZeRO checkpoint beside it, which is
    what `consolidate` rebuilds the weights from). Every process calls this: ZeRO saves and gathers are collective."""
    if engine.zero_stage:
        engine.save(ckpt_dir, state)
    with engine.full_weights():  # ZeRO-3: the adapter's partitions, gathered
        if engine.rank == 0:
            policy.save_pretrained(str(ckpt_dir / "final"), safe_serialization=True)


def write_run(out_dir: Path, ckpt_dir: Path, tokenizer, manifest: dict) -> None:
    """models/rl_run/<policy>/ in the layout `consolidate` reads for SFT and reward too: final/ (the adapter),
    checkpoint-N/ (the last ZeRO checkpoint, moved out of checkpoints/rl/, under DeepSpeed), sumrl_run.json."""
    checkpoint = f"checkpoint-{manifest['steps']}" if manifest["deepspeed"] != "none" else None
    with atomic_path(out_dir, is_dir=True) as tmp:
        shutil.move(ckpt_dir / "final", tmp / "final")
        tokenizer.save_pretrained(str(tmp / "final"))
        if checkpoint:
            (tmp / checkpoint).mkdir()
            for name in (f"global_step{manifest['steps']}", "latest"):
                shutil.move(ckpt_dir / name, tmp / checkpoint / name)
        write_json(tmp / "sumrl_run.json", {**manifest, "last_checkpoint": checkpoint})
    shutil.rmtree(ckpt_dir, ignore_errors=True)


def _value_head(policy) -> ValueHead | None:
    return policy._modules.get(VALUE_HEAD)


def rl_step(engine, policy, method: Method, fmt: PromptFormat, reward_model, rm_tokenizer, rm_kind: str,
            prompts: list[str], cfg: RLConfig, guards: Guards | None = None,
            reference_lengths: torch.Tensor | None = None) -> tuple:
    """One iteration on this process's `prompts` (each repeated k times): rollout, guards (the run's, or fresh
    ones from `cfg`), advantages, update. Returns the shaped rollout, its stats, and the losses and loss stats
    of each optimizer step."""
    guards = guards or Guards(cfg)
    value_head = _value_head(policy)
    single = is_single_update(cfg, len(prompts))
    with engine.full_weights():
        batch, stats = rollout(policy, fmt, reward_model, rm_tokenizer, rm_kind, prompts, cfg, value_head,
                               with_pi_old=not single)
    on_policy_pass = None
    if single:  # the update's one forward, taken before the advantages: pi_theta is pi_old here
        on_policy_pass = policy_pass(engine, value_head, batch, cfg)
        batch = batch.with_policy(*on_policy_pass)
    batch = guards.shape(batch, reference_lengths)
    adv, extra = method.advantages(batch)
    stats.update({key: value for key, value in extra.items() if isinstance(value, float)})
    losses, extras = update(engine, value_head, method, batch, adv, extra, cfg, on_policy_pass)
    return batch, stats, losses, extras


def is_single_update(cfg: RLConfig, rows: int) -> bool:
    """One epoch, one mini-batch, no micro-batches: the update's forward is on the rollout's own weights."""
    return cfg.epochs == 1 and cfg.mini_batches == 1 and (cfg.micro_batch_size or rows) >= rows


def policy_pass(engine, value_head, batch, cfg: RLConfig, rows: torch.Tensor | None = None):
    """log pi and V of `rows` of the rollout (all of it by default), with gradients."""
    engine.model.train()
    prompts, completions = ((batch.prompts, batch.completion_ids) if rows is None
                            else (batch.prompts.select(rows), batch.completion_ids[rows]))
    return forward_completion(engine.model, prompts, completions, cfg.temperature, value_head)


def update(engine, value_head, method: Method, batch, adv, extra, cfg: RLConfig, on_policy_pass=None
           ) -> tuple[list[float], list[dict]]:
    """rl.epochs passes over the rollout in rl.mini_batches shuffled mini-batches, one optimizer step each.

    A mini-batch's gradient is accumulated over micro-batches of rl.micro_batch_size completions, each
    loss weighted by its share of the mini-batch (method.loss_weight), so the step is the same as one
    pass over the whole mini-batch while only one micro-batch's activations are alive at a time.
    With a single update (`is_single_update`), `on_policy_pass` is that whole-rollout forward, already
    taken to give pi_old: it is reused, not recomputed. Mini-batches hold whole prompts' groups of k
    completions, so each prompt still runs once per micro-batch.
    """
    engine.model.train()
    losses, extras = [], []
    for _epoch in range(cfg.epochs):
        for idx in _mini_batches(len(batch), method.samples_per_prompt, cfg.mini_batches,
                                 shuffle=on_policy_pass is None):
            loss_sum, stats = 0.0, {}
            micros = idx.split(cfg.micro_batch_size or len(idx))
            for i, micro in enumerate(micros):
                logp, values = on_policy_pass or policy_pass(engine, value_head, batch, cfg, micro)
                loss, loss_stats = method.loss(logp * batch.mask[micro], batch, micro, adv, extra, values)
                weight = method.loss_weight(batch, micro, idx)
                engine.backward(loss * weight, boundary=i == len(micros) - 1)
                loss_sum += weight * loss.item()
                for key, value in loss_stats.items():
                    stats[key] = stats.get(key, 0.0) + weight * value
            engine.step()
            losses.append(loss_sum)
            extras.append(stats)
    return losses, extras


def _mini_batches(n: int, k: int, count: int, shuffle: bool) -> list[torch.Tensor]:
    """Row indices of `count` mini-batches; rows come in groups of k (one prompt's completions), kept whole."""
    groups = torch.randperm(n // k) if shuffle else torch.arange(n // k)
    return [rows.flatten() for rows in (groups[:, None] * k + torch.arange(k)).chunk(count)]


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


def check_world_size(cfg: RLConfig, prompts_per_step: int, world_size: int) -> None:
    """The one batch-shape rule that validation cannot check before launch: each process takes whole prompt
    groups, and its share must split into rl.mini_batches."""
    if prompts_per_step % world_size or (prompts_per_step // world_size) % cfg.mini_batches:
        raise ValueError(f"rl.rollout_batch_size: {prompts_per_step} prompt group(s) per rollout do not split into "
                         f"{world_size} process(es) x rl.mini_batches = {cfg.mini_batches}; make "
                         "rollout_batch_size / k a multiple of world size x mini_batches")


def _fingerprint(params: dict, method: str, seed: int) -> str:
    """A checkpoint is resumed only by a run with the same result params (the stage table's keys for this
    method: another method's section, the seeds list or the thread count do not count) and seed."""
    keys = stages.result_params("rl", params, method=method)
    return hashlib.sha256(json.dumps({"params": keys, "seed": seed}, sort_keys=True).encode()).hexdigest()[:16]


def _reference_lengths(fmt: PromptFormat, prompts: list[str], rows: list[dict]) -> dict[str, int] | None:
    """prompt -> tokens of its human reference + EOS (the length penalty's target); None without references."""
    if not all(row.get("summary") for row in rows):
        return None
    return dict(zip(prompts, fmt.completion_lengths([row["summary"] for row in rows])))


def _lengths_of(lengths: dict[str, int] | None, prompts: list[str]) -> torch.Tensor | None:
    return None if lengths is None else torch.tensor([lengths[p] for p in prompts])


def _resume(ckpt_dir: Path, fingerprint: str, engine, method: Method, guards: Guards) -> int:
    state = read_state(ckpt_dir)
    if state is None:
        return 0
    if state["fingerprint"] != fingerprint:
        log.warning("%s: checkpoint is from other params; starting clean", ckpt_dir)
        return 0
    engine.load(ckpt_dir, state)
    method.load_state_dict(state["method"])
    guards.load_state_dict(state["guards"])
    log.info("resuming %s from step %d", ckpt_dir, state["step"])
    return state["step"]
