"""The math against numbers worked out by hand: reward lookup, sequence KL, implicit-reward accuracy and margins,
win counts with ties, best-of-N KL and expected reward, t quantiles, and the comparison with the DPO curve."""

import math

import pytest
import torch
from torch.testing import assert_close

from dpo_pipeline.estimators import (
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
    from dpo_pipeline.estimators import implicit_reward_accuracy

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
    from dpo_pipeline.estimators import implicit_reward_accuracy

    logps = torch.tensor([-3.0, -7.0])
    result = implicit_reward_accuracy(logps, logps.flip(0), logps, logps.flip(0), beta=1.0)
    assert result == {"accuracy": 0.0, "ties": 1.0, "logratio_margin": 0.0, "reward_margin": 0.0}


def test_win_counts_with_ties_worked_by_hand():
    from dpo_pipeline.estimators import win_counts

    model, baseline = [0.9, 0.5, 0.2, 0.7], [0.8, 0.5, 0.3, 0.7]
    assert win_counts(model, baseline) == {"wins": 1, "losses": 1, "ties": 2, "win_rate": 0.5}
    assert win_counts([0.9, 0.9, 0.1], [0.1, 0.1, 0.1]) == {"wins": 2, "losses": 0, "ties": 1,
                                                           "win_rate": pytest.approx(2.5 / 3)}
    # within the tolerance both close calls become ties
    assert win_counts(model, baseline, tie_tolerance=0.15)["ties"] == 4
    with pytest.raises(ValueError):
        win_counts([0.1], [0.1, 0.2])


def test_best_of_n_kl_is_the_analytic_value():
    from dpo_pipeline.estimators import best_of_n_kl

    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(4) == pytest.approx(1.3862944 - 0.75)  # log 4 - 3/4
    assert best_of_n_kl(64) == pytest.approx(4.1588831 - 0.984375)
    with pytest.raises(ValueError):
        best_of_n_kl(0)


def test_best_of_n_expected_reward_worked_by_hand_and_by_enumeration():
    import itertools
    import random

    from dpo_pipeline.estimators import best_of_n_expected_reward

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
    from dpo_pipeline.estimators import cluster_bootstrap

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

    from dpo_pipeline.estimators import cluster_bootstrap

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
    from dpo_pipeline.estimators import cluster_bootstrap, implicit_reward_accuracy, win_counts

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
    from dpo_pipeline.estimators import spread_over_seeds

    assert spread_over_seeds([0.6, 0.7, 0.8]) == pytest.approx({"mean": 0.7, "sd": 0.1, "se": 0.1 / math.sqrt(3),
                                                                "n": 3})
    assert spread_over_seeds([0.6]) == {"mean": 0.6, "sd": None, "se": None, "n": 1}


def test_t_quantile_for_3_seeds_is_4_30_not_2_worked_by_hand():
    """With 2 degrees of freedom (3 seeds) the t distribution's CDF is F(t) = 1/2 + t / (2 sqrt(2 + t^2)); F(t) =
    0.975 gives t / sqrt(2 + t^2) = 0.95, t^2 = 2 * 0.9025 / 0.0975 = 18.513, t = 4.3027. With 1 (Cauchy):
    tan(0.475 pi) = 12.7062. Between the table's entries the next smaller df's (35 -> 30's 2.042, conservative);
    one seed (0 df) has no error estimate."""
    from dpo_pipeline.estimators import t_quantile_975

    assert t_quantile_975(2) == pytest.approx(math.sqrt(2 * 0.95**2 / (1 - 0.95**2)), abs=5e-4)  # table: 3 decimals
    assert t_quantile_975(1) == pytest.approx(math.tan(0.475 * math.pi), abs=5e-4)
    assert t_quantile_975(35) == t_quantile_975(30) == 2.042
    assert t_quantile_975(math.inf) == 1.960
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_t_quantile_table_matches_the_t_density():
    """Each entry q of the table has integral_0^q f(t) dt = 0.475 (half of the middle 95%), with the t density
    f(t) = Gamma((df + 1)/2) / (sqrt(df pi) Gamma(df/2)) (1 + t^2/df)^(-(df + 1)/2), and for df = inf the normal
    density. The table's 3 decimals move the integral by at most f(q) * 0.0005 < 3e-5 (f(1.96) = 0.058), the
    trapezoid rule on 200,001 points by far less: tolerance 1e-4."""
    import numpy as np

    from dpo_pipeline.estimators import T_QUANTILE_975

    for df, q in T_QUANTILE_975.items():
        t = np.linspace(0.0, q, 200_001)
        if math.isinf(df):
            density = np.exp(-t**2 / 2) / math.sqrt(2 * math.pi)
        else:
            scale = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
            density = scale * (1 + t**2 / df) ** (-(df + 1) / 2)
        assert float(np.trapezoid(density, t)) == pytest.approx(0.475, abs=1e-4), df


def test_concave_curve_bracket_worked_by_hand():
    """Points of sqrt: (0, 0), (1, 1), (4, 2), (9, 3). At x = 2 (between 1 and 4): the chord 1 + (2 - 1)/3 = 1.3333;
    the previous chord (slope 1) extended forward 2, the next (slope 1/5) extended back 2 - 2/5 = 1.6, the next
    point's reward 2: upper 1.6; sqrt(2) = 1.414 lies between. At every x in [0, 9] sqrt lies in its bracket.
    Points (0, 0.5), (2, 0.7), (10, 0.9) at x = 6: the chord 0.8, the previous chord extended 0.5 + 0.1 * 6 = 1.1,
    no next chord, the next point 0.9: upper 0.9 (the curve does not decrease). Not concave, (0, 0), (1, 0.2),
    (2, 1) at 1.5: the chord 0.6, the previous chord extended 0.3 under it: upper = the chord. Unsorted points are
    sorted first."""
    import numpy as np

    from dpo_pipeline.estimators import concave_curve_bracket

    lower, upper = concave_curve_bracket([0.0, 1.0, 4.0, 9.0], [0.0, 1.0, 2.0, 3.0], 2.0)
    assert (lower[0], upper[0]) == pytest.approx((4 / 3, 1.6), abs=1e-12)
    x = np.linspace(0.0, 9.0, 91)
    lower, upper = concave_curve_bracket(np.tile([0.0, 1.0, 4.0, 9.0], (91, 1)), np.tile([0.0, 1.0, 2.0, 3.0], (91, 1)),
                                         x)
    assert np.all(lower <= np.sqrt(x) + 1e-12) and np.all(np.sqrt(x) <= upper + 1e-12)
    assert [b[0] for b in concave_curve_bracket([10.0, 0.0, 2.0], [0.9, 0.5, 0.7], 6.0)] == pytest.approx([0.8, 0.9])
    assert [b[0] for b in concave_curve_bracket([0.0, 1.0, 2.0], [0.0, 0.2, 1.0], 1.5)] == pytest.approx([0.6, 0.6])


# The Monte Carlo standard errors (100,000 draws) against the hand-worked ones: 1/sqrt(2 * 100,000) = 0.2% relative
# sampling noise, and the second-order terms the delta method drops (a product of errors, 1/x of a point's KL) under
# 1%; a 2% tolerance.
MONTE_CARLO = 0.02


def test_with_exact_kls_the_difference_from_the_chord_has_the_interpolation_error_worked_by_hand():
    """SFT (0, 0.5 ± 0.01), DPO (2, 0.7 ± 0.03) and (10, 0.9 ± 0.04), every KL exact; a method at KL 1 with reward
    0.7 ± 0.01. The chord at w = 1/2: 0.6, error sqrt(0.01^2 + (0.5 * 0.01)^2 + (0.5 * 0.03)^2) = sqrt(3.5e-4) =
    0.018708 (the reward errors alone: the straight-line interpolation's formula); t = 0.1 / 0.018708 = 5.35 > 4.303.
    The upper bound: the next chord (slope 0.025) extended back, 0.7 - 0.025 = 0.675 = 9/8 y_1 - 1/8 y_2, error
    sqrt(0.01^2 + (9/8 * 0.03)^2 + (1/8 * 0.04)^2) = 0.035554; t = 0.025 / 0.035554 = 0.70. Over the chord but not
    clear of the upper bound: a straight line alone would have called it above the curve; within. Reward 0.85:
    t_upper = 0.175 / 0.035554 = 4.92, above; reward 0.5: t_lower = -0.1 / 0.018708 = -5.35, below."""
    from dpo_pipeline.estimators import SeedMean, compare_with_concave_curve

    curve = [SeedMean(0.0, 0.0, 0.5, 0.01), SeedMean(2.0, 0.0, 0.7, 0.03), SeedMean(10.0, 0.0, 0.9, 0.04)]
    found = compare_with_concave_curve(SeedMean(1.0, 0.0, 0.7, 0.01), curve, degrees_of_freedom=2)
    assert (found["lower"], found["upper"], found["t_crit"]) == pytest.approx((0.6, 0.675, 4.303), abs=1e-12)
    assert (found["d_lower"], found["d_upper"]) == pytest.approx((0.1, 0.025), abs=1e-12)
    assert (found["se_lower"], found["se_upper"]) == pytest.approx((0.018708, 0.035554), rel=MONTE_CARLO)
    assert (found["t_lower"], found["t_upper"]) == pytest.approx((5.35, 0.70), rel=MONTE_CARLO)
    assert found["verdict"] == "within"
    assert compare_with_concave_curve(SeedMean(1.0, 0.0, 0.85, 0.01), curve, 2)["verdict"] == "above"
    assert compare_with_concave_curve(SeedMean(1.0, 0.0, 0.5, 0.01), curve, 2)["verdict"] == "below"


def test_the_methods_kl_error_moves_it_along_the_curve_worked_by_hand():
    """DPO points on the line 0.5 + 0.05 x, all exact: (0, 0.5), (4, 0.7), (8, 0.9); the bracket is the line itself.
    A method at KL 4 with reward 0.72 ± 0.004: +0.02 ± 0.004, t = 5 > 4.303, above. The same with its KL ± 0.4:
    error sqrt(0.004^2 + (0.05 * 0.4)^2) = sqrt(1.6e-5 + 4e-4) = 0.020396, t = 0.98: within."""
    from dpo_pipeline.estimators import SeedMean, compare_with_concave_curve

    curve = [SeedMean(0.0, 0.0, 0.5, 0.0), SeedMean(4.0, 0.0, 0.7, 0.0), SeedMean(8.0, 0.0, 0.9, 0.0)]
    exact = compare_with_concave_curve(SeedMean(4.0, 0.0, 0.72, 0.004), curve, degrees_of_freedom=2)
    assert exact["se_upper"] == pytest.approx(0.004, rel=MONTE_CARLO) and exact["verdict"] == "above"
    moved = compare_with_concave_curve(SeedMean(4.0, 0.4, 0.72, 0.004), curve, degrees_of_freedom=2)
    assert (moved["lower"], moved["upper"]) == pytest.approx((0.7, 0.7), abs=1e-12)
    assert (moved["se_lower"], moved["se_upper"]) == pytest.approx((0.020396, 0.020396), rel=MONTE_CARLO)
    assert moved["t_upper"] == pytest.approx(0.98, rel=MONTE_CARLO) and moved["verdict"] == "within"


def test_a_dpo_points_kl_error_carries_into_both_bounds_worked_by_hand():
    """SFT (0, 0.5), DPO (4 ± 0.2, 0.7) and (8, 0.8), rewards exact; a method exactly at (2, 0.6). The chord
    0.5 + 0.2 * 2 / x_1 moves by -0.4 / x_1^2 = -0.025 per nat of x_1: error 0.025 * 0.2 = 0.005. The upper bound,
    the next chord extended back, 0.7 + 0.1 (2 - x_1) / (8 - x_1) = 0.65, moves by 0.1 * (-6) / 16 = -0.0375 per
    nat: error 0.0375 * 0.2 = 0.0075; t_upper = -0.05 / 0.0075 = -6.67: under the upper bound, on the chord."""
    from dpo_pipeline.estimators import SeedMean, compare_with_concave_curve

    curve = [SeedMean(0.0, 0.0, 0.5, 0.0), SeedMean(4.0, 0.2, 0.7, 0.0), SeedMean(8.0, 0.0, 0.8, 0.0)]
    found = compare_with_concave_curve(SeedMean(2.0, 0.0, 0.6, 0.0), curve, degrees_of_freedom=2)
    assert (found["lower"], found["upper"]) == pytest.approx((0.6, 0.65), abs=1e-12)
    assert (found["se_lower"], found["se_upper"]) == pytest.approx((0.005, 0.0075), rel=MONTE_CARLO)
    assert found["t_lower"] == pytest.approx(0.0, abs=1e-9) and found["verdict"] == "within"


def test_a_t_of_2_14_with_3_seeds_is_within_noise_worked_by_hand():
    """The README's case: +0.015 ± 0.007, t = 2.14. On the exact line of the test above, a method at KL 4 with reward
    0.715 ± 0.007: with 2 degrees of freedom (3 seeds) the critical value is 4.303: within; with the normal's 1.96
    (infinitely many seeds) it would be above. Same inputs, same draws: the same figures, to the last bit (the
    point: the same study gives the same sentence). Outside the curve's points, no comparison."""
    from dpo_pipeline.estimators import SeedMean, compare_with_concave_curve

    curve = [SeedMean(0.0, 0.0, 0.5, 0.0), SeedMean(4.0, 0.0, 0.7, 0.0), SeedMean(8.0, 0.0, 0.9, 0.0)]
    method = SeedMean(4.0, 0.0, 0.715, 0.007)
    found = compare_with_concave_curve(method, curve, degrees_of_freedom=2)
    assert found["t_upper"] == pytest.approx(0.015 / 0.007, rel=MONTE_CARLO) and found["verdict"] == "within"
    assert compare_with_concave_curve(method, curve, degrees_of_freedom=math.inf)["verdict"] == "above"
    assert compare_with_concave_curve(method, curve, degrees_of_freedom=2) == found
    assert compare_with_concave_curve(SeedMean(8.5, 0.0, 0.9, 0.01), curve, degrees_of_freedom=2) is None


def test_reward_at_kl_worked_by_hand():
    """SFT (0, 0.5), points (2, 0.7) and (10, 0.9), all errors 0: at K = 5 the segment from 2 to 10,
    0.7 + 0.2 x 3/8 = 0.775; at K = 1, 0.5 + 0.2 / 2 = 0.6; past 10, none. With a reward error of 0.03 on the point at
    2 alone and K = 2 exactly, se = 0.03 (the draws move that point's reward only): interval 0.7 ± 4.303 x 0.03 with
    2 df."""
    from dpo_pipeline.estimators import SeedMean, reward_at_kl, separated

    curve = [SeedMean(0.0, 0.0, 0.5, 0.0), SeedMean(10.0, 0.0, 0.9, 0.0), SeedMean(2.0, 0.0, 0.7, 0.0)]
    assert reward_at_kl(curve, 5.0, 2)["reward"] == pytest.approx(0.775)
    assert reward_at_kl(curve, 1.0, 2)["reward"] == pytest.approx(0.6)
    assert reward_at_kl(curve, 5.0, 2)["se"] == pytest.approx(0.0, abs=1e-12)
    assert reward_at_kl(curve, 10.5, 2) is None
    noisy = [SeedMean(0.0, 0.0, 0.5, 0.0), SeedMean(2.0, 0.0, 0.7, 0.03), SeedMean(10.0, 0.0, 0.9, 0.0)]
    at_two = reward_at_kl(noisy, 2.0, 2)
    assert at_two["se"] == pytest.approx(0.03, rel=0.02)
    assert (at_two["low"], at_two["high"]) == pytest.approx((0.7 - 4.303 * 0.03, 0.7 + 4.303 * 0.03), rel=0.02)
    # a KL error moves the point along the curve: at K = 5, with the point at 2 drawn with KL sd 1, the reading moves
    # with the slope on either side (0.1 per nat below, 0.025 above): an error above 0 where the exact KL gave 0
    assert reward_at_kl([SeedMean(0.0, 0.0, 0.5, 0.0), SeedMean(2.0, 1.0, 0.7, 0.0), SeedMean(10.0, 0.0, 0.9, 0.0)],
                        5.0, 2)["se"] > 0.005
    assert separated({"low": 0.8, "high": 0.9}, {"low": 0.6, "high": 0.79})
    assert not separated({"low": 0.78, "high": 0.9}, {"low": 0.6, "high": 0.79})
