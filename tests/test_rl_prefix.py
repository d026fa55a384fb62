"""Each prompt runs once per pass (rl/prefix.py): the results must be those of running every
prompt + completion on its own, for log-probs, values, gradients, reward-model scores and sampling."""

from __future__ import annotations

import pytest
import torch

from sumrl.config import RLConfig
from sumrl.models.load import load_policy, load_tokenizer
from sumrl.models.scoring import score_texts, token_logprobs
from sumrl.rl.core import ValueHead, add_lora, forward_completion, score_completions
from sumrl.rl.prefix import PromptGroups, sample, sample_categorical

TEXTS = ["Summarize: we train a parser on treebank data and report accuracy.",
         "Summarize: a new corpus of dialogue summaries.",
         "Summarize: machine translation with attention improves BLEU on two language pairs."]


@pytest.fixture
def policy_and_tok(tiny_model_dir, tiny_params):
    torch.manual_seed(0)
    policy = add_lora(load_policy(str(tiny_model_dir), tiny_params), RLConfig.from_params(tiny_params).lora)
    for name, p in policy.named_parameters():  # a trained adapter, so the LoRA path matters
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    policy.add_module("value_head", ValueHead(policy.config.hidden_size))
    torch.nn.init.normal_(policy.value_head.linear.weight, std=0.1)
    return policy, load_tokenizer(str(tiny_model_dir))


def _batch(tok, k: int = 2, length: int = 7):
    """k completions per prompt, rows in groups; completions of random tokens, one cut short by pad."""
    prompt_ids = tok(TEXTS, add_special_tokens=False).input_ids
    rows = [ids for ids in prompt_ids for _ in range(k)]
    gen = torch.Generator().manual_seed(1)
    completions = torch.randint(3, len(tok), (len(rows), length), generator=gen)
    completions[1, 4:] = tok.pad_token_id
    return PromptGroups.from_token_lists(rows), rows, completions


def _one_by_one(policy, rows, completions):
    """log pi and V of each prompt + completion, run alone through the whole model."""
    logps, values = [], []
    T = completions.size(1)
    for prompt, completion in zip(rows, completions):
        ids = torch.cat([torch.tensor(prompt), completion])[None]
        out = policy(input_ids=ids, output_hidden_states=True)
        logps.append(token_logprobs(out.logits[:, -T - 1:-1].float(), completion[None]))
        values.append(policy.value_head(out.hidden_states[-1][:, -T - 1:-1]))
    return torch.cat(logps), torch.cat(values)


def test_groups_index_each_unique_prompt_once():
    groups = PromptGroups.from_token_lists([[1, 2], [1, 2], [3, 4, 5], [1, 2]])
    assert [p.tolist() for p in groups.prompts] == [[1, 2], [3, 4, 5]]
    assert groups.rows.tolist() == [0, 0, 1, 0]
    sub = groups.select(torch.tensor([2]))
    assert [p.tolist() for p in sub.prompts] == [[3, 4, 5]] and sub.rows.tolist() == [0]
    assert groups.last_tokens().flatten().tolist() == [2, 2, 5, 2]
    with pytest.raises(ValueError, match="fewer than 2 tokens"):
        PromptGroups.from_token_lists([[7]]).drop_last_token()


