"""Passes that read each prompt once, however many completions continue it.

RLOO samples k completions per prompt, and a summarization prompt is several times longer than its
summary. So every pass of the RL step (sampling, pi_old, pi_ref, the reward model, the training
forward and backward) runs each unique prompt through the transformer alone (a batch of one: no
padding), copies its keys and values to the rows of its completions, and runs only the completion
tokens as a batch on top. Gradients flow back through the copies into the one prompt pass, so this
is the forward (and backward) of the concatenated sequences with 1/k of the prompt work.

Rows of different prompts share one key/value tensor per layer, left-padded to the longest prompt;
the attention mask hides the padding and each row's positions continue its own prompt's length.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from transformers.cache_utils import Cache, DynamicLayer


@dataclass
class PromptGroups:
    """The unique prompts of a batch and, for each completion row, the prompt it continues."""

    prompts: list[torch.Tensor]  # token ids of each unique prompt, unpadded
    rows: torch.Tensor           # [N] index into `prompts`

    @classmethod
    def from_token_lists(cls, per_row: list[list[int]]) -> PromptGroups:
        index: dict[tuple[int, ...], int] = {}
        rows = [index.setdefault(tuple(ids), len(index)) for ids in per_row]
        return cls([torch.tensor(ids, dtype=torch.long) for ids in index], torch.tensor(rows, dtype=torch.long))

    def __len__(self) -> int:
        return self.rows.numel()

    def select(self, idx: torch.Tensor) -> PromptGroups:
        """The rows `idx`, keeping only the prompts they use."""
        used, rows = self.rows[idx].unique(return_inverse=True)
        return PromptGroups([self.prompts[i] for i in used.tolist()], rows)

    def drop_last_token(self) -> PromptGroups:
        """Prompts without their last token: that token is fed with the completion, so the pass that
        follows yields the logits for every completion token, the first one included."""
        if min(p.numel() for p in self.prompts) < 2:
            raise ValueError("rl: a prompt has fewer than 2 tokens; nothing to condition a completion on")
        return PromptGroups([p[:-1] for p in self.prompts], self.rows)

    def last_tokens(self) -> torch.Tensor:
        """[N, 1] the last prompt token of each row."""
        return torch.stack([p[-1] for p in self.prompts])[self.rows].unsqueeze(1)


def unwrap(model):
    """The transformers model inside a DeepSpeed engine and/or a PEFT wrapper (LoRA layers stay injected)."""
    model = getattr(model, "module", model)  # DeepSpeedEngine
    if hasattr(model, "get_base_model"):     # PeftModel
        model = model.get_base_model()
    return model


def trunk(model):
    """The transformer without its head (LlamaModel inside LlamaForCausalLM / ...ForSequenceClassification)."""
    inner = unwrap(model)
    return getattr(inner, inner.base_model_prefix)


class _PromptLayer(DynamicLayer):
    """One layer's prompt keys/values; `capacity` more tokens are appended in place (sampling), or, with
    capacity 0, by concatenation (a single pass, which gradients can flow through)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, capacity: int):
        super().__init__()
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
        self.length = keys.size(-2)
        if capacity:
            shape = (*keys.shape[:-2], self.length + capacity, keys.size(-1))
            self._k, self._v = keys.new_empty(shape), values.new_empty(shape)
            self._k[..., :self.length, :], self._v[..., :self.length, :] = keys, values
            keys, values = self._k[..., :self.length, :], self._v[..., :self.length, :]
        self.capacity = capacity
        self.keys, self.values = keys, values

    def update(self, key_states, value_states, *args, **kwargs):
        n = key_states.size(-2)
        if self.capacity:
            if self.length + n > self._k.size(-2):
                raise RuntimeError("prompt cache: more tokens than the capacity it was built with")
            self._k[..., self.length:self.length + n, :] = key_states
            self._v[..., self.length:self.length + n, :] = value_states
            self.length += n
            self.keys, self.values = self._k[..., :self.length, :], self._v[..., :self.length, :]
        else:
            self.keys = torch.cat([self.keys, key_states], dim=-2)
            self.values = torch.cat([self.values, value_states], dim=-2)
            self.length += n
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length


@dataclass
class PromptCache:
    cache: Cache
    pad_mask: torch.Tensor  # [N, P] 0 over each row's left padding
    lengths: torch.Tensor   # [N] each row's prompt length


def _check_full_attention(config) -> None:
    types = set(getattr(config, "layer_types", None) or ["full_attention"])
    if types != {"full_attention"} or getattr(config, "sliding_window", None):
        raise ValueError(f"rl: prompt sharing needs full attention in every layer; {config.model_type} has "
                         f"{sorted(types)} (sliding_window={getattr(config, 'sliding_window', None)})")


