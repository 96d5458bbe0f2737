"""Pair making: chosen has the higher reward; all N(N-1)/2 pairs or best vs worst; ties make no pair."""

import pytest

from dpo_pipeline.pair_building import make_pairs, pair_records


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


def test_pair_records_carry_the_sampled_ids_and_keep_completions_that_ended_at_once():
    """Completion 2 sampled EOS (id 0) at once: empty text, but a sample like any other. Completion 1 was cut by
    max_new_tokens and has no EOS; completion 0 ended with one."""
    record = {"prompt_index": 7, "prompt": "The film", "prompt_token_ids": [11, 12],
              "completions": [" is great.", " is dull", ""], "completion_token_ids": [[21, 22, 0], [21, 23], [0]],
              "rewards": [0.95, 0.05, 0.5]}
    pairs = pair_records(record, "all")
    # By hand: (0,1) -> 0 over 1; (0,2) -> 0 over 2; (1,2) -> 2 over 1.
    common = {"prompt": "The film", "prompt_ids": [11, 12], "prompt_index": 7}
    assert pairs == [
        {**common, "chosen": " is great.", "rejected": " is dull", "chosen_ids": [21, 22, 0],
         "rejected_ids": [21, 23], "chosen_reward": 0.95, "rejected_reward": 0.05},
        {**common, "chosen": " is great.", "rejected": "", "chosen_ids": [21, 22, 0], "rejected_ids": [0],
         "chosen_reward": 0.95, "rejected_reward": 0.5},
        {**common, "chosen": "", "rejected": " is dull", "chosen_ids": [0], "rejected_ids": [21, 23],
         "chosen_reward": 0.5, "rejected_reward": 0.05},
    ]


def test_label_noise_flips_the_asked_share_seeded_and_nested():
    from dpo_pipeline.pair_building import flip_labels

    pairs = [{"prompt": "p", "chosen": f"good {i}", "rejected": f"bad {i}", "chosen_ids": [1, i],
              "rejected_ids": [2, i], "chosen_reward": 0.9, "rejected_reward": 0.1} for i in range(50)]
    light, heavy = flip_labels(pairs, 0.2, seed=1), flip_labels(pairs, 0.4, seed=1)
    flipped_light = {i for i, pair in enumerate(light) if pair["label_flipped"]}
    flipped_heavy = {i for i, pair in enumerate(heavy) if pair["label_flipped"]}
    assert len(flipped_light) == 10 and len(flipped_heavy) == 20
    assert flipped_light < flipped_heavy  # a higher level adds flips to the lower level's
    for i in flipped_light:
        assert light[i]["chosen"] == f"bad {i}" and light[i]["rejected"] == f"good {i}"
        assert light[i]["chosen_ids"] == [2, i] and light[i]["rejected_ids"] == [1, i]
        assert light[i]["chosen_reward"] == 0.1
    assert all(light[i] == {**pairs[i], "label_flipped": False} for i in range(50) if i not in flipped_light)
    assert flip_labels(pairs, 0.2, seed=1) == light and flip_labels(pairs, 0.2, seed=2) != light
    assert pairs[0]["chosen"] == "good 0"  # the input is not modified


def test_noisy_pairs_file_sits_beside_the_clean_one():
    from pathlib import Path

    from dpo_pipeline.pair_building import noisy_pairs_file

    assert noisy_pairs_file("generations/tiny/pairs.jsonl", 0.2) == Path("generations/tiny/pairs_noise-0.2.jsonl")
    assert noisy_pairs_file("generations/tiny/pairs.jsonl", 0) == Path("generations/tiny/pairs.jsonl")
