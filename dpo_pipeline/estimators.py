"""The math of the experiment as pure functions: reward lookup, sequence-level KL, summary statistics, and the
comparison of a method with the DPO curve.

Notation (DPO paper, Rafailov et al. 2023, arXiv 2305.18290): x is a prompt, y = (y_1, ..., y_T) a completion,
pi the policy, pi_ref the reference (the SFT model). Section 6.1 measures each policy by its mean reward and by
KL(pi || pi_ref) over sampled completions, summed over the completion's tokens.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

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
    return margin_accuracy(logratio_margins, beta, clusters)


def margin_accuracy(margins: torch.Tensor, beta: float | None = None, clusters: Sequence | None = None) -> dict:
    """How well a method's implicit reward ranks held-out pairs, from its [P] margins d_p without beta (chosen minus
    rejected: DPO's log-ratio margins, `implicit_reward_accuracy`; SimPO's length-normalised log-prob margins):
    accuracy (share of d_p > 0, ties wrong), ties (share of d_p == 0), logratio_margin (mean d_p, nats), reward_margin
    (beta times it, None without a beta), and with `clusters` each one's standard error from a bootstrap over
    prompts (accuracy_se, logratio_margin_se, reward_margin_se)."""
    margins = margins.double()
    if margins.numel() == 0:
        raise ValueError("no pairs")
    mean_margin = margins.mean().item()
    result = {
        "accuracy": (margins > 0).double().mean().item(),
        "ties": (margins == 0).double().mean().item(),
        "logratio_margin": mean_margin,
        "reward_margin": None if beta is None else beta * mean_margin,
    }
    if clusters is not None:
        values = margins.tolist()
        result["accuracy_se"] = cluster_bootstrap([float(m > 0) for m in values], clusters)["se"]
        result["logratio_margin_se"] = cluster_bootstrap(values, clusters)["se"]
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


class SeedMean(NamedTuple):
    """A setting's mean KL and mean reward with their standard errors: over its training seeds (`seed_groups`), or,
    for the SFT model, which has no training seed, its reward's error over prompts and its KL exactly 0."""

    kl: float
    kl_se: float
    reward: float
    reward_se: float


# Two-sided 95% critical values of Student's t, t_{0.975}(df): the column "0.975" of the table in the
# NIST/SEMATECH e-Handbook of Statistical Methods, section 1.3.6.7.2 (scipy is not a dependency; the test checks
# each entry against the integral of the t density).
T_QUANTILE_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
                  10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110,
                  18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060,
                  26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980,
                  math.inf: 1.960}


def t_quantile_975(degrees_of_freedom: float) -> float:
    """t_{0.975}(df), the value a t-distributed statistic with df degrees of freedom exceeds with probability 2.5%
    (|t| beyond it: 5%). Between the table's entries, the entry of the next smaller df: a larger critical value,
    so a claim is never made on fewer degrees of freedom than it has. df = 2 (3 seeds): 4.303, not the normal
    1.960."""
    if degrees_of_freedom < 1:
        raise ValueError(f"a t quantile needs at least 1 degree of freedom (2 seeds), got {degrees_of_freedom}")
    return T_QUANTILE_975[max(df for df in T_QUANTILE_975 if df <= degrees_of_freedom)]


def concave_curve_bracket(kl, reward, at) -> tuple:
    """Where a concave, non-decreasing curve through the given points can lie at KL `at`: (lower, upper).

    With the points sorted by KL, (x_0, y_0) ... (x_m-1, y_m-1), x_i <= at <= x_i+1 the neighbours and
    c_j(x) = y_j + (y_j+1 - y_j) / (x_j+1 - x_j) * (x - x_j) the line through points j and j+1 (the chord j):

        lower = c_i(at)                                   the chord: a concave curve lies above it
        upper = max(lower, min(c_i-1(at), c_i+1(at), y_i+1))

    where c_i-1 (the previous chord extended forward) and c_i+1 (the next chord extended back) count where they
    exist: a concave curve lies under the extension of any other chord, and a non-decreasing one under the next
    point's reward. Where the points themselves are not concave the bound can fall under the chord; the max then
    leaves the chord alone (no curvature to go on). `at` outside the points' range uses the first or last
    segment's lines, extended (only draws of `compare_with_concave_curve` land there).

    Args:
        kl: [N, m] the KL of m >= 2 points (N curves, e.g. Monte Carlo draws); [m] for one curve.
        reward: [N, m] their rewards (same shape as kl).
        at: [N] the KL to evaluate each curve at; a number for one curve.
    Returns:
        (lower, upper), each [N] (float64 numpy arrays).
    """
    import numpy as np

    kl, reward = np.atleast_2d(np.asarray(kl, dtype=np.float64)), np.atleast_2d(np.asarray(reward, dtype=np.float64))
    at = np.broadcast_to(np.asarray(at, dtype=np.float64), kl.shape[:1])
    if kl.shape != reward.shape or kl.shape[1] < 2:
        raise ValueError(f"need the KL and reward of at least 2 points each, got shapes {kl.shape}, {reward.shape}")
    order = np.argsort(kl, axis=1)
    kl, reward = np.take_along_axis(kl, order, axis=1), np.take_along_axis(reward, order, axis=1)
    segments = kl.shape[1] - 1
    rows = np.arange(kl.shape[0])
    segment = np.clip((kl <= at[:, None]).sum(axis=1) - 1, 0, segments - 1)  # i: x_i <= at <= x_i+1
    slopes = np.diff(reward, axis=1) / np.diff(kl, axis=1)  # [N, m - 1]
    chords = reward[:, :-1] + slopes * (at[:, None] - kl[:, :-1])  # [N, m - 1]: each chord's line at `at`
    lower = chords[rows, segment]
    previous = np.where(segment >= 1, chords[rows, np.maximum(segment - 1, 0)], np.inf)
    following = np.where(segment + 1 < segments, chords[rows, np.minimum(segment + 1, segments - 1)], np.inf)
    upper = np.maximum(lower, np.minimum(np.minimum(previous, following), reward[rows, segment + 1]))
    return lower, upper


