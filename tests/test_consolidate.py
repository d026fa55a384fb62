"""`sumrl consolidate` on real tiny runs: plain and ZeRO-2/3, LoRA and full fine-tunes, SFT and reward,
tied embeddings, and broken checkpoints (a truncated shard, a missing shard, final/ disagreeing with the
checkpoint, a bad save), which must fail naming the file and leave no output folder.

The runs are trained once per session by tests/test_deepspeed.py; tests that break one work on a copy.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from sumrl import cli
from sumrl.artifacts import read_json
from sumrl.models.load import load_reward_model
from sumrl.scale import consolidate as cons
from sumrl.scale.consolidate import ConsolidationError, consolidate
from sumrl.scale.deepspeed import weights_only_torch_load

from test_deepspeed import RUNS, STEPS

ROOT = Path(__file__).resolve().parents[1]
TAG = f"checkpoint-{STEPS}/global_step{STEPS}"


def copy_run(tiny_runs, name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_runs[name], tmp_path / name))


def assert_fails_without_output(run: Path, out: Path, stage: str, match: str) -> ConsolidationError:
    with pytest.raises(ConsolidationError, match=match) as info:
        consolidate(run, out, stage)
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.*"))  # no temporary folder left behind either
    return info.value


# ---- runs that consolidate ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(RUNS))
def test_every_kind_of_run_consolidates_and_verifies(tiny_runs, tmp_path, name):
    stage, mode, lora = RUNS[name]
    out = tmp_path / "out"
    report = consolidate(tiny_runs[name], out, stage)
    assert report["ok"] and report["names_match"] and report["ties_match"]
    assert report["source"] == (f"{mode} checkpoint-{STEPS}" if mode != "none" else "adapter")
    assert report["param_count"] == report["param_count_in_memory"]
    # The same tensors were saved, reloaded and rebuilt from the checkpoint: exact, not merely close.
    assert report["max_weight_diff"] == report["max_source_diff"] == report["max_reload_logit_diff"] == 0.0
    assert report["tolerance"] == cons.TOLERANCE
    assert report["logit_tolerance"] == cons.TOLERANCE * max(1.0, report["max_abs_logit"])
    assert report["max_logit_diff"] <= report["logit_tolerance"]
    if lora:
        # The check is not vacuous: the adapter moves the logits far more than the tolerance.
        assert report["adapter_effect"] > 1000 * report["logit_tolerance"]
    assert not (out / "adapter_config.json").exists()
    assert (out / "tokenizer.json").is_file() and (out / "model.safetensors").is_file()


@pytest.mark.parametrize("name", ["sft_zero3_full", "sft_zero2_lora"])
def test_tied_embeddings_survive_consolidation(tiny_runs, tmp_path, name):
    out = tmp_path / "out"
    report = consolidate(tiny_runs[name], out, "sft")
    assert report["tied_embeddings"] is True
    model = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert "lm_head.weight" not in load_file(out / "model.safetensors")  # stored once


def test_full_fine_tune_weights_are_the_checkpoints_not_the_base(tiny_runs, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    consolidate(tiny_runs["sft_zero3_full"], out, "sft")
    trained = load_file(out / "model.safetensors")
    base = load_file(tiny_model_dir / "model.safetensors")
    assert max((trained[k] - base[k]).abs().max().item() for k in base) > 1e-3
    rebuilt = load_file(tiny_runs["sft_zero3_full"] / "final" / "model.safetensors")
    assert all(torch.equal(trained[k], rebuilt[k]) for k in rebuilt)


def test_reward_model_keeps_its_trained_head_and_metadata(tiny_runs, tiny_params, tmp_path):
    out = tmp_path / "out"
    consolidate(tiny_runs["reward_zero3_lora"], out, "reward")
    model, meta = load_reward_model(out, tiny_params)
    assert meta == {"kind": "scalar", "num_scores": 10}
    adapter = load_file(tiny_runs["reward_zero3_lora"] / "final" / "adapter_model.safetensors")
    head = next(v for k, v in adapter.items() if k.endswith("score.weight"))
    assert torch.equal(model.score.weight, head)


def test_two_rank_zero3_partitions_are_gathered(two_rank_run, tmp_path):
    report = consolidate(two_rank_run, tmp_path / "out", "sft")
    assert report["ok"] and report["source"] == f"zero3 checkpoint-{STEPS}"
    assert report["max_source_diff"] == report["max_weight_diff"] == 0.0


# ---- runs that must not consolidate ----------------------------------------------------------------


@pytest.mark.parametrize("name, shard", [
    ("sft_zero3_lora", "zero_pp_rank_0_mp_rank_00_optim_states.pt"),
    ("sft_zero2_full", "mp_rank_00_model_states.pt"),
])
def test_truncated_shard_is_named(tiny_runs, tmp_path, name, shard):
    run = copy_run(tiny_runs, name, tmp_path)
    path = run / TAG / shard
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert_fails_without_output(run, tmp_path / "out", RUNS[name][0], f"{path}: unreadable ZeRO shard")


@pytest.mark.parametrize("name, shard", [
    ("sft_zero3_full", "zero_pp_rank_0_mp_rank_00_model_states.pt"),
    ("reward_zero3_lora", "zero_pp_rank_0_mp_rank_00_optim_states.pt"),
])
def test_missing_shard_is_named(tiny_runs, tmp_path, name, shard):
    run = copy_run(tiny_runs, name, tmp_path)
    (run / TAG / shard).unlink()
    assert_fails_without_output(run, tmp_path / "out", RUNS[name][0], f"{run / TAG / shard}: missing ZeRO shard")


def test_missing_partition_of_the_second_rank_is_named(two_rank_run, tmp_path):
    run = Path(shutil.copytree(two_rank_run, tmp_path / "run"))
    shard = run / TAG / "zero_pp_rank_1_mp_rank_00_model_states.pt"
    shard.unlink()
    assert_fails_without_output(run, tmp_path / "out", "sft", r"missing ZeRO shard \(rank 1 of 2\)")


class Payload:
    """What a tampered checkpoint could pickle: unpickling it would run os.mkdir(marker)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@pytest.mark.parametrize("name, shard", [
    ("sft_zero2_full", "mp_rank_00_model_states.pt"),
    ("sft_zero3_lora", "zero_pp_rank_0_mp_rank_00_optim_states.pt"),
])
def test_shard_that_pickles_code_is_refused_without_running_it(tiny_runs, tmp_path, name, shard):
    run = copy_run(tiny_runs, name, tmp_path)
    path = run / TAG / shard
    with weights_only_torch_load():
        state = torch.load(str(path), map_location="cpu")
    marker = tmp_path / "code-ran"
    torch.save({**state, "extra": Payload(marker)}, str(path))
    assert_fails_without_output(run, tmp_path / "out", RUNS[name][0], f"{path}: ZeRO shard holds Python objects")
    assert not marker.exists()


