"""Pair making: chosen has the higher reward; all N(N-1)/2 pairs or best vs worst; ties make no pair."""

import pytest

from sentiment_dpo.pairs import make_pairs, pair_records


def test_all_pairs_of_four_distinct_rewards_are_six():
    rewards = [0.2, 0.9, 0.5, 0.1]
    pairs = make_pairs(["a", "b", "c", "d"], rewards)
    # By hand: (0,1)->1 over 0, (0,2)->2 over 0, (0,3)->0 over 3, (1,2)->1 over 2, (1,3)->1 over 3, (2,3)->2 over 3
    assert pairs == [(1, 0), (2, 0), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert all(rewards[chosen] > rewards[rejected] for chosen, rejected in pairs)


def test_equal_rewards_make_no_pair():
    assert make_pairs(["a", "b", "c", "d"], [0.9, 0.1, 0.5, 0.5]) == [(0, 1), (0, 2), (0, 3), (2, 1), (3, 1)]
    assert make_pairs(["a", "b", "c"], [0.3, 0.3, 0.3]) == []
    assert make_pairs(["a", "b", "c"], [0.3, 0.3, 0.3], "best_vs_worst") == []


def test_best_vs_worst_is_one_pair():
    assert make_pairs(["a", "b", "c", "d"], [0.2, 0.9, 0.5, 0.1], "best_vs_worst") == [(1, 3)]
    # Ties at the top or bottom: the first occurrence is used.
    assert make_pairs(["a", "b", "c"], [0.9, 0.9, 0.1], "best_vs_worst") == [(0, 2)]


def test_bad_arguments():
    with pytest.raises(ValueError, match="rewards"):
        make_pairs(["a", "b"], [0.1])
    with pytest.raises(ValueError, match="pair mode"):
        make_pairs(["a", "b"], [0.1, 0.2], "random")


def test_pair_records_carry_rewards_and_skip_empty_completions():
    record = {"prompt_index": 7, "prompt": "The film", "completions": [" is great.", " is dull.", ""],
              "rewards": [0.95, 0.05, 0.5]}
    pairs = pair_records(record, "all")
    # (0,1) and (0,2), (2,1): the two with the empty completion are dropped.
    assert pairs == [{"prompt": "The film", "chosen": " is great.", "rejected": " is dull.", "chosen_reward": 0.95,
                      "rejected_reward": 0.05, "prompt_index": 7}]
