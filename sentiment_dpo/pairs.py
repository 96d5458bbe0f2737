"""Preference pairs from scored completions: chosen is the completion the classifier rewards more."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

PAIR_MODES = ("all", "best_vs_worst")


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


def pair_records(prompt_record: dict, mode: str) -> list[dict]:
    """The pairs of one scored prompt record (prompt, completions, rewards) as JSONL records for TRL's DPOTrainer.

    A completion that is empty (the model ended at once) takes part in no pair: DPO would train on EOS alone.
    """
    completions, rewards = prompt_record["completions"], prompt_record["rewards"]
    return [
        {
            "prompt": prompt_record["prompt"],
            "chosen": completions[chosen],
            "rejected": completions[rejected],
            "chosen_reward": rewards[chosen],
            "rejected_reward": rewards[rejected],
            "prompt_index": prompt_record["prompt_index"],
        }
        for chosen, rejected in make_pairs(completions, rewards, mode)
        if completions[chosen].strip() and completions[rejected].strip()
    ]
