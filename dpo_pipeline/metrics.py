"""The math of the experiment as pure functions: reward lookup, sequence-level KL, summary statistics.

Notation (DPO paper, Rafailov et al. 2023, arXiv 2305.18290): x is a prompt, y = (y_1, ..., y_T) a completion,
pi the policy, pi_ref the reference (the SFT model). Section 6.1 measures each policy by its mean reward and by
KL(pi || pi_ref) over sampled completions, summed over the completion's tokens.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

POSITIVE_LABEL = "POSITIVE"


def positive_label_index(id2label: Mapping[int | str, str]) -> int:
    """Index of the class named POSITIVE (case-insensitive) in a classifier's `config.id2label`.

    Looked up by name because classifiers order their labels differently (siebert/sentiment-roberta-large-english
    has 0 = NEGATIVE, 1 = POSITIVE; others put POSITIVE first). Raises `ValueError` if there is no such label.
    """
    matches = [int(index) for index, name in id2label.items() if str(name).upper() == POSITIVE_LABEL]
    if len(matches) != 1:
        names = ", ".join(str(name) for _, name in sorted(id2label.items(), key=lambda item: int(item[0])))
        raise ValueError(f"the classifier needs exactly one label named {POSITIVE_LABEL}; its labels are: {names}")
    return matches[0]


def positive_probability(logits: torch.Tensor, positive_index: int) -> torch.Tensor:
    """Reward r(x, y) = P(POSITIVE | x, y) from classifier logits.

    Args:
        logits: [B, C] classifier logits over C classes.
        positive_index: column of the POSITIVE class (see `positive_label_index`).
    Returns:
        [B] probabilities softmax(logits)[:, positive_index], computed in float32.
    """
    return torch.softmax(logits.float(), dim=-1)[:, positive_index]


def sequence_kl(
    policy_logits: torch.Tensor,
    reference_logits: torch.Tensor,
    completion_mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Sequence-level KL of each sampled completion, exact over the vocabulary.

        KL_b = sum_t m_bt * sum_v pi(v | x, y_<t) * (log pi(v | x, y_<t) - log pi_ref(v | x, y_<t))

    with pi = softmax(policy_logits / temperature) and pi_ref = softmax(reference_logits / temperature), the
    distributions the completion's tokens are sampled from. The mean of KL_b over completions y ~ pi estimates
    KL(pi(.|x) || pi_ref(.|x)) of whole sequences; unlike the one-sample estimate log pi(y) - log pi_ref(y), each
    term is non-negative and has no sampling noise of its own.

    Args:
        policy_logits: [B, T, V] policy logits at the positions that predict completion tokens 1..T.
        reference_logits: [B, T, V] reference-model logits at the same positions.
        completion_mask: [B, T] 1 where token t belongs to the completion (up to and including its EOS), else 0.
        temperature: sampling temperature applied to both models.
    Returns:
        [B] float32 tensor of per-sequence KL in nats.
    """
    policy_logprobs = torch.log_softmax(policy_logits.float() / temperature, dim=-1)
    reference_logprobs = torch.log_softmax(reference_logits.float() / temperature, dim=-1)
    per_token = (policy_logprobs.exp() * (policy_logprobs - reference_logprobs)).sum(dim=-1)
    return (per_token * completion_mask.float()).sum(dim=-1)


