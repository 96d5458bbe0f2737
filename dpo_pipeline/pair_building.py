"""Preference pairs from scored completions: chosen is the completion the classifier rewards more."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from pathlib import Path

import numpy as np

PAIR_MODES = ("all", "best_vs_worst")
# A pair's text fields, and TRL's tokenized preference format, which the pairs of preference_pairs.py also carry.
TEXT_COLUMNS = ("prompt", "chosen", "rejected")
TOKENIZED_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")


def make_pairs(completions: Sequence[str], rewards: Sequence[float], mode: str = "all") -> list[tuple[int, int]]:
    """Pairs (chosen index, rejected index) of one prompt's completions.

    mode "all": every unordered pair {i, j}, i < j, with different rewards, the higher-reward one chosen; N
    completions with distinct rewards give N(N-1)/2 pairs (6 for N = 4, as in the DPO paper).
    mode "best_vs_worst": one pair, the highest reward against the lowest (first occurrence on ties), or none when
    all rewards are equal. Equal rewards never make a pair: there is no preference to learn.
    """
    if len(completions) != len(rewards):
        raise ValueError(f"{len(completions)} completions but {len(rewards)} rewards")
    if mode == "all":
        pairs = []
        for i, j in combinations(range(len(rewards)), 2):
            if rewards[i] > rewards[j]:
                pairs.append((i, j))
            elif rewards[j] > rewards[i]:
                pairs.append((j, i))
        return pairs
    if mode == "best_vs_worst":
        if not rewards:
            return []
        best = max(range(len(rewards)), key=lambda i: (rewards[i], -i))
        worst = min(range(len(rewards)), key=lambda i: (rewards[i], i))
        return [(best, worst)] if rewards[best] > rewards[worst] else []
    raise ValueError(f"unknown pair mode {mode!r}; expected one of {', '.join(PAIR_MODES)}")


def max_pairs_per_prompt(completions_per_prompt: int, mode: str) -> int:
    """Most pairs `make_pairs` gives for one prompt: N(N-1)/2 in mode "all", 1 in "best_vs_worst" (fewer when
    rewards tie)."""
    return completions_per_prompt * (completions_per_prompt - 1) // 2 if mode == "all" else 1


def pair_records(prompt_record: dict, mode: str) -> list[dict]:
    """The pairs of one scored prompt record (completions.jsonl) as JSONL records for TRL's DPOTrainer.

    Each pair carries the sampled token ids, TRL's tokenized format (`prompt_ids`, `chosen_ids`, `rejected_ids`),
    which dpo.py trains on as they are: a completion's ids end with EOS only where EOS was sampled, and a completion
    that ended at once (EOS alone, empty text) is a sample like any other. The text fields are for reading.
    """
    completions, rewards = prompt_record["completions"], prompt_record["rewards"]
    completion_ids = prompt_record["completion_token_ids"]
    return [
        {
            "prompt": prompt_record["prompt"],
            "chosen": completions[chosen],
            "rejected": completions[rejected],
            "prompt_ids": prompt_record["prompt_token_ids"],
            "chosen_ids": completion_ids[chosen],
            "rejected_ids": completion_ids[rejected],
            "chosen_reward": rewards[chosen],
            "rejected_reward": rewards[rejected],
            "prompt_index": prompt_record["prompt_index"],
        }
        for chosen, rejected in make_pairs(completions, rewards, mode)
    ]


def flip_labels(pairs: Sequence[dict], fraction: float, seed: int) -> list[dict]:
    """Label noise: a copy of `pairs` in which round(fraction * len(pairs)) of them, picked by a seeded random
    permutation, have chosen and rejected (their texts, token ids and rewards) swapped and carry `label_flipped: true`.

    The permutation does not depend on `fraction`, so the pairs flipped at a lower level are a subset of those
    flipped at a higher one: the levels of a noise study differ only by the added noise.
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"label noise must be in [0, 1], got {fraction}")
    flipped = set(np.random.default_rng(seed).permutation(len(pairs))[: round(fraction * len(pairs))].tolist())
    noisy = []
    for index, pair in enumerate(pairs):
        pair = {**pair, "label_flipped": index in flipped}
        if index in flipped:
            for chosen, rejected in (("chosen", "rejected"), ("chosen_ids", "rejected_ids"),
                                     ("chosen_reward", "rejected_reward")):
                if chosen in pair:
                    pair[chosen], pair[rejected] = pair[rejected], pair[chosen]
        noisy.append(pair)
    return noisy


def noisy_pairs_file(pairs_file: str | Path, label_noise: float) -> Path:
    """Where `preference_pairs.py` writes the pairs with a share `label_noise` of flipped labels, beside the clean
    ones: generations/tiny/pairs.jsonl -> generations/tiny/pairs_noise-0.2.jsonl."""
    path = Path(pairs_file)
    return path if label_noise == 0 else path.with_name(f"{path.stem}_noise-{label_noise:g}{path.suffix}")
