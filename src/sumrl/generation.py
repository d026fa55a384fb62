"""Batched sampling with a KV cache, and the masks every later step relies on.

Prompts are left-padded so all rows end at the same position and generation appends to the right.
A completion counts up to and including its first EOS; everything after is masked out (`mask`),
and a completion that never produced EOS is flagged (`has_eos`) for the missing-EOS penalty.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Completions:
    prompt_ids: torch.Tensor       # [B, P] left-padded
    prompt_mask: torch.Tensor      # [B, P]
    completion_ids: torch.Tensor   # [B, T] right-padded with pad_token_id
    completion_mask: torch.Tensor  # [B, T] 1 up to and including the first EOS
    has_eos: torch.Tensor          # [B] bool
    texts: list[str]               # decoded completions, special tokens removed

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.completion_mask], dim=1)

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(1)


def completion_mask(completion_ids: torch.Tensor, eos_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask = 1 for tokens up to and including the first EOS (all tokens if there is none)."""
    is_eos = completion_ids == eos_token_id
    has_eos = is_eos.any(dim=1)
    width = torch.full_like(has_eos, completion_ids.size(1), dtype=torch.long)
    first = torch.where(has_eos, is_eos.int().argmax(dim=1), width)
    positions = torch.arange(completion_ids.size(1), device=completion_ids.device).unsqueeze(0)
    return (positions <= first.unsqueeze(1)).long(), has_eos


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    do_sample: bool = True,
    temperature: float = 1.0,
    batch_size: int | None = None,
    max_prompt_tokens: int | None = None,
) -> Completions:
    """Generate one completion per prompt, `batch_size` prompts at a time."""
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    batch_size = batch_size or len(prompts)
    chunks = []
    for start in range(0, len(prompts), batch_size):
        enc = tokenizer(
            prompts[start:start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False,
            truncation=max_prompt_tokens is not None, max_length=max_prompt_tokens,
        ).to(device)
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature if do_sample else None,
            top_k=0 if do_sample else None,
            top_p=1.0 if do_sample else None,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            use_cache=True,
        )
        chunks.append((enc["input_ids"], enc["attention_mask"], out[:, enc["input_ids"].size(1):]))
    prompt_ids = _pad_cat([c[0] for c in chunks], tokenizer.pad_token_id, left=True)
    prompt_mask = _pad_cat([c[1] for c in chunks], 0, left=True)
    completion_ids = _pad_cat([c[2] for c in chunks], tokenizer.pad_token_id, left=False)
    return Completions(prompt_ids, prompt_mask, *finish_completions(tokenizer, completion_ids))


def finish_completions(tokenizer, completion_ids: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """Sampled ids [B, T] -> (ids with pad after the first EOS, mask, has_eos, decoded texts)."""
    mask, has_eos = completion_mask(completion_ids, tokenizer.eos_token_id)
    completion_ids = completion_ids.masked_fill(mask == 0, tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    return completion_ids, mask, has_eos, [t.strip() for t in texts]


def _pad_cat(tensors: list[torch.Tensor], value: int, left: bool) -> torch.Tensor:
    width = max(t.size(1) for t in tensors)
    padded = [F.pad(t, (width - t.size(1), 0) if left else (0, width - t.size(1)), value=value) for t in tensors]
    return torch.cat(padded, dim=0)