def test_logprobs_values_and_gradients_match_each_sequence_run_alone(policy_and_tok):
    policy, tok = policy_and_tok
    groups, rows, completions = _batch(tok)
    logp, values = forward_completion(policy, groups, completions, 1.0, policy.value_head)
    (logp.sum() + values.sum()).backward()
    shared_grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.requires_grad}
    policy.zero_grad()

    ref_logp, ref_values = _one_by_one(policy, rows, completions)
    (ref_logp.sum() + ref_values.sum()).backward()
    torch.testing.assert_close(logp, ref_logp, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(values, ref_values, rtol=1e-5, atol=1e-5)
    for name, p in policy.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(shared_grads[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)
    assert any(g.abs().sum() > 0 for n, g in shared_grads.items() if "lora_A" in n)


def test_temperature_divides_the_logits(policy_and_tok):
    policy, tok = policy_and_tok
    groups, _, completions = _batch(tok)
    with torch.no_grad():
        hot, _ = forward_completion(policy, groups, completions, 2.0)
        with policy.disable_adapter():  # the reference pass, too, is the same computation
            cold_ref, _ = forward_completion(policy, groups, completions, 1.0)
        cold, _ = forward_completion(policy, groups, completions, 1.0)
    assert not torch.allclose(hot, cold)
    assert not torch.allclose(cold, cold_ref)


@pytest.mark.parametrize("kind", ["scalar", "probabilistic"])
def test_reward_scores_match_scoring_each_text_whole(kind, rl_inputs, tiny_params, tiny_model_dir):
    from sumrl.models.load import load_reward_model

    rm, meta = load_reward_model(str(rl_inputs / f"rm_{kind}"), tiny_params)
    tok = load_tokenizer(str(tiny_model_dir))
    prompts = [t for t in TEXTS for _ in range(2)]
    completions = [" A parser.<|im_end|>", " Accuracy is reported.<|im_end|>", " Dialogue.<|im_end|>",
                   " A corpus<|im_end|>", " Attention helps.<|im_end|>", "<|im_end|>"]
    r, s = score_completions(rm, tok, prompts, completions, meta["kind"])
    r_whole, s_whole = score_texts(rm, tok, [p + c for p, c in zip(prompts, completions)], meta["kind"], batch_size=1)
    torch.testing.assert_close(r, r_whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s, s_whole, rtol=1e-5, atol=1e-5)
    assert (s > 0).all() if kind == "probabilistic" else (s == 0).all()


def test_sampling_near_zero_temperature_is_greedy_decoding(policy_and_tok):
    """The cache, positions and masks of the sampler, for prompts of different lengths, against
    transformers' own greedy generate, one prompt at a time."""
    policy, tok = policy_and_tok
    groups, rows, _ = _batch(tok, k=2)
    policy.eval()
    ours, entropy = sample(policy, groups, 12, 1e-4, eos_id=-1, pad_id=tok.pad_token_id)
    assert entropy.shape == ours.shape and torch.isfinite(entropy).all() and entropy.max() < 1e-3
    for row, prompt in enumerate(rows):
        ids = torch.tensor([prompt])
        greedy = policy.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                                 do_sample=False, eos_token_id=None, pad_token_id=tok.pad_token_id)
        assert ours[row].tolist() == greedy[0, ids.size(1):].tolist()


def test_sampling_stops_at_eos_and_pads_after_it(policy_and_tok):
    policy, tok = policy_and_tok
    groups, _, _ = _batch(tok, k=3)
    head = policy.get_output_embeddings()
    with torch.no_grad():  # make one token overwhelmingly likely, and call it EOS
        head.weight[5] = head.weight[5] * 0 + 10.0 * policy.get_input_embeddings().weight.mean(0).sign()
    torch.manual_seed(0)
    out, entropy = sample(policy, groups, 30, 1.0, eos_id=5, pad_id=0)
    first = (out == 5).int().argmax(1)
    assert (out == 5).any(1).all() and out.size(1) < 30
    for row, f in enumerate(first.tolist()):
        assert (out[row, f + 1:] == 0).all()
    assert (entropy >= 0).all() and entropy.max() <= torch.log(torch.tensor(float(len(tok)))) + 1e-4


def test_sampler_entropy_is_that_of_the_sampling_distribution(policy_and_tok):
    """The logged entropy comes from the sampler: H(softmax(logits / temperature)) of the full forward."""
    policy, tok = policy_and_tok
    groups, rows, _ = _batch(tok, k=1)
    out, entropy = sample(policy, groups, 4, 1.5, eos_id=-1, pad_id=0)
    for row, prompt in enumerate(rows):
        ids = torch.cat([torch.tensor(prompt), out[row]])[None]
        with torch.no_grad():
            logits = policy(input_ids=ids).logits[0, len(prompt) - 1:-1].float() / 1.5
        expected = -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)
        torch.testing.assert_close(entropy[row], expected, rtol=1e-4, atol=1e-4)


def test_inverse_cdf_sampling_draws_from_the_softmax():
    torch.manual_seed(0)
    probs = torch.tensor([[0.0, 1.0, 2.0, -1.0]]).softmax(-1).repeat(40_000, 1)
    draws = sample_categorical(probs)
    freq = torch.bincount(draws, minlength=4).float() / draws.numel()
    torch.testing.assert_close(freq, probs[0], atol=0.01, rtol=0)
    assert sample_categorical(torch.tensor([[0.0, 0.0, 1.0]] * 100)).eq(2).all()  # zero-probability tokens never


def test_gpt_neo_local_attention_layers_match_each_sequence_run_alone(tiny_model_dir):
    """The TL;DR presets' GPT-Neo alternates global and local (windowed) attention, masked inside its
    attention module in the left-padded coordinates; a window shorter than the prompts exercises it."""
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    tok = load_tokenizer(str(tiny_model_dir))
    torch.manual_seed(0)
    config = GPTNeoConfig(vocab_size=len(tok), hidden_size=32, num_layers=2, num_heads=4, window_size=5,
                          attention_types=[[["global", "local"], 1]], max_position_embeddings=256,
                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    policy = GPTNeoForCausalLM(config).eval()
    policy.add_module("value_head", ValueHead(config.hidden_size))
    torch.nn.init.normal_(policy.value_head.linear.weight, std=0.1)
    groups, rows, completions = _batch(tok)
    with torch.no_grad():
        logp, values = forward_completion(policy, groups, completions, 1.0, policy.value_head)
        ref_logp, ref_values = _one_by_one(policy, rows, completions)
    torch.testing.assert_close(logp, ref_logp, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(values, ref_values, rtol=1e-5, atol=1e-5)
    ours, _ = sample(policy, groups, 8, 1e-4, eos_id=-1, pad_id=tok.pad_token_id)
    for row, prompt in enumerate(rows):
        ids = torch.tensor([prompt])
        greedy = policy.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                                 do_sample=False, eos_token_id=None, pad_token_id=tok.pad_token_id)
        assert ours[row].tolist() == greedy[0, ids.size(1):].tolist()
