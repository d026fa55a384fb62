"""DeepSpeed and launcher plumbing (sumrl.scale.deepspeed, sumrl.scale.launch) and the tiny training runs
that tests/test_consolidate.py consolidates.

The runs are real: trl SFTTrainer/RewardTrainer, two steps on the tiny model, single-process DeepSpeed
ZeRO-2/3 on CPU through `trainer_kwargs` and `prepare_distributed_env`, exactly as the training stages
call them. They are trained in one child process (`python tests/test_deepspeed.py ...`): DeepSpeed
leaves process-wide state behind (a process group, ZeRO-3's hook into from_pretrained) that must not
leak into the test process, which later loads models to consolidate them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sumrl.config import RLConfig
from sumrl.params import ParamsError, load_params
from sumrl.scale import deepspeed as ds
from sumrl.scale import launch

ROOT = Path(__file__).resolve().parents[1]
MODES = ["zero2", "zero2_offload", "zero3", "zero3_offload"]

# name -> (stage, deepspeed, lora). Plain runs come first: a DeepSpeed run leaves RANK/WORLD_SIZE set,
# which would make a later plain HF Trainer in the same process think it is distributed.
RUNS = {
    "sft_plain_lora": ("sft", "none", True),
    "reward_plain_lora": ("reward", "none", True),
    "sft_zero2_lora": ("sft", "zero2", True),
    "sft_zero3_lora": ("sft", "zero3", True),
    "sft_zero2_full": ("sft", "zero2", False),
    "sft_zero3_full": ("sft", "zero3", False),
    "reward_zero3_lora": ("reward", "zero3", True),
}
STEPS = 2
TEXTS = [
    "We propose a parser for long scientific abstracts and evaluate it on three corpora.",
    "This paper studies summarization with human feedback and reports ROUGE and reward.",
    "A small model trained with reinforcement learning writes shorter, more faithful summaries.",
    "We release a data set of annotated summaries for computational linguistics papers.",
]


# ---- the tiny runs ---------------------------------------------------------------------------------


def train_run(base: Path, out: Path, stage: str, deepspeed: str, lora: bool) -> None:
    """Train `STEPS` steps and write the run folder the way the training stages do (sumrl_run.json contract)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config
    from trl import RewardConfig, RewardTrainer, SFTConfig, SFTTrainer

    params = params_with(deepspeed=deepspeed, device="cpu")
    ds.prepare_distributed_env(params)
    torch.manual_seed(0)
    common = dict(
        output_dir=str(out), max_steps=STEPS, save_steps=STEPS, per_device_train_batch_size=2, learning_rate=1e-2,
        use_cpu=True, bf16=False, report_to="none", logging_steps=1, seed=0, disable_tqdm=True,
        **ds.trainer_kwargs(params),
    )
    tok = AutoTokenizer.from_pretrained(str(base))
    task = "causal_lm" if stage == "sft" else "sequence_classification"
    if stage == "sft":
        model = AutoModelForCausalLM.from_pretrained(str(base))
        trainer = SFTTrainer(
            model=model, args=SFTConfig(max_length=64, **common), processing_class=tok,
            train_dataset=Dataset.from_dict({"text": TEXTS}),
            peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
            if lora else None,
        )
    else:
        model = AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=1)
        model.config.pad_token_id = tok.pad_token_id
        trainer = RewardTrainer(
            model=model, args=RewardConfig(max_length=64, **common), processing_class=tok,
            train_dataset=Dataset.from_dict({"chosen": TEXTS, "rejected": TEXTS[::-1]}),
            peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="SEQ_CLS")
            if lora else None,
        )
    trainer.train()
    trainer.save_model(str(out / "final"))
    manifest = {
        "stage": stage, "task": task, "base": str(base), "num_labels": 1 if stage == "reward" else None,
        "reward": {"kind": "scalar", "num_scores": 10} if stage == "reward" else None,
        "deepspeed": deepspeed, "lora": lora, "last_checkpoint": f"checkpoint-{STEPS}",
    }
    (out / "sumrl_run.json").write_text(json.dumps(manifest, indent=2))
    unset_hf_deepspeed_config()  # ZeRO-3 would otherwise partition the next run's from_pretrained


