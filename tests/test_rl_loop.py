"""The RL loop end to end on the tiny model: every method trains, logs, saves, and resumes exactly."""

import csv
import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from sumrl import runtime
from sumrl.config import RLConfig
from sumrl.params import load_params
from sumrl.rl.loop import train
from sumrl.scale.consolidate import consolidate

from conftest import ROOT, TINY_OVERRIDES


def _params(tiny_model_dir, *extra):
    return load_params(ROOT / "params.yaml", overrides=[f"model.base={tiny_model_dir}", *TINY_OVERRIDES, *extra])


def _train(params, method, rl_inputs, tmp_path, tag, kind="scalar", **kw):
    runtime.setup(0, 2)
    return train(params, method, 0, out_dir=tmp_path / tag / "model", curve_path=tmp_path / tag / "curve.csv",
                 ckpt_dir=tmp_path / tag / "ckpt", sft_dir=str(params["model"]["base"]),
                 reward_dir=str(rl_inputs / f"rm_{kind}"), prompts_path=str(rl_inputs / "rl.jsonl"), **kw)


@pytest.mark.parametrize("method", ["reinforce", "rloo", "ppo", "grpo"])
def test_method_trains_logs_and_saves(method, tiny_model_dir, rl_inputs, tmp_path):
    params = _params(tiny_model_dir, "rl.grpo.k=2")
    summary = _train(params, method, rl_inputs, tmp_path, "run")
    assert summary["steps"] == params["rl"]["total_episodes"] // params["rl"]["rollout_batch_size"]
    rows = list(csv.DictReader(open(tmp_path / "run" / "curve.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, summary["steps"] + 1))
    for col in ("reward_mean", "kl", "entropy", "length", "eos_rate", "loss", "seconds"):
        assert all(r[col] != "" for r in rows), col
    assert all(r["clip_frac"] != "" for r in rows)  # every method clips a reused rollout (2 mini-batches here)
    if method == "ppo":
        assert all(r["value_loss"] != "" for r in rows)
    # the run folder holds the adapter; `consolidate` merges it into the SFT weights, which moved
    run_dir = tmp_path / "run" / "model"
    manifest = json.loads((run_dir / "sumrl_run.json").read_text())
    assert (manifest["stage"], manifest["lora"], manifest["deepspeed"]) == ("rl", True, "none")
    assert manifest["aux_modules"] == (["value_head"] if method == "ppo" else [])
    report = consolidate(run_dir, tmp_path / "merged", "rl")
    assert report["ok"] and report["source"] == "adapter" and report["adapter_effect"] > 0
    saved = load_file(str(tmp_path / "merged" / "model.safetensors"))
    start = load_file(str(tiny_model_dir / "model.safetensors"))
    assert not any("lora" in k for k in saved)
    moved = max((saved[k] - start[k]).abs().max().item() for k in start if "q_proj" in k)
    assert moved > 0
    assert not (tmp_path / "run" / "ckpt").exists()  # checkpoints are removed once the output is written


@pytest.mark.parametrize("method", ["reinforce", "ppo"])
def test_killed_run_resumes_to_the_same_weights(method, tiny_model_dir, rl_inputs, tmp_path):
    # 4 steps, a checkpoint every 2; the run dies after step 3, so step 3 is lost and replayed
    params = _params(tiny_model_dir, "rl.total_episodes=16", "rl.checkpoint_every=2")
    _train(params, method, rl_inputs, tmp_path, "whole")
    stopped = _train(params, method, rl_inputs, tmp_path, "split", stop_after=3)
    assert stopped == {"stopped_at": 3}
    assert json.loads((tmp_path / "split" / "ckpt" / "state.json").read_text())["step"] == 2  # last checkpoint
    resumed = _train(params, method, rl_inputs, tmp_path, "split")
    assert resumed["resumed_from"] == 2
    whole = load_file(str(tmp_path / "whole" / "model" / "final" / "adapter_model.safetensors"))
    split = load_file(str(tmp_path / "split" / "model" / "final" / "adapter_model.safetensors"))
    assert max((whole[k] - split[k]).abs().max().item() for k in whole) == 0.0
    # the curve holds each step once, as if never interrupted
    assert [r["step"] for r in csv.DictReader(open(tmp_path / "split" / "curve.csv"))] == ["1", "2", "3", "4"]


def test_checkpoint_from_other_params_is_not_resumed(tiny_model_dir, rl_inputs, tmp_path):
    params = _params(tiny_model_dir, "rl.total_episodes=16", "rl.checkpoint_every=1")
    _train(params, "reinforce", rl_inputs, tmp_path, "a", stop_after=2)
    other = _params(tiny_model_dir, "rl.total_episodes=16", "rl.checkpoint_every=1", "rl.kl_coef=0.5")
    assert _train(other, "reinforce", rl_inputs, tmp_path, "a")["resumed_from"] == 0


def test_probabilistic_rm_with_variance_regularization(tiny_model_dir, rl_inputs, tmp_path):
    params = _params(tiny_model_dir, "reward.kind=probabilistic",
                     "rl.variance_regularized=true")
    summary = _train(params, "rloo", rl_inputs, tmp_path, "prob", kind="probabilistic")
    rows = list(csv.DictReader(open(tmp_path / "prob" / "curve.csv")))
    # E[s] of a 1..10 distribution
    assert all(1.0 <= float(r["score_mean"]) <= 10.0 for r in rows)
    assert summary["steps"] == len(rows)


@pytest.mark.parametrize("method", ["rloo", "ppo"])
def test_micro_batches_accumulate_the_mini_batch_gradient(method, tiny_model_dir, rl_inputs):
    """rl.micro_batch_size=1 takes the same optimizer step as one pass over the mini-batch: each micro-batch
    is weighted by its share of the loss's mean (completions for RLOO, completion tokens for PPO)."""
    from sumrl.data.prompts import PromptFormat
    from sumrl.models.load import load_policy, load_reward_model, load_tokenizer
    from sumrl.rl.core import ValueHead, add_lora, rollout
    from sumrl.rl.engine import PlainEngine
    from sumrl.rl.loop import update
    from sumrl.rl.methods import build_method

    params = _params(tiny_model_dir, "rl.mini_batches=1", "rl.rollout_batch_size=4", "rl.rloo.k=2")
    cfg = RLConfig.from_params(params)
    runtime.setup(0, 2)
    tok = load_tokenizer(str(tiny_model_dir))
    rm, meta = load_reward_model(str(rl_inputs / "rm_scalar"), params)
    prompts = [PromptFormat.from_params(tok, params).prompt(json.loads(line)["document"])
               for line in open(rl_inputs / "rl.jsonl")][:2]

    def one_step(micro_batch_size):
        torch.manual_seed(0)
        policy = add_lora(load_policy(str(tiny_model_dir), params), cfg.lora)
        for name, p in policy.named_parameters():  # B = 0 at init would leave A's gradient zero
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.02)
        value_head = None
        if method == "ppo":
            value_head = ValueHead(policy.config.hidden_size)
            torch.nn.init.normal_(value_head.linear.weight, std=0.02)
            policy.add_module("value_head", value_head)
        engine = PlainEngine(policy, cfg)
        engine.optimizer = torch.optim.SGD(engine.trainable, lr=1.0)  # lr 1: the change is the clipped gradient
        m = build_method(method, cfg)
        torch.manual_seed(1)
        batch, _ = rollout(policy, PromptFormat.from_params(tok, params), rm, tok, meta["kind"],
                              [p for p in prompts for _ in range(2)], cfg, value_head)
        # The tiny model never samples EOS: end the completions at different lengths, as EOS would.
        lengths = torch.tensor([12, 9, 5, 2])
        mask = (torch.arange(batch.completion_len) < lengths[:, None]).float()
        batch = dataclasses.replace(batch, mask=mask, logp=batch.logp * mask, ref_logp=batch.ref_logp * mask,
                                    values=None if batch.values is None else batch.values * mask)
        adv, extra = m.advantages(batch)
        before = [p.detach().clone() for p in engine.trainable]
        losses, _ = update(engine, value_head, m, batch, adv, extra, cfg.replace(micro_batch_size=micro_batch_size))
        return [b - p.detach() for b, p in zip(before, engine.trainable)], losses

    whole, whole_loss = one_step(None)
    micro, micro_loss = one_step(1)
    assert micro_loss == pytest.approx(whole_loss, rel=1e-5, abs=1e-7)
    for g_whole, g_micro in zip(whole, micro):
        torch.testing.assert_close(g_micro, g_whole, rtol=1e-4, atol=1e-7)
    assert max(g.abs().max().item() for g in whole) > 0


@pytest.mark.parametrize("method", ["rloo", "ppo"])
def test_single_update_reuses_its_forward_as_pi_old_and_takes_the_same_step(method, tiny_model_dir, rl_inputs):
    """With one epoch and one mini-batch, rl_step takes pi_old (and PPO's values) from the update's own
    forward instead of a separate pass. Splitting the batch into micro-batches turns that off; the step
    must be the same either way."""
    from sumrl.data.prompts import PromptFormat
    from sumrl.models.load import load_policy, load_reward_model, load_tokenizer
    from sumrl.rl.core import ValueHead, add_lora
    from sumrl.rl.engine import PlainEngine
    from sumrl.rl.loop import is_single_update, rl_step
    from sumrl.rl.methods import build_method

    # no length penalty: the step is called without the prompts' reference lengths
    params = _params(tiny_model_dir, "rl.mini_batches=1", "rl.epochs=1", "rl.rollout_batch_size=4", "rl.rloo.k=2",
                     "rl.length_penalty=0")
    runtime.setup(0, 2)
    tok = load_tokenizer(str(tiny_model_dir))
    rm, meta = load_reward_model(str(rl_inputs / "rm_scalar"), params)
    fmt = PromptFormat.from_params(tok, params)
    prompts = [fmt.prompt(json.loads(line)["document"]) for line in open(rl_inputs / "rl.jsonl")][:2]
    rows = [p for p in prompts for _ in range(2)] if method == "rloo" else prompts * 2

    def one_step(micro_batch_size):
        cfg = RLConfig.from_params(params).replace(micro_batch_size=micro_batch_size)
        torch.manual_seed(0)
        policy = add_lora(load_policy(str(tiny_model_dir), params), cfg.lora)
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.02)
        if method == "ppo":
            policy.add_module("value_head", ValueHead(policy.config.hidden_size))
            torch.nn.init.normal_(policy.value_head.linear.weight, std=0.02)
        engine = PlainEngine(policy, cfg)
        torch.manual_seed(1)
        batch, _, losses, _ = rl_step(engine, policy, build_method(method, cfg), fmt, rm, tok, meta["kind"], rows, cfg)
        return is_single_update(cfg, len(rows)), batch, losses, [p.detach().clone() for p in engine.trainable]

    single, batch, loss, weights = one_step(None)
    split, split_batch, split_loss, split_weights = one_step(3)
    assert single and not split
    assert torch.equal(batch.completion_ids, split_batch.completion_ids)
    torch.testing.assert_close(batch.logp, split_batch.logp, rtol=1e-5, atol=1e-6)
    assert loss == pytest.approx(split_loss, rel=1e-5, abs=1e-7)
    for a, b in zip(weights, split_weights):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