def mean_and_standard_error(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean, sqrt(sample variance / n); the error is 0 for fewer than 2 values."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = math.fsum(values) / n
    if n < 2:
        return mean, 0.0
    variance = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(variance / n)


def clustered_mean_and_standard_error(values: Sequence[float], clusters: Sequence) -> tuple[float, float]:
    """Mean of `values` and its standard error when the values of one cluster (the samples of one prompt) are not
    independent of each other: the cluster-robust standard error over G clusters,

        mean = (1/n) sum_i v_i
        SE   = sqrt( G/(G-1) * sum_g ( sum_{i in g} (v_i - mean) )^2 ) / n

    With m values in every cluster this is the standard error of the G cluster means, sqrt(s^2 / G) with s^2 their
    sample variance; treating the n = G m values as independent would understate it when a prompt's samples
    resemble each other. The error is 0 for fewer than 2 clusters.
    """
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    if len(clusters) != n:
        raise ValueError(f"{n} values but {len(clusters)} cluster labels")
    mean = math.fsum(values) / n
    residual_sums: dict = {}
    for value, cluster in zip(values, clusters):
        residual_sums[cluster] = residual_sums.get(cluster, 0.0) + (value - mean)
    g = len(residual_sums)
    if g < 2:
        return mean, 0.0
    return mean, math.sqrt(g / (g - 1) * math.fsum(r * r for r in residual_sums.values())) / n


def implicit_reward_accuracy(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float | None = None,
    clusters: Sequence | None = None,
) -> dict[str, float]:
    """How well a policy's implicit reward ranks held-out preference pairs (DPO paper, eq. 5).

        r(x, y) = beta * (log pi(y | x) - log pi_ref(y | x))
        d_p = r(x_p, y_w,p) - r(x_p, y_l,p)     for pair p with chosen y_w and rejected y_l

    Args:
        policy_chosen_logps, policy_rejected_logps: [P] log pi(y | x) summed over each completion's tokens.
        reference_chosen_logps, reference_rejected_logps: [P] the same under pi_ref.
        beta: the policy's beta; None for a model trained without one (Preferred-FT), which gets no reward margin.
        clusters: [P] the prompt of each pair, or None; given, each figure gets its standard error from a bootstrap
            over prompts (`cluster_bootstrap`: the pairs of one prompt share its completions' fate): accuracy_se,
            logratio_margin_se, reward_margin_se (beta * logratio_margin_se).
    Returns:
        accuracy: share of pairs with d_p > 0 (ties count as wrong, as in TRL's `rewards/accuracies`);
        ties: share with d_p == 0 (all of them for the reference model itself);
        logratio_margin: mean of d_p / beta, in nats (independent of beta, so comparable across models);
        reward_margin: mean of d_p (beta * logratio_margin), or None without a beta.
    The ranking, hence the accuracy, does not depend on beta > 0.
    """
    logratio_margins = (policy_chosen_logps.double() - reference_chosen_logps.double()) - (
        policy_rejected_logps.double() - reference_rejected_logps.double()
    )
    if logratio_margins.numel() == 0:
        raise ValueError("no pairs")
    logratio_margin = logratio_margins.mean().item()
    result = {
        "accuracy": (logratio_margins > 0).double().mean().item(),
        "ties": (logratio_margins == 0).double().mean().item(),
        "logratio_margin": logratio_margin,
        "reward_margin": None if beta is None else beta * logratio_margin,
    }
    if clusters is not None:
        margins = logratio_margins.tolist()
        result["accuracy_se"] = cluster_bootstrap([float(m > 0) for m in margins], clusters)["se"]
        result["logratio_margin_se"] = cluster_bootstrap(margins, clusters)["se"]
        result["reward_margin_se"] = None if beta is None else beta * result["logratio_margin_se"]
    return result


def win_scores(model_rewards: Sequence[float], baseline_rewards: Sequence[float],
               tie_tolerance: float = 0.0) -> list[float]:
    """Each paired sample's score for the model: 1 a win (model - baseline > tie_tolerance), 0 a loss (below
    -tie_tolerance), 0.5 a tie. Their mean is `win_counts`'s win_rate."""
    if len(model_rewards) != len(baseline_rewards):
        raise ValueError(f"{len(model_rewards)} model rewards but {len(baseline_rewards)} baseline rewards")
    return [1.0 if m - b > tie_tolerance else 0.0 if b - m > tie_tolerance else 0.5
            for m, b in zip(model_rewards, baseline_rewards)]


def win_counts(model_rewards: Sequence[float], baseline_rewards: Sequence[float],
               tie_tolerance: float = 0.0, clusters: Sequence | None = None) -> dict[str, float]:
    """Head-to-head comparison of paired samples (same prompt, same sample index) by their rewards.

    Sample i is a win when model_rewards[i] - baseline_rewards[i] > tie_tolerance, a loss when it is below
    -tie_tolerance, and a tie otherwise. win_rate = (wins + ties / 2) / n, the usual convention that a tie is half
    a win, so that a model compared with itself scores exactly 0.5. With `clusters` ([n] the prompt of each
    sample), win_rate_se is its standard error from a bootstrap over prompts (`cluster_bootstrap` of `win_scores`).
    """
    if len(model_rewards) != len(baseline_rewards):
        raise ValueError(f"{len(model_rewards)} model rewards but {len(baseline_rewards)} baseline rewards")
    if not model_rewards:
        raise ValueError("no samples to compare")
    wins = sum(1 for m, b in zip(model_rewards, baseline_rewards) if m - b > tie_tolerance)
    losses = sum(1 for m, b in zip(model_rewards, baseline_rewards) if b - m > tie_tolerance)
    ties = len(model_rewards) - wins - losses
    result = {"wins": wins, "losses": losses, "ties": ties, "win_rate": (wins + ties / 2) / len(model_rewards)}
    if clusters is not None:
        result["win_rate_se"] = cluster_bootstrap(win_scores(model_rewards, baseline_rewards, tie_tolerance),
                                                  clusters)["se"]
    return result


def best_of_n_kl(n: int) -> float:
    """The standard analytic KL(pi_BoN || pi_ref) of best-of-N sampling, in nats per sequence:

        KL_BoN(N) = log N - (N - 1) / N        (0 for N = 1, 0.636 for N = 4, 3.174 for N = 64)

    (Stiennon et al. 2020, appendix G.3); Beirami et al. 2024 show it is an upper bound on the exact KL, reached
    when the reward has no ties and the sampled sequences are all distinct."""
    if n < 1:
        raise ValueError(f"N must be at least 1, got {n}")
    return math.log(n) - (n - 1) / n


def best_of_n_expected_reward(rewards: Sequence[float], n: int) -> float:
    """Unbiased estimate, from M >= N samples of one prompt, of E[max reward of N samples] (best-of-N's reward).

    With r_(1) <= ... <= r_(M) the sorted rewards, the best of a uniformly random N-subset is r_(i) with
    probability C(i - 1, N - 1) / C(M, N), so

        E_hat = sum_{i=N}^{M} C(i - 1, N - 1) / C(M, N) * r_(i)

    which averages over all C(M, N) subsets instead of using one (less variance than disjoint groups).
    """
    m = len(rewards)
    if not 1 <= n <= m:
        raise ValueError(f"best-of-{n} needs at least {n} samples, got {m}")
    ordered = sorted(rewards)
    total = math.comb(m, n)
    return math.fsum(math.comb(i - 1, n - 1) * ordered[i - 1] for i in range(n, m + 1)) / total


# A fixed seed and count for every bootstrap of the report: the same stored values give the same error bars.
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


def cluster_bootstrap(values: Sequence[float], clusters: Sequence, resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = BOOTSTRAP_SEED) -> dict[str, float]:
    """Mean of `values` with a standard error and a 95% interval from a bootstrap over clusters (prompts).

    With the G distinct clusters g holding S_g = sum of their values and n_g values, each of `resamples` draws
    picks G clusters uniformly with replacement, g_1 .. g_G, and takes

        mean* = sum_k S_{g_k} / sum_k n_{g_k}

    se = the sample standard deviation of mean* over the draws; low, high = its 2.5th and 97.5th percentiles (the
    percentile interval). The values of one prompt (its samples, its pairs) move together, so the error is that of
    the prompts, not of values treated as independent. With equal cluster sizes se approaches the analytic
    clustered standard error (`clustered_mean_and_standard_error`) times sqrt((G - 1) / G): the bootstrap draws
    from the G clusters' own spread, without the G / (G - 1) correction. A paired comparison of two models on the
    same items is this function on their per-item differences (the interval excludes 0 when the difference is
    beyond noise). Fewer than 2 clusters: se 0 and low = high = mean.

    Args:
        values: [n] per-item values (a 0/1 correctness, a 0 / 0.5 / 1 win score, a margin).
        clusters: [n] the cluster (prompt) of each value; any hashable labels.
    Returns:
        {"mean", "se", "low", "high"}.
    """
    import numpy as np

    n = len(values)
    if n == 0:
        raise ValueError("no values")
    if len(clusters) != n:
        raise ValueError(f"{n} values but {len(clusters)} cluster labels")
    index = {cluster: i for i, cluster in enumerate(dict.fromkeys(clusters))}
    sums, counts = np.zeros(len(index)), np.zeros(len(index))
    for value, cluster in zip(values, clusters):
        sums[index[cluster]] += value
        counts[index[cluster]] += 1
    mean = math.fsum(values) / n
    if len(index) < 2:
        return {"mean": mean, "se": 0.0, "low": mean, "high": mean}
    draws = np.random.default_rng(seed).integers(0, len(index), size=(resamples, len(index)))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": mean, "se": float(means.std(ddof=1)), "low": float(low), "high": float(high)}


def spread_over_seeds(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation (n - 1) and standard error sd / sqrt(n) of one figure over n training seeds;
    sd and se are None for a single seed (one run says nothing of the spread)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = math.fsum(values) / n
    if n < 2:
        return {"mean": mean, "sd": None, "se": None, "n": 1}
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return {"mean": mean, "sd": sd, "se": sd / math.sqrt(n), "n": n}


def curve_at(points: Sequence[tuple[float, float, float]], x: float) -> tuple[float, float] | None:
    """A curve's value at `x` by linear interpolation between its two neighbouring points, with the standard error
    that carries over from theirs (their errors taken as independent; the x of each point as exact):

        points (x_i, y_i, se_i) sorted by x;  x_i <= x <= x_j the neighbours,  w = (x - x_i) / (x_j - x_i)
        y(x)  = (1 - w) y_i + w y_j
        se(x) = sqrt((1 - w)^2 se_i^2 + w^2 se_j^2)

    At a point's own x, its value and error. None where x lies outside the points' range (no extrapolation)."""
    points = sorted(points)
    if not points or x < points[0][0] or x > points[-1][0]:
        return None
    for (x_i, y_i, se_i), (x_j, y_j, se_j) in zip(points, points[1:]):
        if x_i <= x <= x_j:
            w = 0.0 if x_j == x_i else (x - x_i) / (x_j - x_i)
            return (1 - w) * y_i + w * y_j, math.sqrt(((1 - w) * se_i) ** 2 + (w * se_j) ** 2)
    return points[0][1], points[0][2]  # a single point at exactly x


def difference_beyond_noise(difference: float, standard_error: float, z: float = 2.0) -> bool:
    """Whether a difference of two independent estimates stands out of their noise: |d| > z * se(d)."""
    return abs(difference) > z * standard_error