_BUILT: dict[str, dict[str, Path]] = {}  # trained once per session (fixtures tiny_runs, two_rank_run: conftest.py)


def build_runs(key: str, base: Path, root: Path, names: list[str], ranks: int = 1) -> dict[str, Path]:
    """Train `names` into `root` in a child process (torchrun with `ranks` processes when ranks > 1)."""
    if key not in _BUILT:
        env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(ROOT / ".cache" / "torch_extensions")}
        launcher = [sys.executable]
        if ranks > 1:
            env["OMP_NUM_THREADS"] = "1"  # two ranks share the two cores
            launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}",
                        f"--master_port={ds.free_port()}"]
        proc = subprocess.run([*launcher, __file__, str(base), str(root), *names],
                              env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        _BUILT[key] = {name: root / name for name in names}
    return _BUILT[key]


# ---- configs ---------------------------------------------------------------------------------------


def params_with(**compute) -> dict:
    return load_params(ROOT / "params.yaml", overrides=[f"compute.{k}={v}" for k, v in compute.items()])


def mode_params(mode: str) -> dict:
    stage, _, offload = mode.partition("_")
    return params_with(deepspeed=stage, offload="cpu" if offload else "none")


@pytest.mark.parametrize("mode", MODES)
def test_trainer_kwargs_hands_over_the_workflow_config(mode):
    kwargs = ds.trainer_kwargs(mode_params(mode))
    config = kwargs["deepspeed"]
    on_disk = json.loads((ROOT / "workflow" / "launch" / f"ds_{mode}.json").read_text())
    assert config == on_disk
    zero = config["zero_optimization"]
    assert zero["stage"] == int(mode[4])
    assert ("offload_optimizer" in zero) == mode.endswith("offload")
    # No "optimizer" block without offload: DeepSpeed would compile its own Adam; the Trainer's AdamW needs this.
    assert config["zero_allow_untested_optimizer"] is True
    # The HF Trainer fills these from its arguments, so bf16 is off on CPU and on where the stage turns it on.
    assert config["bf16"]["enabled"] == config["fp16"]["enabled"] == "auto"


def test_trainer_kwargs_are_empty_without_deepspeed():
    assert ds.trainer_kwargs(params_with(deepspeed="none")) == {}


def test_offload_without_zero_is_refused():
    with pytest.raises(ParamsError, match="compute.offload"):
        ds.trainer_kwargs(params_with(deepspeed="none", offload="cpu"))


class _Model:
    """What rl_deepspeed_config reads of a model: its config's hidden size and its parameters' dtype."""

    config = type("Config", (), {"hidden_size": 64})()

    def parameters(self):
        import torch

        yield torch.zeros(1)


@pytest.mark.parametrize("mode", MODES)
def test_rl_deepspeed_config_fills_every_auto_from_the_rl_params(mode):
    params = mode_params(mode)
    params["rl"].update(rollout_batch_size=8, mini_batches=2, micro_batch_size=3, max_grad_norm=0.5)
    config = ds.rl_deepspeed_config(params, RLConfig.from_params(params), _Model())
    assert "auto" not in json.dumps(config)
    # mini-batch of 4 in micro-batches of 3: two micro-batches (3 + 1), so the engine sees 3 x 2 per step
    assert (config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"]) == (3, 2)
    assert config["train_batch_size"] == 6 and config["gradient_clipping"] == 0.5
    assert config["bf16"]["enabled"] is False and config["fp16"]["enabled"] is False
    assert config["zero_optimization"]["reduce_bucket_size"] == 64 * 64
    if "optimizer" in config:
        assert config["optimizer"]["params"]["lr"] == params["rl"]["learning_rate"]


@pytest.mark.parametrize("trained_dtype,bf16", [("float32", False), ("bfloat16", True)])
def test_rl_deepspeed_config_takes_bf16_from_what_trains(trained_dtype, bf16):
    """A bf16 base with peft's fp32 adapter trains in fp32, as without DeepSpeed: bf16 mode would cast the adapter
    to bf16 (this took a different first step on SmolLM2, max 1.3e-3 on adapter weights of max 0.042)."""
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 4).to(torch.bfloat16), torch.nn.Linear(4, 4))
    model[0].requires_grad_(False)
    model[1].to(getattr(torch, trained_dtype))
    model.config = _Model.config
    params = mode_params("zero2")
    config = ds.rl_deepspeed_config(params, RLConfig.from_params(params), model)
    assert config["bf16"]["enabled"] is bf16


