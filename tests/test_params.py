"""Bad params fail at once, naming the key or file, before any model is loaded or any job runs.

Each case runs through both front doors: `sumrl validate` (the CLI every stage shares) and Snakemake
(`snakemake -n`; the Snakefile validates config with the same function, so the messages are the
same). A case is a preset merged over params.yaml, a whole params.yaml, or a missing preset file.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import pytest

from frontends import ROOT, SNAKEMAKE, run, scratch_workflow

# Runs the CLI in-process and fails if it imported torch: validation must come before anything heavy.
CLI = (
    "import sys; from sumrl.cli import main; rc = main(sys.argv[1:]); "
    "assert 'torch' not in sys.modules, 'torch was imported before params were rejected'; sys.exit(rc)"
)
PARAMS = (ROOT / "params.yaml").read_text()


@dataclass(frozen=True)
class Case:
    preset: str | None = None        # YAML merged over params.yaml (written to bad.yaml)
    params: str | None = None        # the whole params.yaml
    preset_path: str = "bad.yaml"    # where the preset is looked for (a missing one: not written)
    expect: tuple[str, ...] = ()     # in the message of both front ends
    dry_run: bool = True             # Snakemake: -n; False: a real run (files are checked when it starts)
    base_config: dict | None = None  # written to models/base/config.json (as the base-model stage leaves it)


CASES = {
    "unknown-key-with-suggestion": Case(
        preset="rl: {kl_coeff: 0.1}\n", expect=("unknown key 'rl.kl_coeff'; did you mean 'rl.kl_coef'?",)
    ),
    "wrong-type": Case(preset="sft: {epochs: two}\n", expect=("sft.epochs: 'two' is not of type 'number'",)),
    "negative-length": Case(
        preset="generate: {max_new_tokens: -5}\n", expect=("generate.max_new_tokens: -5 is less than the minimum of 1",)
    ),
    "fraction-out-of-range": Case(
        preset="pairs: {validation_fraction: 1.5}\n", expect=("pairs.validation_fraction: 1.5",)
    ),
    "bad-enum": Case(preset="rl: {methods: [reinforce, a2c]}\n", expect=("rl.methods.1: 'a2c' is not one of",)),
    "missing-data-file": Case(
        preset="data: {source: jsonl, path: data/raw/missing.jsonl}\n",
        expect=("data.path: file or folder not found: data/raw/missing.jsonl",),
        dry_run=False,
    ),
    "removed-key": Case(
        preset="rl: {reward_model: probabilistic}\n",
        expect=("rl.reward_model: removed: the RL stages use the reward model the reward stage trains",),
    ),
    "splits-sum-over-one": Case(
        preset="data: {splits: {sft: 0.5, pref: 0.4, rl: 0.3}}\n",
        expect=("data.splits: fractions sum to 1.200, must be <= 1",),
    ),
    "variance-regularized-needs-probabilistic-rm": Case(
        preset="rl: {variance_regularized: true}\n",
        expect=("rl.variance_regularized: needs reward.kind 'probabilistic'",),
    ),
    "offload-without-deepspeed": Case(
        preset="compute: {offload: cpu}\n",
        expect=("compute.offload: 'cpu' offloads ZeRO state, so it needs compute.deepspeed zero2 or zero3",),
    ),
    "rloo-groups-do-not-divide": Case(
        preset="rl: {rloo: {k: 3}}\n",
        expect=("rl.rollout_batch_size: 8 completions do not split into groups of rl.rloo.k = 3",),
    ),
    "mini-batches-do-not-divide": Case(
        preset="rl: {mini_batches: 3}\n",
        expect=("rl.mini_batches: 8 groups of 1 completion(s) per rollout (reinforce) do not split into 3 equal",),
    ),
    "micro-batches-do-not-divide": Case(
        preset="rl: {micro_batch_size: 3}\n",
        expect=("rl.micro_batch_size: a mini-batch of 4 completions does not split into micro-batches of 3",),
    ),
    # The context is the base model's (models/base/config.json): checked once that folder exists.
    "completion-beyond-context": Case(
        preset="rl: {max_new_tokens: 100000}\n",
        base_config={"max_position_embeddings": 8192},
        expect=("rl.max_new_tokens: 100000 tokens after a prompt of up to 448",
                "exceed the base model's context of 8192 tokens (models/base/config.json)"),
        dry_run=False,
    ),
    # The environment is checked by `sumrl validate` and when a real run starts (not by a dry run): an
    # openai judge whose URL variable is unset fails before hours of training, not at the judge stage.
    "judge-url-unset": Case(
        preset="judge: {enabled: true, backend: openai, model: m, url_env: SUMRL_TEST_UNSET_URL}\n",
        expect=("judge.url_env: environment variable SUMRL_TEST_UNSET_URL is not set",),
        dry_run=False,
    ),
    "missing-required-key": Case(
        params=PARAMS.replace("  kl_coef: 0.05\n", ""), expect=("rl: 'kl_coef' is a required property",)
    ),
    "yaml-syntax-error": Case(
        params=PARAMS.replace("  kl_coef: 0.05\n", "  kl_coef: [0.05\n"),
        expect=("params.yaml: not valid YAML", 'in "params.yaml", line'),
    ),
    "preset-file-missing": Case(preset_path="presets/nope.yaml", expect=("presets/nope.yaml",)),
}


@pytest.fixture
def case_dir(request, tmp_path):
    """A scratch workflow with the case's params.yaml and bad preset written into it."""
    case = CASES[request.param]
    scratch_workflow(tmp_path, params_text=case.params)
    if case.preset is not None:
        (tmp_path / case.preset_path).write_text(case.preset)
    if case.base_config is not None:
        (tmp_path / "models" / "base").mkdir(parents=True)
        (tmp_path / "models" / "base" / "config.json").write_text(json.dumps(case.base_config))
    return tmp_path, case


