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
