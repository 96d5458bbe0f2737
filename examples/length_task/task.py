"""The length task's parts (see the package's docstring)."""

from __future__ import annotations

import numpy as np

from dpo_pipeline.data import Prompt, decode_tokens, load_texts
from dpo_pipeline.errors import PipelineError
from dpo_pipeline.tasks import Reward, Task, register_task

TARGET_WORDS = 12


class LengthReward(Reward):
    """min(1, words / TARGET_WORDS) of each text: a rule-based reward, so it needs no classifier and no device."""

    name = "length"

    def score(self, texts: list[str], desc: str | None = None) -> list[float]:
        return [min(1.0, len(text.split()) / TARGET_WORDS) for text in texts]


def prefixes(args, tokenizer, split: str, count: int, seed: int, first_index: int = 0) -> list[Prompt]:
    """`count` prompts: the first min_prefix_tokens..max_prefix_tokens tokens (drawn per text, seeded) of texts of
    `split`, visited in a seeded order; texts no longer than their prefix are skipped."""
    texts = load_texts(args.dataset_name, split, args.dataset_config, args.text_column, str.strip)["text"]
    rng = np.random.default_rng(seed)
    prompts = []
    for source_index in rng.permutation(len(texts)).tolist():
        ids = tokenizer(texts[source_index], add_special_tokens=False)["input_ids"]
        length = int(rng.integers(args.min_prefix_tokens, args.max_prefix_tokens + 1))
        if len(ids) <= length:
            continue
        prefix = tuple(ids[:length])
        prompts.append(Prompt(first_index + len(prompts), source_index, 0, decode_tokens(tokenizer, prefix), length,
                              prefix, split))
        if len(prompts) == count:
            break
    if not prompts:
        raise PipelineError(f"dataset_name: {args.dataset_name} ({split}) has no text longer than its prefix")
    return prompts


def pair_prompts(args, tokenizer) -> tuple[list[Prompt], int]:
    prompts = prefixes(args, tokenizer, args.dataset_split, args.num_prompts + args.heldout_prompts, args.seed)
    if len(prompts) <= args.heldout_prompts:
        raise PipelineError(f"heldout_prompts: only {len(prompts)} prompts, not enough for {args.heldout_prompts} "
                            "held-out ones and some to train on")
    return prompts, len(prompts) - args.heldout_prompts


def evaluation_prompts(args, tokenizer) -> list[Prompt]:
    return prefixes(args, tokenizer, args.dataset_split, args.num_prompts, args.seed)


TASK = register_task(Task(
    name="length",
    description="longer completions are better: the completion's words as a share of a target, capped at 1",
    evaluation_prompts=evaluation_prompts,
    pair_prompts=pair_prompts,
    load_reward=lambda args, device, dtype: LengthReward(),
    has_reward=lambda args: True,
    judge_template="Which continuation is longer?\nStart: {prompt}\nA: {first}\nB: {second}\nAnswer A or B:",
    describe_prompts=lambda args, num_prompts: f"{num_prompts} text prefixes of `{args.dataset_name}` "
                                               f"({args.dataset_split} split)",
    describe_reward=lambda args: f"the completion's length in words over {TARGET_WORDS}, capped at 1",
    prompt_noun="prefixes",
))
