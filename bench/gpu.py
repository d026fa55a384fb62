"""sumrl's RL path on one GPU: the machine's limits, the rollout sampler against them, and whole RL steps.

Made to run in a few minutes on a machine that has torch, transformers, peft and accelerate and no network:
it imports sumrl from this working tree (src/, no install) and needs nothing else but a tokenizer folder. The
weights do not travel (SmolLM2-135M is 540 MB in fp32): by default the policy and the reward model are
randomly initialized with SmolLM2-135M-Instruct's exact shape (config below), which is what the speed and
memory figures depend on; `--model DIR` uses real weights where they exist.

It measures, in one run, and writes them to --out as JSON (printing a table too):
- the device: name, memory, copy bandwidth (GB/s) and the dense matmul peak (TFLOP/s) in the benchmark dtype;
- the rollout sampler (`sumrl.rl.prefix.sample`, what `sumrl rl` samples with) at batch 1, 8 and 64: tokens/s,
  and the fraction of the bound that applies at that batch: reading the weights and the KV cache once per
  token step (bandwidth-bound decoding), or the FLOPs (2 x parameters per token) when that is lower;
- `transformers.generate` at the same settings, for comparison;
- whole RL steps (`sumrl.rl.loop.rl_step`, what `sumrl rl` runs) of RLOO and GRPO: seconds per step, episodes/s
  and peak GPU memory.

    python bench/gpu.py --tokenizer models/base --out /tmp/gpu.json          # one GPU, SmolLM2 shape, bf16
    python bench/gpu.py --model tests-tiny-model --device cpu --small        # the CPU check in the test suite
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # the working tree's sumrl, installed or not

# SmolLM2-135M-Instruct's architecture (models/base/config.json of the default run).
SMOLLM2 = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
               num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=8192,
               rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats: int = 1) -> float:
    """Seconds per call of fn(), after one warm-up call."""
    fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeats


def machine_peaks(device, dtype, small: bool) -> dict:
    """Copy bandwidth (bytes read + written per second) and the dense matmul rate in `dtype`."""
    import torch

    n_bytes = (64 if small else 1024) * 2**20
    src = torch.empty(n_bytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    copy_s = timed(lambda: dst.copy_(src), device, repeats=5)
    n = 512 if small else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    mm_s = timed(lambda: a @ b, device, repeats=5)
    out = {"bandwidth_GBps": 2 * n_bytes / copy_s / 1e9, "matmul_TFLOPs": 2 * n**3 / mm_s / 1e12}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out.update(name=props.name, memory_GB=props.total_memory / 1e9)
    else:
        out.update(name=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    return out


def load_models(args, device, dtype):
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, LlamaConfig

    tok = AutoTokenizer.from_pretrained(args.model or args.tokenizer)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    torch.manual_seed(0)
    if args.model:
        policy = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype)
        rm = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=1, dtype=dtype)
    else:
        config = LlamaConfig(**SMOLLM2)
        policy = AutoModelForCausalLM.from_config(config, dtype=dtype)
        rm = AutoModelForSequenceClassification.from_config(LlamaConfig(**SMOLLM2, num_labels=1), dtype=dtype)
    rm.config.pad_token_id = tok.pad_token_id
    return tok, policy.to(device), rm.to(device)


def decode_bound(policy, batch: int, context: float, bandwidth: float, flops: float, dtype_bytes: int) -> dict:
    """Tokens/s that decoding cannot beat: each token step reads every weight and the KV cache once (memory
    bound), and does 2 x parameters FLOPs per token (compute bound); the lower of the two applies."""
    cfg = policy.config
    params = sum(p.numel() for p in policy.parameters())
    kv = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * context * batch * dtype_bytes
    memory = batch * bandwidth * 1e9 / (params * dtype_bytes + kv)
    compute = flops * 1e12 / (2 * params)
    return {"bound_tokens_per_s": min(memory, compute), "bound": "memory" if memory < compute else "compute"}


def sampler_rates(policy, tok, device, peaks: dict, batches, prompt_tokens: int, new_tokens: int,
                  dtype_bytes: int) -> list[dict]:
    import torch

    from sumrl.rl.prefix import PromptGroups, sample

    out = []
    for batch in batches:
        ids = torch.randint(10, policy.config.vocab_size, (batch, prompt_tokens)).tolist()
        groups = PromptGroups.from_token_lists(ids)
        # eos -1: never stops early, so every row decodes exactly new_tokens tokens
        seconds = timed(lambda: sample(policy, groups, new_tokens, 1.0, -1, tok.pad_token_id), device)  # noqa: B023
        prompt = torch.tensor(ids, device=device)
        hf = timed(lambda: policy.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True,  # noqa: B023
                                           max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                           pad_token_id=tok.pad_token_id), device)
        rate = batch * new_tokens / seconds
        bound = decode_bound(policy, batch, prompt_tokens + new_tokens / 2, peaks["bandwidth_GBps"],
                             peaks["matmul_TFLOPs"], dtype_bytes)
        out.append({"batch": batch, "tokens_per_s": rate, "hf_generate_tokens_per_s": batch * new_tokens / hf,
                    **bound, "fraction_of_bound": rate / bound["bound_tokens_per_s"]})
    return out


def rl_steps(policy, rm, tok, device, method: str, k: int, prompts: int, new_tokens: int, steps: int) -> dict:
    import torch

    from sumrl.config import RLConfig
    from sumrl.data.prompts import PromptFormat
    from sumrl.params import deep_merge, parse_override, read_yaml
    from sumrl.rl.core import add_lora
    from sumrl.rl.engine import PlainEngine
    from sumrl.rl.loop import rl_step
    from sumrl.rl.methods import build_method

    # params.yaml with the benchmark's keys, merged without schema validation (jsonschema need not be installed)
    params = read_yaml(ROOT / "params.yaml")
    for text in (f"rl.{method}.k={k}", f"rl.rollout_batch_size={k * prompts}", "rl.mini_batches=1", "rl.epochs=1",
                 f"rl.max_new_tokens={new_tokens}", "rl.length_penalty=0"):
        params = deep_merge(params, parse_override(text))
    cfg = RLConfig.from_params(params)
    model = add_lora(policy, cfg.lora)
    engine = PlainEngine(model, cfg)
    fmt = PromptFormat.from_params(tok, params)
    words = " ".join(f"word{i}" for i in range(200))
    rows = [fmt.prompt(f"Document {j}: {words}") for j in range(prompts) for _ in range(k)]
    rl_method = build_method(method, cfg)
    rl_step(engine, model, rl_method, fmt, rm, tok, "scalar", rows, cfg)  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        rl_step(engine, model, rl_method, fmt, rm, tok, "scalar", rows, cfg)
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    model.unload()  # back to the plain policy for the next method
    return {"method": method, "k": k, "prompts": prompts, "new_tokens": new_tokens, "seconds_per_step": seconds,
            "episodes_per_s": k * prompts / seconds, "peak_memory_GB": peak / 1e9}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a model folder with weights and tokenizer (default: random SmolLM2 shape)")
    ap.add_argument("--tokenizer", default=str(ROOT / "models" / "base"), help="tokenizer folder (random init)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--small", action="store_true", help="small sizes: the CPU check of the test suite")
    ap.add_argument("--out", default=None, help="write the figures here as JSON")
    args = ap.parse_args()

    import torch

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    torch.backends.cuda.matmul.allow_tf32 = True
    peaks = machine_peaks(device, dtype, args.small)
    tok, policy, rm = load_models(args, device, dtype)
    dtype_bytes = torch.finfo(dtype).bits // 8
    batches, prompt_tokens, new_tokens = ((1, 2), 16, 8) if args.small else ((1, 8, 64), 256, 128)
    sampler = sampler_rates(policy, tok, device, peaks, batches, prompt_tokens, new_tokens, dtype_bytes)
    k, prompts, steps = (2, 1, 1) if args.small else (4, 8, 3)
    rl = [rl_steps(policy, rm, tok, device, method, k, prompts, new_tokens, steps) for method in ("rloo", "grpo")]
    result = {"device": peaks, "dtype": args.dtype, "weights": args.model or "random init, SmolLM2-135M shape",
              "sampler": sampler, "rl_steps": rl, "torch": torch.__version__}
    print(f"{peaks['name']}: copy {peaks['bandwidth_GBps']:.0f} GB/s, {args.dtype} matmul "
          f"{peaks['matmul_TFLOPs']:.1f} TFLOP/s")
    print(f"{'batch':>5} {'sampler tok/s':>14} {'generate tok/s':>15} {'bound tok/s':>12} {'bound':>7} {'of bound':>9}")
    for r in sampler:
        print(f"{r['batch']:5d} {r['tokens_per_s']:14.0f} {r['hf_generate_tokens_per_s']:15.0f} "
              f"{r['bound_tokens_per_s']:12.0f} {r['bound']:>7} {r['fraction_of_bound']:9.1%}")
    for r in rl:
        print(f"{r['method']}: {r['seconds_per_step']:.2f} s/step ({r['k']} x {r['prompts']} completions of "
              f"{r['new_tokens']} tokens), {r['episodes_per_s']:.1f} episodes/s, peak {r['peak_memory_GB']:.2f} GB")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
