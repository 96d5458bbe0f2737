"""The math against numbers worked out by hand: reward lookup, sequence KL, implicit-reward accuracy and margins,
win counts with ties, best-of-N KL and expected reward."""

import math

import pytest
import torch
from torch.testing import assert_close

from dpo_pipeline.metrics import (
    clustered_mean_and_standard_error,
    mean_and_standard_error,
    positive_label_index,
    positive_probability,
    sequence_kl,
)


def test_positive_label_is_found_by_name_in_either_order():
    assert positive_label_index({0: "NEGATIVE", 1: "POSITIVE"}) == 1  # siebert's order
    assert positive_label_index({0: "POSITIVE", 1: "NEGATIVE"}) == 0
    assert positive_label_index({"0": "negative", "1": "positive"}) == 1  # JSON configs have string keys


@pytest.mark.parametrize("id2label", [{0: "LABEL_0", 1: "LABEL_1"}, {0: "POSITIVE", 1: "positive"}, {}])
def test_positive_label_must_exist_exactly_once(id2label):
    with pytest.raises(ValueError, match="POSITIVE"):
        positive_label_index(id2label)


def test_positive_probability_by_hand():
    """logits [0, ln 3]: softmax = [1/4, 3/4]; logits [ln 2, 0]: softmax = [2/3, 1/3]."""
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(2.0), 0.0]])
    assert_close(positive_probability(logits, 1), torch.tensor([0.75, 1 / 3]))
    assert_close(positive_probability(logits, 0), torch.tensor([0.25, 2 / 3]))


def test_sequence_kl_by_hand():
    """One sequence, V = 2, T = 2, the second position masked out (after EOS).

    Position 1: pi = softmax([0, 0]) = [1/2, 1/2], pi_ref = softmax([0, ln 3]) = [1/4, 3/4]
        KL = 1/2 ln((1/2)/(1/4)) + 1/2 ln((1/2)/(3/4)) = 1/2 ln 2 + 1/2 ln(2/3) = 1/2 ln(4/3) = 0.143841...
    Position 2 would add KL(pi || pi_ref) of very different logits, but its mask is 0.
    Second sequence: identical distributions at both positions, KL = 0.
    """
    policy = torch.tensor([[[0.0, 0.0], [5.0, -5.0]], [[1.0, 2.0], [0.5, 0.1]]])
    reference = torch.tensor([[[0.0, math.log(3.0)], [-5.0, 5.0]], [[1.0, 2.0], [0.5, 0.1]]])
    mask = torch.tensor([[1, 0], [1, 1]])
    assert_close(sequence_kl(policy, reference, mask), torch.tensor([0.5 * math.log(4 / 3), 0.0]))


def test_sequence_kl_sums_over_positions_and_applies_temperature():
    """Two identical positions of the example above: 2 * 1/2 ln(4/3) = ln(4/3).
    With temperature 2 the logits [0, 2 ln 3] become [0, ln 3]: the same KL as at temperature 1."""
    policy = torch.zeros(1, 2, 2)
    reference = torch.tensor([[[0.0, math.log(3.0)]] * 2])
    mask = torch.ones(1, 2)
    assert_close(sequence_kl(policy, reference, mask), torch.tensor([math.log(4 / 3)]))
    assert_close(sequence_kl(policy, 2 * reference, mask, temperature=2.0), torch.tensor([math.log(4 / 3)]))


def test_sequence_kl_is_not_the_one_sample_log_ratio():
    """The exact KL is >= 0 even where a sampled token is likelier under the reference (log ratio < 0)."""
    policy = torch.tensor([[[0.0, 0.0]]])
    reference = torch.tensor([[[0.0, math.log(3.0)]]])
    log_ratio_of_token_1 = math.log(0.5) - math.log(0.75)
    assert log_ratio_of_token_1 < 0
    assert sequence_kl(policy, reference, torch.ones(1, 1)).item() > 0


