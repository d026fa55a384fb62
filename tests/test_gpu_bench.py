"""bench/gpu.py, prepared for a GPU machine, checked here on the CPU at small sizes on the tiny model: it runs
end to end and writes every figure it promises (the figures themselves are only meaningful on the GPU)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_gpu_benchmark_runs_on_the_cpu_at_small_sizes(tiny_model_dir, tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--model", str(tiny_model_dir),
                           "--device", "cpu", "--dtype", "float32", "--small", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["device"]["bandwidth_GBps"] > 0 and result["device"]["matmul_TFLOPs"] > 0
    assert [r["batch"] for r in result["sampler"]] == [1, 2]
    for row in result["sampler"]:
        assert row["tokens_per_s"] > 0 and row["hf_generate_tokens_per_s"] > 0
        assert 0 < row["fraction_of_bound"] < 1 and row["bound"] in ("memory", "compute")
    assert [r["method"] for r in result["rl_steps"]] == ["rloo", "grpo"]
    assert all(r["seconds_per_step"] > 0 and r["peak_memory_GB"] > 0 for r in result["rl_steps"])
