"""Preference pairs from scored completions: chosen is the completion the classifier rewards more; and from the pairs,
KTO's unpaired examples (`unpaired_examples`)."""

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


def unpaired_examples(pairs) -> list[dict]:
    """KTO's unpaired examples (TRL's unpaired preference layout, tokenized: `prompt_ids`, `completion_ids`, `label`)
    from pairs of sampled token ids (`pairs[column]` lists of `prompt_ids`, `chosen_ids`, `rejected_ids`: a
    `datasets.Dataset` or a dict of lists). The ids are the sampled ones as they are: EOS ends a completion only where
    it was sampled, nothing is prepended.

    Each distinct completion of a prompt (prompt ids, completion ids) is one example, labelled by its pairs: desirable
    (True) if it is the chosen one in more of its pairs than the rejected one, undesirable (False) if it is the
    rejected one in more, left out if in as many. A completion only ever chosen is desirable, one only ever rejected
    undesirable. In order of first appearance (a pair's chosen before its rejected).

    Why once, not once per pair (TRL's `unpair_preference_dataset`) or once per role: with mode "all" (N completions
    of distinct rewards, N(N-1)/2 pairs) the N-2 middle completions are chosen in some pairs and rejected in others.
    An (x, y) that is both a desirable and an undesirable example adds lambda_D (1 - sigmoid(beta (r - z0))) +
    lambda_U (1 - sigmoid(beta (z0 - r))) to KTO's loss, a constant in r when lambda_D = lambda_U: its two examples
    pull it up and down equally and cost compute for nothing. Labelled by its majority, a completion says what its
    pairs say of it on balance, once.

    Counts per prompt: mode "all", N completions of distinct rewards: the better half desirable, the worse half
    undesirable, N/2 + N/2 (for the DPO paper's N = 4, 6 pairs: 2 + 2, the best chosen 3 times, the second chosen
    twice and rejected once; with odd N the median one, chosen as often as rejected, is left out). Mode
    "best_vs_worst": 1 + 1. So desirable and undesirable examples are as many (ties in reward aside), the ratio TRL's
    KTOTrainer advises for equal weights (Eq. (8) of the KTO paper: desirable_weight x desirable /
    (undesirable_weight x undesirable) in [1, 4/3]). Flipped labels (label noise) move a completion's majority only
    where enough of its pairs are flipped.
    """
    roles = {}  # (prompt ids, completion ids) -> [times chosen, times rejected], in order of first appearance
    for prompt, chosen, rejected in zip(*(pairs[column] for column in TOKENIZED_COLUMNS)):
        for completion, role in ((chosen, 0), (rejected, 1)):
            roles.setdefault((tuple(prompt), tuple(completion)), [0, 0])[role] += 1
    return [{"prompt_ids": list(prompt), "completion_ids": list(completion), "label": chosen > rejected}
            for (prompt, completion), (chosen, rejected) in roles.items() if chosen != rejected]


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