def test_mean_and_standard_error_by_hand():
    """[1, 2, 3]: mean 2, sample variance ((1)^2 + 0 + (1)^2) / 2 = 1, standard error sqrt(1/3)."""
    mean, sem = mean_and_standard_error([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0)
    assert sem == pytest.approx(math.sqrt(1 / 3))
    assert mean_and_standard_error([4.0]) == (4.0, 0.0)
    with pytest.raises(ValueError):
        mean_and_standard_error([])


def test_implicit_reward_accuracy_and_margins_worked_by_hand():
    from dpo_pipeline.metrics import implicit_reward_accuracy

    policy_chosen = torch.tensor([-10.0, -12.0, -8.0, -5.0])
    policy_rejected = torch.tensor([-11.0, -10.5, -9.0, -5.0])
    reference = torch.tensor([-11.0, -11.0, -9.0, -6.0])  # the same for chosen and rejected here
    # log-ratios chosen: [1, -1, 1, 1]; rejected: [0, 0.5, 0, 1]; differences: [1, -1.5, 1, 0]
    result = implicit_reward_accuracy(policy_chosen, policy_rejected, reference, reference, beta=0.1)
    assert result["accuracy"] == 0.5  # pairs 0 and 2; pair 3 is a tie and counts as wrong
    assert result["ties"] == 0.25
    assert result["logratio_margin"] == pytest.approx(0.125)  # (1 - 1.5 + 1 + 0) / 4
    assert result["reward_margin"] == pytest.approx(0.0125)
    unscaled = implicit_reward_accuracy(policy_chosen, policy_rejected, reference, reference, beta=None)
    assert unscaled["accuracy"] == 0.5 and unscaled["reward_margin"] is None


def test_the_reference_model_ties_every_pair():
    from dpo_pipeline.metrics import implicit_reward_accuracy

    logps = torch.tensor([-3.0, -7.0])
    result = implicit_reward_accuracy(logps, logps.flip(0), logps, logps.flip(0), beta=1.0)
    assert result == {"accuracy": 0.0, "ties": 1.0, "logratio_margin": 0.0, "reward_margin": 0.0}


def test_win_counts_with_ties_worked_by_hand():
    from dpo_pipeline.metrics import win_counts

    model, baseline = [0.9, 0.5, 0.2, 0.7], [0.8, 0.5, 0.3, 0.7]
    assert win_counts(model, baseline) == {"wins": 1, "losses": 1, "ties": 2, "win_rate": 0.5}
    assert win_counts([0.9, 0.9, 0.1], [0.1, 0.1, 0.1]) == {"wins": 2, "losses": 0, "ties": 1,
                                                           "win_rate": pytest.approx(2.5 / 3)}
    # within the tolerance both close calls become ties
    assert win_counts(model, baseline, tie_tolerance=0.15)["ties"] == 4
    with pytest.raises(ValueError):
        win_counts([0.1], [0.1, 0.2])


def test_best_of_n_kl_is_the_analytic_value():
    from dpo_pipeline.metrics import best_of_n_kl

    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(4) == pytest.approx(1.3862944 - 0.75)  # log 4 - 3/4
    assert best_of_n_kl(64) == pytest.approx(4.1588831 - 0.984375)
    with pytest.raises(ValueError):
        best_of_n_kl(0)


def test_best_of_n_expected_reward_worked_by_hand_and_by_enumeration():
    import itertools
    import random

    from dpo_pipeline.metrics import best_of_n_expected_reward

    rewards = [0.3, 0.1, 0.2]
    assert best_of_n_expected_reward(rewards, 1) == pytest.approx(0.2)  # the mean
    assert best_of_n_expected_reward(rewards, 2) == pytest.approx((0.2 + 0.3 + 0.3) / 3)  # 3 subsets of 2
    assert best_of_n_expected_reward(rewards, 3) == pytest.approx(0.3)  # the maximum
    rng = random.Random(0)
    many = [rng.random() for _ in range(9)]
    for n in (2, 4, 7):
        subsets = list(itertools.combinations(many, n))
        assert best_of_n_expected_reward(many, n) == pytest.approx(sum(map(max, subsets)) / len(subsets))
    with pytest.raises(ValueError):
        best_of_n_expected_reward(rewards, 4)


def test_clustered_standard_error_by_hand():
    """Two prompts with two samples each: values [1, 3 | 2, 6], mean 3. Prompt means 2 and 4, whose sample variance
    is ((2-3)^2 + (4-3)^2) / 1 = 2, so SE = sqrt(2 / 2) = 1; taken as 4 independent values it would be
    sqrt((4 + 0 + 1 + 9) / 3 / 4) = 1.080. Unequal clusters [1 | 2, 6]: residual sums -2 and 2,
    SE = sqrt(2/1 * 8) / 3."""
    assert clustered_mean_and_standard_error([1.0, 3.0, 2.0, 6.0], ["a", "a", "b", "b"]) == pytest.approx((3.0, 1.0))
    assert mean_and_standard_error([1.0, 3.0, 2.0, 6.0])[1] == pytest.approx(math.sqrt(14 / 12))
    assert clustered_mean_and_standard_error([1.0, 2.0, 6.0], [0, 1, 1]) == pytest.approx((3.0, 4 / 3))
    assert clustered_mean_and_standard_error([1.0, 2.0], [5, 5]) == (1.5, 0.0)  # one cluster: no error estimate
    # One sample per prompt: the plain standard error.
    independent = mean_and_standard_error([1.0, 2.0, 3.0])
    assert clustered_mean_and_standard_error([1.0, 2.0, 3.0], [0, 1, 2]) == pytest.approx(independent)
    with pytest.raises(ValueError):
        clustered_mean_and_standard_error([1.0], [0, 1])


def test_cluster_bootstrap_of_two_prompts_worked_by_hand():
    """Two prompts, cluster means 0 and 1 (two samples each). A draw picks 2 prompts with replacement: both the
    first (mean 0, probability 1/4), one of each (0.5, probability 1/2), both the second (1, 1/4). The draws' mean
    is 0.5 and their variance 1/4 * 0.25 + 1/2 * 0 + 1/4 * 0.25 = 1/8, so se -> sqrt(1/8) = 0.3536; the analytic
    clustered SE is 0.5 (sqrt(s^2 / G), s^2 = 0.5), times sqrt((G - 1) / G) = sqrt(1/2) gives the same 0.3536.
    The 95% interval spans [0, 1]."""
    from dpo_pipeline.metrics import cluster_bootstrap

    values, clusters = [0.0, 0.0, 1.0, 1.0], ["p", "p", "q", "q"]
    result = cluster_bootstrap(values, clusters, resamples=20000, seed=1)
    assert result["mean"] == 0.5
    assert result["se"] == pytest.approx(math.sqrt(1 / 8), rel=0.02)
    analytic = clustered_mean_and_standard_error(values, clusters)[1]
    assert result["se"] == pytest.approx(analytic * math.sqrt(1 / 2), rel=0.02)
    assert (result["low"], result["high"]) == (0.0, 1.0)
    # the same seed, the same figures; one prompt alone has no spread to draw from
    assert cluster_bootstrap(values, clusters, resamples=20000, seed=1) == result
    assert cluster_bootstrap([0.2, 0.4], [7, 7]) == {"mean": pytest.approx(0.3), "se": 0.0,
                                                    "low": pytest.approx(0.3), "high": pytest.approx(0.3)}


def test_cluster_bootstrap_approaches_the_analytic_clustered_error_and_exceeds_the_naive_one():
    """40 prompts of 5 samples each, where a prompt's samples share most of their value (a prompt effect): the
    bootstrap over prompts matches the analytic clustered SE times sqrt(39/40) within a few percent, and both are
    well above the SE that treats the 200 samples as independent."""
    import random

    from dpo_pipeline.metrics import cluster_bootstrap

    rng = random.Random(0)
    values, clusters = [], []
    for prompt in range(40):
        effect = rng.gauss(0, 1)
        values += [effect + rng.gauss(0, 0.2) for _ in range(5)]
        clusters += [prompt] * 5
    analytic = clustered_mean_and_standard_error(values, clusters)[1]
    bootstrap = cluster_bootstrap(values, clusters, resamples=4000)["se"]
    assert bootstrap == pytest.approx(analytic * math.sqrt(39 / 40), rel=0.05)
    assert bootstrap > 1.8 * mean_and_standard_error(values)[1]


def test_standard_errors_of_accuracy_margin_and_win_rate_come_from_the_bootstrap_over_prompts():
    """The same pairs as above, pairs 0-1 of prompt "a" and 2-3 of prompt "b": correctness [1, 0 | 1, 0], the two
    prompts' accuracies 0.5 and 0.5, so the accuracy has no spread over prompts (se 0). Win scores [1, 1 | 0, 0]:
    prompt means 1 and 0, se -> sqrt(1/8) as in the two-prompt case."""
    from dpo_pipeline.metrics import cluster_bootstrap, implicit_reward_accuracy, win_counts

    policy_chosen = torch.tensor([-10.0, -12.0, -8.0, -5.0])
    policy_rejected = torch.tensor([-11.0, -10.5, -9.0, -5.0])
    reference = torch.tensor([-11.0, -11.0, -9.0, -6.0])
    clusters = ["a", "a", "b", "b"]
    result = implicit_reward_accuracy(policy_chosen, policy_rejected, reference, reference, beta=0.1,
                                      clusters=clusters)
    assert result["accuracy"] == 0.5 and result["accuracy_se"] == 0.0
    margin_se = cluster_bootstrap([1.0, -1.5, 1.0, 0.0], clusters)["se"]  # prompt means -0.25 and 0.5
    assert result["logratio_margin_se"] == margin_se > 0
    assert result["reward_margin_se"] == pytest.approx(0.1 * margin_se)
    wins = win_counts([0.9, 0.9, 0.1, 0.1], [0.1, 0.1, 0.9, 0.9], clusters=clusters)
    assert wins["win_rate"] == 0.5 and wins["win_rate_se"] == pytest.approx(math.sqrt(1 / 8), rel=0.1)


def test_spread_over_seeds_by_hand():
    """Rewards 0.6, 0.7, 0.8 over three seeds: mean 0.7, sd sqrt((0.01 + 0 + 0.01) / 2) = 0.1, se 0.1 / sqrt(3)."""
    from dpo_pipeline.metrics import spread_over_seeds

    assert spread_over_seeds([0.6, 0.7, 0.8]) == pytest.approx({"mean": 0.7, "sd": 0.1, "se": 0.1 / math.sqrt(3),
                                                                "n": 3})
    assert spread_over_seeds([0.6]) == {"mean": 0.6, "sd": None, "se": None, "n": 1}


def test_curve_at_interpolates_with_its_standard_error_worked_by_hand():
    """Points (0, 0.5, 0.01), (2, 0.7, 0.03), (10, 0.9, 0.04). At x = 1: w = 1/2, y = 0.6, se = sqrt(0.005^2 +
    0.015^2) = 0.015811; at x = 6: w = 1/2 between the last two, y = 0.8, se = sqrt(0.015^2 + 0.02^2) = 0.025; at a
    point, its own figures; outside [0, 10], None."""
    from dpo_pipeline.metrics import curve_at, difference_beyond_noise

    points = [(10.0, 0.9, 0.04), (0.0, 0.5, 0.01), (2.0, 0.7, 0.03)]
    assert curve_at(points, 1.0) == pytest.approx((0.6, 0.0158114), rel=1e-5)
    assert curve_at(points, 6.0) == pytest.approx((0.8, 0.025), rel=1e-9)
    assert curve_at(points, 2.0) == pytest.approx((0.7, 0.03))
    assert curve_at(points, 10.5) is None and curve_at(points, -0.1) is None
    assert difference_beyond_noise(0.05, 0.02) and not difference_beyond_noise(-0.03, 0.02)
