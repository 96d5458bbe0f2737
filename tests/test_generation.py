"""Sampling and the logits the KL is computed from: masks, positions, and alignment with `generate`."""

import torch
from torch.testing import assert_close
from transformers import AutoModelForCausalLM, AutoTokenizer

from dpo_pipeline.generation import (
    completion_logits,
    completion_logps,
    completion_mask_from_tokens,
    iter_samples,
    left_pad,
    position_ids_from_mask,
    pure_sampling_config,
)
from dpo_pipeline.estimators import sequence_kl

PROMPTS = ["The film is", "This movie", "The ending of the story is"]


def prompt_ids(tokenizer, prompts=PROMPTS):
    return tokenizer(list(prompts), add_special_tokens=False)["input_ids"]


def samples(model, tokenizer, prompts, per_prompt, new_tokens, batch_size, seed, **kwargs):
    return iter_samples(model, prompt_ids(tokenizer, prompts), per_prompt, new_tokens, 1.0, batch_size, seed,
                        tokenizer.eos_token_id, tokenizer.eos_token_id, **kwargs)


def test_left_padding_right_aligns_each_prompt():
    input_ids, mask = left_pad([[5, 6, 7], [8]], pad_token_id=0)
    assert input_ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    input_ids, mask = left_pad([[8]], pad_token_id=0, width=3)
    assert input_ids.tolist() == [[0, 0, 8]] and mask.tolist() == [[0, 0, 1]]


def test_completion_mask_stops_after_first_eos():
    tokens = torch.tensor([[5, 6, 0, 0, 0], [5, 0, 7, 0, 0], [5, 6, 7, 8, 9]])
    expected = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    assert torch.equal(completion_mask_from_tokens(tokens, eos_token_id=0), expected)


def test_position_ids_count_from_first_real_token():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]])
    assert torch.equal(position_ids_from_mask(mask), torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 3, 3]]))


def _model_and_tokenizer(path):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def test_samples_are_reproducible_and_do_not_depend_on_slicing(tiny_assets):
    model, tokenizer = _model_and_tokenizer(tiny_assets["sft_model"])
    tokenizer.pad_token = tokenizer.eos_token

    def sample(prompts, offset, seed=5):
        return [ids for batch in samples(model, tokenizer, prompts, 2, 6, 2, seed, item_offset=offset)
                for ids in batch.completion_token_ids()]

    whole = sample(PROMPTS[:2], 0)
    assert whole == sample(PROMPTS[:2], 0)
    # Sampling the second prompt alone, as a resumed run does, gives the same completions.
    assert sample(PROMPTS[1:2], 2) == whole[2:]
    assert whole != sample(PROMPTS[:2], 0, seed=6)


def test_a_static_cache_samples_what_the_dynamic_one_does_at_one_prompt_width(tiny_assets):
    """The static cache (compiled on a GPU) changes only the padding: every batch is as wide as the longest prompt,
    and the completions are the ones the dynamic cache samples."""
    model, tokenizer = _model_and_tokenizer(tiny_assets["sft_model"])
    tokenizer.pad_token = tokenizer.eos_token
    widest = max(len(tokenizer(prompt)["input_ids"]) for prompt in PROMPTS)
    batches = {cache: list(samples(model, tokenizer, PROMPTS, 2, 6, 2, 5, cache_implementation=cache))
               for cache in ("dynamic", "static")}
    assert {batch.prompt_width for batch in batches["static"]} == {widest}
    assert len({batch.prompt_width for batch in batches["dynamic"]}) > 1  # the check above could fail
    completions = {cache: [ids for batch in found for ids in batch.completion_token_ids()]
                   for cache, found in batches.items()}
    assert completions["static"] == completions["dynamic"]


def test_completion_logits_are_the_logits_generate_sampled_from(tiny_assets):
    """With left padding, recomputing the logits in one forward pass must give generate's own scores."""
    model, tokenizer = _model_and_tokenizer(tiny_assets["sft_model"])
    tokenizer.pad_token = tokenizer.eos_token
    batch = next(samples(model, tokenizer, PROMPTS, 1, 5, len(PROMPTS), 0))
    tokenizer.padding_side = "left"
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(0 * 1_000_003)
    out = model.generate(**inputs, do_sample=True, top_k=0, top_p=1.0, max_new_tokens=5, output_logits=True,
                         return_dict_in_generate=True, pad_token_id=tokenizer.eos_token_id)
    assert torch.equal(out.sequences, batch.sequences)
    generated_logits = torch.stack(out.logits, dim=1)
    recomputed = completion_logits(model, batch)
    mask = batch.completion_mask.bool()
    assert_close(recomputed[mask], generated_logits[mask], atol=1e-4, rtol=1e-4)


def test_kl_of_a_model_to_itself_is_zero_and_to_another_positive(tiny_assets):
    model, tokenizer = _model_and_tokenizer(tiny_assets["sft_model"])
    tokenizer.pad_token = tokenizer.eos_token
    other = AutoModelForCausalLM.from_pretrained(tiny_assets["sft_model"]).eval()
    with torch.no_grad():
        other.transformer.ln_f.weight.mul_(1.5)  # sharper next-token distributions everywhere
    batch = next(samples(model, tokenizer, PROMPTS, 2, 6, 6, 0))
    same = sequence_kl(completion_logits(model, batch), completion_logits(model, batch), batch.completion_mask)
    different = sequence_kl(completion_logits(model, batch), completion_logits(other, batch), batch.completion_mask)
    assert_close(same, torch.zeros(6), atol=1e-5, rtol=0)
    assert torch.all(different > 0)