def prompt_cache(model, groups: PromptGroups, capacity: int = 0, **kwargs) -> PromptCache:
    """Run each unique prompt once and lay its keys/values out for its rows. `model` is a trunk, or a
    whole model (then pass logits_to_keep: the prompt's own logits are never needed)."""
    inner = unwrap(model)
    _check_full_attention(inner.config)
    device = _device(inner)
    per_prompt = [model(input_ids=p.to(device)[None], use_cache=True, **kwargs).past_key_values
                  for p in groups.prompts]
    lengths = [p.numel() for p in groups.prompts]
    width = max(lengths)
    rows = groups.rows.to(device)

    def stack(tensors: list[torch.Tensor]) -> torch.Tensor:  # [1, h, P_i, d] each -> [N, h, P, d]
        return torch.cat([F.pad(t, (0, 0, width - t.size(-2), 0)) for t in tensors])[rows]

    layers = [_PromptLayer(stack([c.layers[i].keys for c in per_prompt]),
                           stack([c.layers[i].values for c in per_prompt]), capacity)
              for i in range(len(per_prompt[0].layers))]
    row_lengths = torch.tensor(lengths, device=device)[rows]
    pad_mask = (torch.arange(width, device=device)[None] >= (width - row_lengths)[:, None]).long()
    return PromptCache(Cache(layers=layers), pad_mask, row_lengths)


def continue_prompts(model, state: PromptCache, tokens: torch.Tensor, offset: int = 0, **kwargs):
    """`model`'s output for `tokens` [N, S] appended to each row's prompt (after `offset` tokens already
    appended). Padding after a completion's end needs no mask: attention is causal."""
    n, s = tokens.shape
    state.pad_mask = torch.cat([state.pad_mask, state.pad_mask.new_ones(n, s)], dim=1)
    positions = state.lengths[:, None] + offset + torch.arange(s, device=tokens.device)[None]
    return model(input_ids=tokens, past_key_values=state.cache, attention_mask=state.pad_mask,
                 position_ids=positions, use_cache=True, **kwargs)


def hidden_after_prompts(model, groups: PromptGroups, tokens: torch.Tensor) -> torch.Tensor:
    """The trunk's last hidden states [N, S, H] for `tokens` after each row's prompt, each prompt run once."""
    body = trunk(model)
    return continue_prompts(body, prompt_cache(body, groups), tokens.to(_device(body))).last_hidden_state


def _device(module) -> torch.device:
    return next(module.parameters()).device


def sample_categorical(probs: torch.Tensor) -> torch.Tensor:
    """One draw per row of `probs` [N, V] by inverting the CDF: exact, and on a CPU ~25x faster than
    torch.multinomial over a 50k vocabulary."""
    cdf = probs.cumsum(-1)
    u = torch.rand(cdf.size(0), 1, device=cdf.device, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp_max(cdf.size(-1) - 1).squeeze(1)


@contextmanager
def merged_adapters(model):
    """Each LoRA projection as one matrix W + scale * B A, for the duration of sampling.

    Sampling runs every layer once per token for a handful of rows, where LoRA's two extra matmuls,
    dtype casts and add per projection cost about as much as the projection itself. The merged copies
    are made once per rollout; the base weights are not touched. Sampling draws from the policy up to
    the rounding of the merge (bf16 on most CPUs): pi_old, the ratios and the KL all come from the
    unmerged passes. Layers with a LoRA variant (DoRA, ...) keep their own forward.
    """
    from peft.tuners.lora import Linear as LoraLinear

    patched = []
    for module in unwrap(model).modules():
        if not isinstance(module, LoraLinear) or module.disable_adapters or module.merged or module.lora_variant:
            continue
        active = [a for a in module.active_adapters if a in module.lora_A]
        weight = module.base_layer.weight
        merged = weight.float() + sum(module.get_delta_weight(a).float() for a in active)
        module.forward = partial(F.linear, weight=merged.to(weight.dtype), bias=module.base_layer.bias)
        patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward


@torch.no_grad()
def sample(model, groups: PromptGroups, max_new_tokens: int, temperature: float, eos_id: int, pad_id: int
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Completions [N, T] sampled at `temperature` with a key/value cache, and the entropy [N, T] of the
    distribution each token was drawn from. A row is pad after its EOS; sampling stops once every row
    has one."""
    body, head = trunk(model), unwrap(model).get_output_embeddings()
    token = groups.last_tokens().to(_device(body))
    done = torch.zeros(len(groups), dtype=torch.bool, device=token.device)
    tokens, entropies = [], []
    with merged_adapters(model):
        state = prompt_cache(body, groups.drop_last_token(), capacity=max_new_tokens)
        for t in range(max_new_tokens):
            hidden = continue_prompts(body, state, token, offset=t).last_hidden_state[:, -1]
            logits = head(hidden).float() / temperature
            lse = logits.logsumexp(-1, keepdim=True)
            probs = (logits - lse).exp()
            entropies.append(lse.squeeze(-1) - (probs * logits).sum(-1))  # finite even where p underflows to 0
            token = sample_categorical(probs).masked_fill(done, pad_id)[:, None]
            tokens.append(token)
            done |= token[:, 0] == eos_id
            if done.all():
                break
    return torch.cat(tokens, dim=1), torch.stack(entropies, dim=1)