def uses_preset(case: Case) -> bool:
    return case.params is None


@pytest.mark.parametrize("case_dir", sorted(CASES), indirect=True)
def test_cli_validate_rejects(case_dir):
    workdir, case = case_dir
    args = ["validate", *(["--preset", case.preset_path] if uses_preset(case) else [])]
    proc = run([sys.executable, "-c", CLI, *args], cwd=workdir, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("sumrl: invalid params: "), proc.stderr
    for text in case.expect:
        assert text in proc.stderr


@pytest.mark.parametrize("case_dir", sorted(CASES), indirect=True)
def test_snakemake_rejects_before_any_job(case_dir):
    workdir, case = case_dir
    args = ["--configfile", case.preset_path] if uses_preset(case) else []
    mode = ["-n"] if case.dry_run else ["--cores", "1"]
    proc = run([SNAKEMAKE, *mode, *args], cwd=workdir, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    for text in case.expect:
        assert text in out
    made = {p.name for p in (workdir / "models").glob("*")} - ({"base"} if case.base_config else set())
    assert not (workdir / "logs").exists() and not made, "a job ran"


def test_stage_command_rejects_bad_params_before_loading_anything(tmp_path):
    """Every stage validates first: `sumrl rl` with a bad preset exits 2 without importing torch."""
    (tmp_path / "params.yaml").write_text(PARAMS)
    (tmp_path / "bad.yaml").write_text("rl: {kl_coeff: 0.1}\n")
    args = ["rl", "--method", "ppo", "--seed", "0", "--preset", "bad.yaml"]
    proc = run([sys.executable, "-c", CLI, *args], cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "unknown key 'rl.kl_coeff'" in proc.stderr


def test_snakemake_refuses_config_overrides(tmp_path):
    """--config would reach Snakemake but not the sumrl commands: refused, pointing at presets."""
    scratch_workflow(tmp_path)
    proc = run([SNAKEMAKE, "-n", "--config", "seed=1"], cwd=tmp_path, timeout=120)
    assert proc.returncode != 0
    assert "put the change in a preset" in proc.stdout + proc.stderr


def test_snakemake_takes_the_preset_from_sumrl_preset(tmp_path):
    """SUMRL_PRESET (what the CLI reads) is honoured by Snakemake too, so both see the same params."""
    scratch_workflow(tmp_path)
    (tmp_path / "bad.yaml").write_text("rl: {kl_coeff: 0.1}\n")
    proc = run([SNAKEMAKE, "-n"], cwd=tmp_path, timeout=120, SUMRL_PRESET="bad.yaml")
    assert proc.returncode != 0
    assert "params.yaml + bad.yaml: unknown key 'rl.kl_coeff'" in proc.stdout + proc.stderr