def test_sampling_is_pure_temperature_sampling_whatever_the_model_ships(tiny_assets):
    """A model whose generation_config sets every processor a hub model may ship samples exactly what the same
    weights without them sample: generate must not merge the model's own settings into ours."""
    from transformers import GenerationConfig

    plain, tokenizer = _model_and_tokenizer(tiny_assets["sft_model"])
    shipped, _ = _model_and_tokenizer(tiny_assets["sft_model"])
    shipped.generation_config = GenerationConfig(
        do_sample=True, temperature=0.3, top_k=5, top_p=0.5, min_p=0.2, typical_p=0.3, epsilon_cutoff=0.01,
        repetition_penalty=3.0, no_repeat_ngram_size=1, min_new_tokens=6, bad_words_ids=[[5]], suppress_tokens=[7],
        begin_suppress_tokens=[8], forced_eos_token_id=0)

    def completions(model):
        return [ids for batch in samples(model, tokenizer, PROMPTS, 4, 6, 12, 3)
                for ids in batch.completion_token_ids()]

    assert completions(shipped) == completions(plain)
    assert shipped.generation_config.repetition_penalty == 3.0  # the model's own config is given back
    # The check above can fail: given our config but left to merge its own, the model samples something else.
    batch = next(samples(plain, tokenizer, PROMPTS, 4, 6, 12, 3))
    torch.manual_seed(3 * 1_000_003)
    with torch.no_grad():
        merged = shipped.generate(input_ids=batch.sequences[:, : batch.prompt_width], attention_mask=batch.prompt_mask,
                                  generation_config=pure_sampling_config(1.0, 6, tokenizer.eos_token_id,
                                                                         tokenizer.eos_token_id))
    assert not torch.equal(merged, batch.sequences)


def test_completion_logps_by_hand_on_a_tiny_model(tiny_assets):
    """log pi(y | x) is the sum of the log-softmax of the logits at the positions that predict y, recomputed here
    one sequence at a time without padding; the EOS counts only where the completion has it."""
    model, tokenizer = _model_and_tokenizer(tiny_assets["sft_model"])
    prompts = prompt_ids(tokenizer)
    completions = [[17, 23, tokenizer.eos_token_id], [40], [5, 6, 7, 8]]
    batched = completion_logps(model, prompts, completions, tokenizer.eos_token_id, batch_size=2)
    for prompt, completion, value in zip(prompts, completions, batched):
        ids = torch.tensor([prompt + completion])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
        expected = sum(logprobs[len(prompt) - 1 + t, token] for t, token in enumerate(completion))
        assert abs(value.item() - expected.item()) < 1e-4


def test_a_completion_ends_at_the_first_of_several_stop_tokens_and_its_length_leaves_the_stop_out():
    """Stop ids [0, 9]: row 1 stops at 9 (position 2), row 2 at 0 (position 1), row 3 never. Lengths before the stop:
    [5, 7, EOS] -> 2, [5, 7] -> 2, [EOS] -> 0 (a 1-token "collapse" that is no answer at all)."""
    from dpo_pipeline.generation import tokens_before_stop

    tokens = torch.tensor([[5, 6, 9, 0, 0], [5, 0, 9, 0, 0], [5, 6, 7, 8, 1]])
    expected = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    assert torch.equal(completion_mask_from_tokens(tokens, eos_token_id=[0, 9]), expected)
    assert [tokens_before_stop(ids, [0, 9]) for ids in ([5, 7, 0], [5, 7], [9], [])] == [2, 2, 0, 0]


def test_the_stop_tokens_are_eos_the_generation_configs_and_the_chat_templates_end_of_turn(tiny_assets):
    """A chat template ending each turn with <|end|> (not the tokenizer's EOS), a generation config listing two ids:
    all of them stop sampling, each once, EOS first; a tokenizer without a template has no end-of-turn token."""
    from dpo_pipeline.generation import end_of_turn_ids, stop_token_ids

    tokenizer = AutoTokenizer.from_pretrained(tiny_assets["sft_model"])
    model = AutoModelForCausalLM.from_pretrained(tiny_assets["sft_model"])
    eos = tokenizer.eos_token_id
    assert end_of_turn_ids(tokenizer) == [] and stop_token_ids(tokenizer, model) == [eos]
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|end|>"]})
    tokenizer.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}<|end|>{% endfor %}"
                               "{% if add_generation_prompt %}assistant: {% endif %}")
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    assert end != eos and end_of_turn_ids(tokenizer) == [end]
    model.generation_config.eos_token_id = [eos, 7]
    assert stop_token_ids(tokenizer, model) == [eos, 7, end]


def test_sampling_stops_at_any_stop_token(tiny_assets):
    """The same seed with one more stop token: every completion is the unconstrained one cut after the first
    occurrence of that token (or the same, where it never occurs)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_assets["sft_model"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_assets["sft_model"])
    eos = tokenizer.eos_token_id
    ids = prompt_ids(tokenizer)
    free = [row for batch in iter_samples(model, ids, 4, 12, 1.0, 12, 0, eos, eos)
            for row in batch.completion_token_ids()]
    counts = {}
    for row in free:
        for token in set(row) - {eos}:
            counts[token] = counts.get(token, 0) + 1
    stop = max(counts, key=counts.get)  # the token most completions hold
    stopped = [row for batch in iter_samples(model, ids, 4, 12, 1.0, 12, 0, eos, [eos, stop])
               for row in batch.completion_token_ids()]
    cut = [row[: row.index(stop) + 1] if stop in row else row for row in free]
    assert stopped == cut and sum(stop in row for row in free) >= 2