def test_missing_latest_tag_is_named(tiny_runs, tmp_path):
    run = copy_run(tiny_runs, "sft_zero2_lora", tmp_path)
    (run / f"checkpoint-{STEPS}" / "latest").unlink()
    assert_fails_without_output(run, tmp_path / "out", "sft", "latest: missing")


def test_truncated_adapter_is_named(tiny_runs, tmp_path):
    run = copy_run(tiny_runs, "sft_plain_lora", tmp_path)
    path = run / "final" / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    assert_fails_without_output(run, tmp_path / "out", "sft", f"{path}: unreadable safetensors")


def test_checkpoint_that_disagrees_with_final_is_refused(tiny_runs, tmp_path):
    """What the engine saved in final/ and what the ZeRO checkpoint rebuilds must be the same weights."""
    run = copy_run(tiny_runs, "sft_zero3_lora", tmp_path)
    path = run / "final" / "adapter_model.safetensors"
    tensors = load_file(path)
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, path)
    error = assert_fails_without_output(run, tmp_path / "out", "sft", "max_source_diff")
    assert error.report["ok"] is False and error.report["max_source_diff"] == pytest.approx(1e-3, rel=1e-2)


def test_a_bad_save_is_caught_by_reloading(tiny_runs, tmp_path, monkeypatch):
    """If what lands on disk is not the merged model, the reload checks fail and nothing is published."""
    real_save = cons.save_consolidated

    def save_then_damage(model, tokenizer, manifest, out):
        real_save(model, tokenizer, manifest, out)
        tensors = load_file(out / "model.safetensors")
        tensors["model.norm.weight"] = tensors["model.norm.weight"] * 1.01
        save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})

    monkeypatch.setattr(cons, "save_consolidated", save_then_damage)
    error = assert_fails_without_output(tiny_runs["sft_zero3_lora"], tmp_path / "out", "sft", "max_weight_diff")
    assert error.report["max_logit_diff"] > error.report["logit_tolerance"]


def test_wrong_stage_is_refused(tiny_runs, tmp_path):
    assert_fails_without_output(tiny_runs["sft_plain_lora"], tmp_path / "out", "reward", "a 'sft' run")


# ---- through the CLI ------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A working directory laid out like the repo root; caches the CLI redirects stay inside it."""
    for key in ("XDG_CACHE_HOME", "HF_HOME", "TORCH_EXTENSIONS_DIR", "DVC_SITE_CACHE_DIR", "MPLCONFIGDIR"):
        monkeypatch.setenv(key, str(tmp_path / ".cache" / key.lower()))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    return tmp_path


def sumrl_consolidate(stage: str) -> int:
    return cli.main(["consolidate", "--stage", stage, "--params", str(ROOT / "params.yaml")])


def test_cli_writes_the_folder_and_the_report(tiny_runs, project):
    shutil.copytree(tiny_runs["reward_zero3_lora"], project / "models" / "reward_run")
    assert sumrl_consolidate("reward") == 0
    report = read_json(project / "reports" / "consolidate" / "reward.json")
    assert report["ok"] is True and report["stage"] == "reward"
    assert json.loads((project / "models" / "reward" / "sumrl_reward.json").read_text())["kind"] == "scalar"


def test_cli_fails_loudly_naming_the_shard(tiny_runs, project, capsys):
    run = Path(shutil.copytree(tiny_runs["sft_zero3_full"], project / "models" / "sft_run"))
    shard = run / TAG / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    shard.write_bytes(b"")
    assert sumrl_consolidate("sft") != 0
    assert "zero_pp_rank_0_mp_rank_00_optim_states.pt" in capsys.readouterr().err
    assert not (project / "models" / "sft").exists()
    report = read_json(project / "reports" / "consolidate" / "sft.json")
    assert report["ok"] is False and "optim_states.pt" in report["error"]
