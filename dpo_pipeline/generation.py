"""Sampling completions of review prefixes: temperature only, never top-k or top-p truncation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

CACHE_IMPLEMENTATIONS = ("dynamic", "static")


@dataclass
class SampledBatch:
    """One batch of sampled sequences, laid out as `generate` returns them.

    sequences: [B, P + T] prompt tokens left-padded to width P, then T completion tokens (padding after EOS).
    prompt_mask: [B, P] 1 on real prompt tokens.
    completion_mask: [B, T] 1 on completion tokens up to and including the first EOS.
    item_indices: [B] index of each row in the flat list of (prompt, sample) items.
    """

    item_indices: list[int]
    sequences: torch.Tensor
    prompt_mask: torch.Tensor
    completion_mask: torch.Tensor

    @property
    def prompt_width(self) -> int:
        return self.prompt_mask.shape[1]

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.completion_mask], dim=1)

    def completion_token_ids(self) -> list[list[int]]:
        completions = self.sequences[:, self.prompt_width :]
        return [row[mask.bool()].tolist() for row, mask in zip(completions, self.completion_mask)]


def completion_mask_from_tokens(completion_ids: torch.Tensor, eos_token_id: int | Sequence[int]) -> torch.Tensor:
    """[B, T] mask that is 1 up to and including the first stop token of each row (`eos_token_id`: one id or a list
    of them; the stop token is a generated token)."""
    stops = torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id),
                         device=completion_ids.device)
    is_eos = torch.isin(completion_ids, stops).long()
    eos_before = torch.cumsum(is_eos, dim=1) - is_eos
    return (eos_before == 0).long()


def end_of_turn_ids(tokenizer) -> list[int]:
    """The chat template's end-of-turn token: the first special token after the assistant's answer when the
    template renders a conversation (Qwen's <|im_end|>, Llama 3's <|eot_id|>); none without a template."""
    if not getattr(tokenizer, "chat_template", None):
        return []
    from .data import chat_token_ids

    user = [{"role": "user", "content": "Hello"}]
    opened = chat_token_ids(tokenizer, user)
    answered = chat_token_ids(tokenizer, [*user, {"role": "assistant", "content": "Fine"}], add_generation_prompt=False)
    special = set(tokenizer.all_special_ids) | {token_id for token_id, token in tokenizer.added_tokens_decoder.items()
                                                if token.special}
    if answered[: len(opened)] != opened:
        return []
    return next(([token] for token in answered[len(opened):] if token in special), [])


def stop_token_ids(tokenizer, model=None) -> list[int]:
    """Every token that ends a completion: the tokenizer's EOS, the ids of the model's generation config (a list for
    many chat models) and the chat template's end-of-turn token (`end_of_turn_ids`), each once, EOS first."""
    ids = [tokenizer.eos_token_id]
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += configured if isinstance(configured, list) else [configured]
    ids += end_of_turn_ids(tokenizer)
    return list(dict.fromkeys(token for token in ids if token is not None))