# A fixed seed and number of draws for every comparison with the DPO curve: the same inputs give the same sentence.
CURVE_DRAWS = 100_000
CURVE_SEED = 0


def compare_with_concave_curve(method: SeedMean, curve: Sequence[SeedMean], degrees_of_freedom: float,
                               draws: int = CURVE_DRAWS, seed: int = CURVE_SEED) -> dict | None:
    """A method's mean reward against a curve through other settings' means (the DPO curve) at the method's mean KL,
    with every input's error carried into the difference; None where that KL lies outside the curve's points.

    The curve is taken as concave and non-decreasing, as the best reward within a KL budget K is: a larger budget
    allows every policy a smaller one does, and a mixture of two policies gets the mixture of their rewards at no
    more than the mixture of their KLs (KL is convex). So at the method's KL the curve lies between the chord of
    the neighbouring points and an upper bound (`concave_curve_bracket`); a straight line alone would sit under a
    concave curve and favour the method. Two differences, each at the means (the draws give only their errors):

        d_lower = r - lower(k; x, y)          d_upper = r - upper(k; x, y)

    with (k, r) the method's mean KL and reward and (x, y) the curve's points. Their standard errors come from
    `draws` normal draws (numpy's default_rng(seed), so the same inputs give the same figures): k ~ N(k, se_k),
    r ~ N(r, se_r), and for each point x_j ~ N(x_j, se_x_j), y_j ~ N(y_j, se_y_j), all independent; a point with
    se 0 (the SFT model's KL) stays put. se(d) = the standard deviation of d over the draws. Where the errors are
    small against the distance to the neighbouring points this is the delta method,

        se(d_lower)^2 = se_r^2 + s^2 se_k^2 + sum_j (dc/dy_j)^2 se_y_j^2 + sum_j (dc/dx_j)^2 se_x_j^2

    with s the chord's slope: a method's KL error moves it along the curve, which a reward error alone misses. The
    statistics t = d / se(d) are compared with t_{0.975}(degrees_of_freedom) (`t_quantile_975`; the caller
    passes n - 1 for the fewest seeds n among the settings involved):

        above:  t_upper > t_crit     (clears even the highest the curve can be)
        below:  t_lower < -t_crit    (under even the lowest the curve can be)
        within: otherwise            (inside the bracket, or within the noise of it)

    Args:
        method: the setting compared.
        curve: the curve's points (the SFT model at KL 0, then each DPO setting), any order.
        degrees_of_freedom: of the seed-level standard errors.
        draws, seed: the Monte Carlo draws.
    Returns:
        lower, upper (the bracket at the means), d_lower, se_lower, t_lower, d_upper, se_upper, t_upper,
        t_crit, degrees_of_freedom, verdict ("above", "below" or "within").
    """
    import numpy as np

    if len(curve) < 2:
        raise ValueError(f"a curve needs at least 2 points, got {len(curve)}")
    if len({p.kl for p in curve}) < len(curve):
        raise ValueError(f"two points of the curve at the same KL: {sorted(p.kl for p in curve)}")
    if not min(p.kl for p in curve) <= method.kl <= max(p.kl for p in curve):
        return None
    t_crit = t_quantile_975(degrees_of_freedom)
    kl, kl_se = np.array([p.kl for p in curve]), np.array([p.kl_se for p in curve])
    reward, reward_se = np.array([p.reward for p in curve]), np.array([p.reward_se for p in curve])
    lower, upper = (float(bound[0]) for bound in concave_curve_bracket(kl, reward, method.kl))
    # One block of standard normals in a fixed layout (method KL, method reward, the points' KLs, their rewards).
    noise = np.random.default_rng(seed).standard_normal((draws, 2 + 2 * len(curve)))
    drawn_lower, drawn_upper = concave_curve_bracket(kl + kl_se * noise[:, 2:2 + len(curve)],
                                                     reward + reward_se * noise[:, 2 + len(curve):],
                                                     method.kl + method.kl_se * noise[:, 0])
    drawn_reward = method.reward + method.reward_se * noise[:, 1]
    result = {"lower": lower, "upper": upper, "t_crit": t_crit, "degrees_of_freedom": degrees_of_freedom}
    for name, bound, drawn in (("lower", lower, drawn_lower), ("upper", upper, drawn_upper)):
        difference, error = method.reward - bound, float(np.std(drawn_reward - drawn, ddof=1))
        if error > 0:
            statistic = difference / error
        else:  # nothing uncertain: any difference at all is beyond noise
            statistic = math.copysign(math.inf, difference) if difference else 0.0
        result.update({f"d_{name}": difference, f"se_{name}": error, f"t_{name}": statistic})
    result["verdict"] = ("above" if result["t_upper"] > t_crit else "below" if result["t_lower"] < -t_crit
                         else "within")
    return result


