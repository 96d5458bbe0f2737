"""Sampling completions of review prefixes: temperature only, never top-k or top-p truncation."""

from __future__ import annotations

from collections.abc import Iterator
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


def completion_mask_from_tokens(completion_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """[B, T] mask that is 1 up to and including the first EOS of each row (the EOS is a generated token)."""
    is_eos = (completion_ids == eos_token_id).long()
    eos_before = torch.cumsum(is_eos, dim=1) - is_eos
    return (eos_before == 0).long()


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from the first real token, as `generate` computes them for left-padded prompts."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def iter_samples(model, tokenizer, prompts: list[str], samples_per_prompt: int, max_new_tokens: int,
                 temperature: float, batch_size: int, seed: int, item_offset: int = 0,
                 cache_implementation: str = "dynamic") -> Iterator[SampledBatch]:
    """Sample `samples_per_prompt` completions of every prompt, `batch_size` sequences at a time.

    Items are (prompt i, sample k) in the order i * samples_per_prompt + k. Each batch re-seeds torch's generator
    from `seed` and the batch's first item (counted from `item_offset`, for callers that sample a long prompt list
    in slices), so a batch's samples do not depend on the batches before it: a run that resumes part-way gives
    the same samples.

    `cache_implementation="static"` preallocates the KV cache, and transformers then compiles the decoding step on
    a GPU (the first batch pays for the compilation). Every batch is then left-padded to one width, the longest
    prompt's, so that the compiled step keeps one shape instead of recompiling for each batch's widest prompt.
    """
    from transformers import GenerationConfig

    if cache_implementation not in CACHE_IMPLEMENTATIONS:
        raise ValueError(f"cache_implementation must be one of {CACHE_IMPLEMENTATIONS}, got {cache_implementation!r}")
    generation_config = GenerationConfig(
        do_sample=True, temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        cache_implementation="static" if cache_implementation == "static" else None,
    )
    padding = {"padding": True}
    if cache_implementation == "static" and prompts:
        width = max(map(len, tokenizer(list(dict.fromkeys(prompts)), add_special_tokens=False)["input_ids"]))
        padding = {"padding": "max_length", "max_length": width}
    device = next(model.parameters()).device
    items = [i for i in range(len(prompts)) for _ in range(samples_per_prompt)]
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        for start in range(0, len(items), batch_size):
            batch_items = list(range(start, min(start + batch_size, len(items))))
            inputs = tokenizer([prompts[items[i]] for i in batch_items], return_tensors="pt", **padding,
                               add_special_tokens=False).to(device)
            torch.manual_seed(seed * 1_000_003 + item_offset + start)
            with torch.no_grad():
                sequences = model.generate(**inputs, generation_config=generation_config)
            completion = sequences[:, inputs["input_ids"].shape[1] :]
            yield SampledBatch(
                item_indices=batch_items,
                sequences=sequences,
                prompt_mask=inputs["attention_mask"],
                completion_mask=completion_mask_from_tokens(completion, tokenizer.eos_token_id),
            )
    finally:
        tokenizer.padding_side = padding_side


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
def completion_logps(model, tokenizer, prompts: list[str], completions: list[str], batch_size: int) -> torch.Tensor:
    """log pi(y | x) of each (prompt x, completion y), summed over y's tokens and the EOS that ends it.

    Tokenized as TRL's DPOTrainer tokenizes its pairs, so that the implicit reward beta * (log pi - log pi_ref)
    matches the one DPO trained: x + y + EOS is tokenized as one text, and y's tokens are those after the longest
    common prefix with the tokenized x.

    Returns a [N] float32 tensor (on the CPU) for N = len(prompts) = len(completions).
    """
    from trl.data_utils import common_prefix_length

    device = next(model.parameters()).device
    sequences = []
    for prompt, completion in zip(prompts, completions):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(prompt + completion + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        sequences.append((full_ids, common_prefix_length(prompt_ids, full_ids)))
    results = []
    for start in range(0, len(sequences), batch_size):
        batch = sequences[start : start + batch_size]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
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