def tokens_before_stop(completion_ids: Sequence[int], stop_ids: Sequence[int]) -> int:
    """A completion's length without the stop token it ended with (a sampled EOS is not a word of the answer):
    [5, 7, EOS] -> 2, [5, 7] -> 2, [EOS] -> 0."""
    return len(completion_ids) - int(bool(completion_ids) and completion_ids[-1] in stop_ids)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from the first real token, as `generate` computes them for left-padded prompts."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def left_pad(sequences: Sequence[Sequence[int]], pad_token_id: int,
             width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, W] input ids, each sequence right-aligned after `pad_token_id`s, and the [B, W] attention mask (1 on the
    sequence's own tokens). W is `width`, or the longest sequence's length."""
    width = max(map(len, sequences)) if width is None else width
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        if ids:
            input_ids[row, width - len(ids) :] = torch.tensor(list(ids), dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
    return input_ids, attention_mask


def pure_sampling_config(temperature: float, max_new_tokens: int, pad_token_id: int, eos_token_id: int | list[int],
                         cache_implementation: str = "dynamic"):
    """Ancestral sampling at `temperature` and nothing else: no top-k, top-p, min-p, typical-p, repetition
    penalty, n-gram blocking, forced or suppressed tokens, minimum length. Built from transformers' defaults, not
    from the model's own `generation_config`, whose settings would otherwise be merged in."""
    from transformers import GenerationConfig

    return GenerationConfig(
        do_sample=True, temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
        pad_token_id=pad_token_id, eos_token_id=eos_token_id,
        cache_implementation="static" if cache_implementation == "static" else None,
    )


@contextmanager
def generation_config_of(model, generation_config):
    """`model.generate` reads defaults from `model.generation_config` for every setting the config it is given
    leaves at its default (a model may ship `repetition_penalty`, `min_p`, `no_repeat_ngram_size` ...): while
    sampling, the model's own config is ours."""
    saved = model.generation_config
    model.generation_config = generation_config
    try:
        yield generation_config
    finally:
        model.generation_config = saved


def iter_samples(model, prompt_token_ids: Sequence[Sequence[int]], samples_per_prompt: int, max_new_tokens: int,
                 temperature: float, batch_size: int, seed: int, pad_token_id: int, eos_token_id: int | list[int],
                 item_offset: int = 0, cache_implementation: str = "dynamic") -> Iterator[SampledBatch]:
    """Sample `samples_per_prompt` completions of every prompt (given as token ids), `batch_size` sequences at a time.

    The model continues exactly the prompt's ids (a re-tokenization of the prompt's text can differ), sampling at
    `temperature` with no other logits processor, whatever the model's `generation_config` says, until any of the
    `eos_token_id` ids (`stop_token_ids`: EOS and a chat model's end-of-turn token) or `max_new_tokens`.

    Items are (prompt i, sample k) in the order i * samples_per_prompt + k. Each batch re-seeds torch's generator
    from `seed` and the batch's first item (counted from `item_offset`, for callers that sample a long prompt list
    in slices), so a batch's samples do not depend on the batches before it: a run that resumes part-way gives
    the same samples.

    `cache_implementation="static"` preallocates the KV cache, and transformers then compiles the decoding step on
    a GPU (the first batch pays for the compilation). Every batch is then left-padded to one width, the longest
    prompt's, so that the compiled step keeps one shape instead of recompiling for each batch's widest prompt.
    """
    if cache_implementation not in CACHE_IMPLEMENTATIONS:
        raise ValueError(f"cache_implementation must be one of {CACHE_IMPLEMENTATIONS}, got {cache_implementation!r}")
    generation_config = pure_sampling_config(temperature, max_new_tokens, pad_token_id, eos_token_id,
                                             cache_implementation)
    width = max(map(len, prompt_token_ids)) if cache_implementation == "static" and prompt_token_ids else None
    device = next(model.parameters()).device
    items = [i for i in range(len(prompt_token_ids)) for _ in range(samples_per_prompt)]
    with generation_config_of(model, generation_config):
        for start in range(0, len(items), batch_size):
            batch_items = list(range(start, min(start + batch_size, len(items))))
            input_ids, attention_mask = left_pad([prompt_token_ids[items[i]] for i in batch_items], pad_token_id,
                                                 width)
            input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
            torch.manual_seed(seed * 1_000_003 + item_offset + start)
            with torch.no_grad():
                sequences = model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                           generation_config=generation_config)
            completion = sequences[:, input_ids.shape[1] :]
            yield SampledBatch(
                item_indices=batch_items,
                sequences=sequences,
                prompt_mask=attention_mask,
                completion_mask=completion_mask_from_tokens(completion, eos_token_id),
            )


@torch.no_grad()
def completion_logits(model, batch: SampledBatch, rows: slice | None = None) -> torch.Tensor:
    """[B, T, V] logits of `model` at the positions that predict the batch's completion tokens."""
    rows = rows or slice(None)
    attention_mask = batch.attention_mask[rows]
    logits = model(
        input_ids=batch.sequences[rows], attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask), use_cache=False,
    ).logits
    return logits[:, batch.prompt_width - 1 : -1]


@torch.no_grad()
def completion_logps(model, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]],
                     pad_token_id: int, batch_size: int) -> torch.Tensor:
    """log pi(y | x) of each (prompt x, completion y) given as token ids, summed over y's tokens:

        log pi(y | x) = sum_{t=1..T} log softmax(logits(x, y_<t))[y_t]

    with y as it is given (its EOS included only where it has one), so that the implicit reward
    beta * (log pi - log pi_ref) is the one DPO trained on the same ids. Log-softmax is taken in float32.

    Returns a [N] float32 tensor (on the CPU) for N = len(prompt_ids) = len(completion_ids).
    """
    device = next(model.parameters()).device
    sequences = [(list(x) + list(y), len(x)) for x, y in zip(prompt_ids, completion_ids)]
    results = []
    for start in range(0, len(sequences), batch_size):
        batch = sequences[start : start + batch_size]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        completion_mask = torch.zeros((len(batch), width), dtype=torch.bool)
        for row, (ids, prompt_length) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
            completion_mask[row, max(prompt_length, 1) : len(ids)] = True  # the first token has no prediction
        logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), use_cache=False).logits
        logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        token_logprobs = logprobs.gather(-1, input_ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
        results.append((token_logprobs * completion_mask[:, 1:].to(device)).sum(dim=-1).cpu())
    return torch.cat(results) if results else torch.zeros(0)