def test_rl_deepspeed_config_names_an_auto_it_cannot_fill(tmp_path):
    with pytest.raises(ParamsError, match=r"ds.json: zero_optimization.new_knob: 'auto'"):
        ds.fill_auto({"zero_optimization": {"stage": 2, "new_knob": "auto"}}, {}, tmp_path / "ds.json")


def test_rl_deepspeed_config_is_none_without_deepspeed():
    params = params_with(deepspeed="none")
    assert ds.rl_deepspeed_config(params, RLConfig.from_params(params), _Model()) is None


@pytest.mark.parametrize("mode", ["ddp", *MODES])
def test_accelerate_configs_load_and_point_at_the_same_zero_config(mode):
    from accelerate.commands.config.config_args import load_config_from_file

    path = ROOT / "workflow" / "launch" / f"accelerate_{mode}.yaml"
    config = load_config_from_file(str(path))
    if mode == "ddp":
        assert config.distributed_type == "MULTI_GPU"
        return
    assert config.distributed_type == "DEEPSPEED"
    assert (ROOT / config.deepspeed_config["deepspeed_config_file"]) == ROOT / "workflow" / "launch" / f"ds_{mode}.json"
    assert config.deepspeed_config["zero3_init_flag"] == mode.startswith("zero3")


@pytest.fixture
def environ(monkeypatch) -> dict:
    """A private copy of the environment: what prepare_distributed_env sets must not reach later tests."""
    dist_vars = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in dist_vars}
    monkeypatch.setattr(os, "environ", env)
    return env


def test_prepare_distributed_env_makes_a_world_of_one(environ):
    environ["TORCH_EXTENSIONS_DIR"] = "/somewhere/else"
    ds.prepare_distributed_env(params_with(deepspeed="zero3"))
    assert (environ["RANK"], environ["LOCAL_RANK"], environ["WORLD_SIZE"]) == ("0", "0", "1")
    assert 0 < int(environ["MASTER_PORT"]) < 65536
    assert environ["TORCH_EXTENSIONS_DIR"] == "/somewhere/else"  # the user's choice wins


def test_prepare_distributed_env_keeps_a_launchers_values(environ):
    environ.update(WORLD_SIZE="8", RANK="3", MASTER_PORT="29999")
    ds.prepare_distributed_env(params_with(deepspeed="zero2"))
    assert (environ["WORLD_SIZE"], environ["RANK"], environ["MASTER_PORT"]) == ("8", "3", "29999")


def test_prepare_distributed_env_leaves_plain_runs_alone(environ):
    ds.prepare_distributed_env(params_with(deepspeed="none"))
    assert "LOCAL_RANK" not in environ and "WORLD_SIZE" not in environ


# ---- relaunch ----------------------------------------------------------------------------------------


def test_relaunch_command_runs_the_same_stage_under_accelerate():
    params = params_with(launcher="accelerate", deepspeed="zero3", offload="cpu")
    cmd = launch.relaunch_command(params, ["sft", "--set", "sft.epochs=1"], gpus=8)
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("--config_file") + 1].endswith("workflow/launch/accelerate_zero3_offload.yaml")
    assert Path(cmd[cmd.index("--deepspeed_config_file") + 1]) == ROOT / "workflow" / "launch" / "ds_zero3_offload.json"
    assert cmd[cmd.index("--num_processes") + 1] == "8"
    assert cmd[-5:] == ["-m", "sumrl.cli", "sft", "--set", "sft.epochs=1"]
    cpu = launch.relaunch_command(params_with(launcher="accelerate"), ["sft"], gpus=0)
    assert "--cpu" in cpu and cpu[cpu.index("--config_file") + 1].endswith("accelerate_ddp.yaml")
    # With ZeRO on a CPU, no --cpu: it would switch accelerate's DeepSpeed off (the trainer ran without ZeRO).
    zero_cpu = launch.relaunch_command(params_with(launcher="accelerate", deepspeed="zero2"), ["sft"], gpus=0)
    assert "--cpu" not in zero_cpu and zero_cpu[zero_cpu.index("--num_processes") + 1] == "1"


