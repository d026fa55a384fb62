"""Loading models and tokenizers safely and the same way in every stage.

Weights are safetensors only (`use_safetensors=True`), and remote code runs only when
`compute.trust_remote_code` is on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from sumrl.config import Config, LoraSettings

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
REWARD_META = "sumrl_reward.json"


def torch_dtype(params: Config | Mapping) -> torch.dtype:
    """model.dtype as a torch dtype (see dtype_for)."""
    cfg = Config.of(params)
    return dtype_for(cfg.model.dtype, cfg.compute.device)


def dtype_for(name: str, device: str) -> torch.dtype:
    """A model.dtype name as a torch dtype. `auto`: bfloat16 where the hardware multiplies bf16 natively, else
    float32.

    A CPU without AVX-512 BF16 / AMX runs bf16 matmuls through a fallback ~85x slower than fp32 (measured on
    an AVX2 EPYC: 1.2 vs 103 GFLOP/s), so `auto` asks the machine rather than assuming it.
    """
    if name != "auto":
        return DTYPES[name]
    if device != "cpu" and torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32


def load_tokenizer(path: str | Path, trust_remote_code: bool = False, padding_side: str = "left"):
    """Left padding: generation appends to the right end of every row."""
    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def lora_config(lora: LoraSettings, task_type: str):
    """The peft LoRA config of a params `lora:` block (sft, reward and rl each have one)."""
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=list(lora.target_modules), task_type=task_type)


def use_distinct_pad(tokenizer) -> None:
    """Reward models pad with a token other than EOS when the vocabulary has one.

    A sequence-classification head reads the last non-pad token; with pad == EOS (SmolLM2) it would
    never see the EOS that closes a summary, so "stopped" and "cut off" would score alike.
    """
    if tokenizer.pad_token_id != tokenizer.eos_token_id:
        return
    for candidate in (tokenizer.unk_token, "<|endoftext|>", "<pad>"):
        if candidate and candidate != tokenizer.eos_token and candidate in tokenizer.get_vocab():
            tokenizer.pad_token = candidate
            return


def load_policy(path: str | Path, params: Config | Mapping, device: torch.device | str = "cpu"):
    cfg = Config.of(params)
    model = AutoModelForCausalLM.from_pretrained(
        str(path),
        dtype=torch_dtype(cfg),
        trust_remote_code=cfg.compute.trust_remote_code,
        use_safetensors=True,
    )
    return model.to(device)


def load_reward_model(path: str | Path, params: Config | Mapping, device: torch.device | str = "cpu"):
    """The trained reward model and its metadata ({"kind": "scalar"|"probabilistic", "num_scores": n})."""
    meta_path = Path(path) / REWARD_META
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: missing; {path} was not written by `sumrl reward`")
    meta = json.loads(meta_path.read_text())
    cfg = Config.of(params)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(path),
        dtype=torch_dtype(cfg),
        trust_remote_code=cfg.compute.trust_remote_code,
        use_safetensors=True,
    )
    return model.to(device).eval(), meta


def save_model(model, tokenizer, out_dir: str | Path) -> None:
    """safetensors + config + tokenizer: a plain Hugging Face folder."""
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