def reward_at_kl(curve: Sequence[SeedMean], kl: float, degrees_of_freedom: float, draws: int = CURVE_DRAWS,
                 seed: int = CURVE_SEED) -> dict | None:
    """A method's reward at a matched KL, read along its own curve, with every point's KL and reward error carried
    in; None where the curve's points do not reach that KL (no extrapolation).

    The curve: the method's settings' means over seeds (`SeedMean`: KL, reward and their standard errors over
    seeds), with the SFT model at KL 0 (its reward's error over prompts, its KL exact) as its first point, joined by
    straight lines in the order of their KL. At the means:

        r(K) = r_i + (r_j - r_i) (K - k_i) / (k_j - k_i)      k_i <= K <= k_j the neighbouring points

    Its standard error comes from `draws` normal draws of every point's KL and reward (numpy's default_rng(seed):
    the same inputs give the same figures), each draw's curve read at K (its points sorted again; a draw whose
    points stop short of K is read at its last point, not extended: two drawn points close in KL would make a steep
    segment that extended far). The 95% interval is r(K) ± t_{0.975}(df) se,
    df = n - 1 for the fewest seeds n of the points (`t_quantile_975`).

    Args:
        curve: the method's points, any order (the SFT point included).
        kl: the matched KL K, in nats.
        degrees_of_freedom: of the seed-level standard errors.
    Returns:
        {"reward", "se", "low", "high", "t_crit"}, or None where K lies past the largest mean KL.
    """
    import numpy as np

    points = sorted(curve, key=lambda point: point.kl)
    if len(points) < 2 or not points[0].kl <= kl <= points[-1].kl:
        return None

    def read(kls, rewards, at):
        """[N, m] curves (their points sorted), read at `at` by the segment holding it (ends extended)."""
        order = np.argsort(kls, axis=1)
        kls, rewards = np.take_along_axis(kls, order, axis=1), np.take_along_axis(rewards, order, axis=1)
        segment = np.clip((kls <= at).sum(axis=1) - 1, 0, kls.shape[1] - 2)
        rows = np.arange(kls.shape[0])
        x0, x1 = kls[rows, segment], kls[rows, segment + 1]
        y0, y1 = rewards[rows, segment], rewards[rows, segment + 1]
        width = np.where(x1 > x0, x1 - x0, 1.0)
        weight = np.clip((at - x0) / width, 0.0, 1.0)  # past either end: that end's reward
        return y0 + (y1 - y0) * weight

    kls = np.array([[point.kl for point in points]])
    rewards = np.array([[point.reward for point in points]])
    value = float(read(kls, rewards, kl)[0])
    noise = np.random.default_rng(seed).standard_normal((draws, 2 * len(points)))
    drawn = read(kls + np.array([point.kl_se for point in points]) * noise[:, :len(points)],
                 rewards + np.array([point.reward_se for point in points]) * noise[:, len(points):], kl)
    error = float(np.std(drawn, ddof=1))
    t_crit = t_quantile_975(degrees_of_freedom)
    return {"reward": value, "se": error, "low": value - t_crit * error, "high": value + t_crit * error,
            "t_crit": t_crit}


def separated(upper: dict, lower: dict) -> bool:
    """Whether two methods' rewards at one matched KL stand apart: their 95% intervals (`reward_at_kl`) do not
    overlap."""
    return upper["low"] > lower["high"]