def test_a_zero_config_without_the_deepspeed_engine_is_refused():
    """The guard behind the bug above: a trainer whose accelerator has no DeepSpeed plugin must not train.
    (A stand-in object for the trainer: a real one would need the broken launch to reproduce.)"""
    from types import SimpleNamespace

    from sumrl.train.common import run_trainer

    calls = []
    trainer = SimpleNamespace(is_deepspeed_enabled=False, train=lambda **kw: calls.append(kw))
    with pytest.raises(RuntimeError, match="compute.deepspeed is 'zero2' but the trainer's accelerator has no"):
        run_trainer(trainer, params_with(deepspeed="zero2"), None)
    assert calls == []
    run_trainer(trainer, params_with(deepspeed="none"), None)
    assert calls == [{"resume_from_checkpoint": None}]


def test_under_launcher_sees_accelerate_torchrun_and_ourselves():
    assert not launch.under_launcher({"PATH": "/bin"})
    for key in ("SUMRL_LAUNCHED", "ACCELERATE_MIXED_PRECISION", "LOCAL_RANK"):
        assert launch.under_launcher({key: "1"})


def test_maybe_relaunch_is_a_no_op_for_the_python_launcher(monkeypatch):
    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("must not relaunch"))
    launch.maybe_relaunch(params_with(launcher="python"), ["sft"])


def test_maybe_relaunch_reexecs_through_accelerate_once(tmp_path):
    """End to end on CPU: the child runs `sumrl validate` under `accelerate launch` and does not loop."""
    code = ("import logging, sys; logging.basicConfig(level=logging.INFO);"
            "from sumrl.params import load_params; from sumrl.scale.launch import maybe_relaunch;"
            "p = load_params('params.yaml', overrides=['compute.launcher=accelerate', 'compute.deepspeed=zero3']);"
            "maybe_relaunch(p, ['validate', '--set', 'compute.launcher=accelerate']); print('not relaunched')")
    env = {k: v for k, v in os.environ.items() if k not in launch.LAUNCHER_VARS}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "relaunching under accelerate" in proc.stderr
    assert proc.stdout.strip().endswith("params.yaml: ok")
    assert "not relaunched" not in proc.stdout


# ---- what DeepSpeed runs write -------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n, (_, mode, _) in RUNS.items() if mode != "none"])
def test_deepspeed_runs_write_zero_checkpoints_and_a_final_model(tiny_runs, name):
    _, mode, lora = RUNS[name]
    ckpt = tiny_runs[name] / f"checkpoint-{STEPS}"
    assert (ckpt / "latest").read_text().strip() == f"global_step{STEPS}"
    shards = sorted(p.name for p in (ckpt / f"global_step{STEPS}").iterdir())
    model_states = "zero_pp_rank_0_mp_rank_00_model_states.pt" if mode == "zero3" else "mp_rank_00_model_states.pt"
    assert shards == sorted([model_states, "zero_pp_rank_0_mp_rank_00_optim_states.pt"])
    final = tiny_runs[name] / "final"
    assert (final / ("adapter_model.safetensors" if lora else "model.safetensors")).is_file()


def test_two_rank_zero3_run_writes_one_partition_per_rank(two_rank_run):
    shards = sorted(p.name for p in (two_rank_run / f"checkpoint-{STEPS}" / f"global_step{STEPS}").iterdir())
    expected = [f"zero_pp_rank_{rank}_mp_rank_00_{kind}_states.pt" for rank in (0, 1) for kind in ("model", "optim")]
    assert shards == sorted(expected)


if __name__ == "__main__":
    base_dir, out_root, *names = sys.argv[1:]
    for run_name in names:
        train_run(Path(base_dir), Path(out_root) / run_name, *RUNS[run_name])
    from sumrl.runtime import close_distributed

    close_distributed()  # two ranks under torchrun: an open gloo group at exit can abort one of them
