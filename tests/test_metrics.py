"""The reward lookup and the KL function against numbers worked out by hand."""

import math

import pytest
import torch
from torch.testing import assert_close

from sentiment_dpo.metrics import mean_and_standard_error, positive_label_index, positive_probability, sequence_kl


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
