"""Training losses that TRL does not have, as pure functions of per-token log-probabilities.

Notation as in `estimators.py` (DPO paper, Rafailov et al. 2023, arXiv 2305.18290): x a prompt, y_w the chosen and y_l
the rejected completion of a pair, p = pi_theta the policy being trained.
"""

from __future__ import annotations

import math

import torch

# The largest token probability log(1 - p) is taken at: 1 - 1e-6. Beyond it log(1 - p) would reach -inf (and its
# gradient -p / (1 - p) overflow) for a token the policy is certain of; clamped there, such a token's term is
# log(1e-6) ~ -13.8 with no gradient, as Welleck et al.'s own code clamps 1 - p at 1e-5.
MAX_UNLIKELY_PROBABILITY = 1 - 1e-6


def log1m_exp(logps: torch.Tensor, max_probability: float = MAX_UNLIKELY_PROBABILITY) -> torch.Tensor:
    """log(1 - p) from log p, stably: log(-expm1(log p)), with p clamped to at most `max_probability`.

    Computing 1 - exp(log p) directly loses every digit for p near 1 (and float32 rounds 1 - p to 0 from p > 1 - 6e-8
    on); expm1 keeps them. Any shape; float32 or wider in, same shape out.
    """
    return torch.log(-torch.expm1(logps.clamp(max=math.log(max_probability))))


def unlikelihood_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, chosen_mask: torch.Tensor,
                      rejected_mask: torch.Tensor, alpha: float) -> dict[str, torch.Tensor]:
    """The unlikelihood baseline of the DPO paper's Figure 2 (Welleck et al. 2019, arXiv 1908.04319, eq. 4 applied
    to the rejected completion's own tokens): raise the likelihood of the chosen completion, push down every token
    of the rejected one.

        L(x, y_w, y_l) = - sum_t log p(y_w,t | x, y_w,<t) - alpha * sum_t log(1 - p(y_l,t | x, y_l,<t))

    Normalisation: both terms are summed over the completion's tokens (sequence log-likelihoods, as DPO's
    log pi(y | x) is), and the loss is the mean of L over the B pairs of the batch. Prompt and padding positions are
    left out by the masks. log(1 - p) is `log1m_exp` of the token's log-probability.

    Args:
        chosen_logps, rejected_logps: [B, T] log p of each completion token given the prompt and the tokens before it
            (any value at masked positions).
        chosen_mask, rejected_mask: [B, T], 1 at the completion's tokens, 0 elsewhere.
        alpha: weight of the unlikelihood term, >= 0 (0 is Preferred-FT on the pairs' chosen completions).
    Returns:
        loss: [] the batch's mean of L;
        chosen_nll: [B] -sum_t log p(y_w,t | ...);
        rejected_unlikelihood: [B] -sum_t log(1 - p(y_l,t | ...)) (>= 0, 0 when every rejected token has p = 0);
        chosen_logps, rejected_logps: [B] the sequence log-likelihoods sum_t log p(y_t | ...).
    """
    chosen_mask, rejected_mask = chosen_mask.bool(), rejected_mask.bool()
    # Masked positions hold any value (even -inf or NaN): they are replaced before any arithmetic touches them.
    chosen_logps = chosen_logps.masked_fill(~chosen_mask, 0.0)
    rejected_logps = rejected_logps.masked_fill(~rejected_mask, 0.0)
    chosen_sequence = chosen_logps.sum(dim=-1)
    rejected_sequence = rejected_logps.sum(dim=-1)
    rejected_unlikelihood = -log1m_exp(rejected_logps).masked_fill(~rejected_mask, 0.0).sum(dim=-1)
    per_pair = -chosen_sequence + alpha * rejected_unlikelihood
    return {"loss": per_pair.mean(), "chosen_nll": -chosen_sequence, "rejected_unlikelihood": rejected_unlikelihood,
            "chosen_logps": chosen_sequence, "rejected_logps": rejected_sequence}
