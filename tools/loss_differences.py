"""Where TRL 1.16's preference losses differ from the DPO reference code (eric-mitchell/direct-preference-optimization,
`trainers.preference_loss`), measured on one fixed batch; docs/experiment.md quotes what this prints:

    python -m tools.loss_differences

A seeded 1-layer GPT-2 (the policy) and another (the reference) on 4 fixed pairs of token ids with completions of
different lengths. TRL's loss comes from TRL's own `DPOTrainer.compute_loss` on that batch; the reference code's
losses are written out from its source, on the summed log-probabilities it uses (`average_log_prob=False`):

    h = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))        (sums over each completion)
    IPO, the reference:        mean_p (h_p - 1 / (2 tau))^2
    IPO, averaged per token:   the same with each log-ratio divided by its completion's length (TRL's IPO)
    cDPO, the reference:       -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)
    TRL's "robust" (Chowdhury et al. 2024): (-(1 - eps) log sigmoid(beta h) + eps log sigmoid(-beta h)) / (1 - 2 eps)

and TRL's robust loss value on the batch is checked against the last line, so that its gradient with respect to h
(by autograd, on the first pair) is TRL's.
"""

from __future__ import annotations

import json
import tempfile

import torch
import torch.nn.functional as F

TAU = BETA = 0.1
EPSILON = 0.1
# prompt, chosen, rejected token ids: completions of 3 to 9 tokens, so that averaging per token changes the loss
PAIRS = [([5, 6, 7], [10, 11, 12, 13, 14, 15], [20, 21, 22]),
         ([8, 9], [30, 31, 32], [33, 34, 35, 36, 37, 38, 39, 40, 41]),
         ([5, 9, 6, 7], [42, 43, 44, 45], [46, 47, 48, 49, 50]),
         ([6], [51, 52, 53, 54, 55, 56, 57], [58, 59])]


def tiny_models():
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=1, n_head=2, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    policy = GPT2LMHeadModel(config)
    torch.manual_seed(1)
    reference = GPT2LMHeadModel(config)
    return policy, reference


def tiny_tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3, **{f"t{i}": i for i in range(4, 64)}}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="<unk>")),
                                   pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>")


def trl_loss(loss_type: str, policy, reference, label_smoothing: float = 0.0) -> float:
    """TRL's DPOTrainer.compute_loss on the 4 pairs as one batch (no training step)."""
    from datasets import Dataset
    from trl import DPOConfig

    from dpo_pipeline.trainers import DPOTrainer

    dataset = Dataset.from_dict({"prompt_ids": [p for p, _, _ in PAIRS], "chosen_ids": [c for _, c, _ in PAIRS],
                                 "rejected_ids": [r for _, _, r in PAIRS]})
    with tempfile.TemporaryDirectory() as out:
        args = DPOConfig(output_dir=out, loss_type=[loss_type], beta=BETA, label_smoothing=label_smoothing,
                         per_device_train_batch_size=len(PAIRS), report_to="none", use_cpu=True,
                         activation_checkpointing=False, max_length=None)
        trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=dataset,
                             processing_class=tiny_tokenizer())
        batch = trainer.data_collator([dataset[i] for i in range(len(PAIRS))])
        with torch.no_grad():
            return trainer.compute_loss(trainer.model, batch).item()


def log_ratios(policy, reference) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """[P] summed log-ratios of chosen and rejected, and [P] their completions' lengths."""
    from dpo_pipeline.generation import completion_logps

    prompts = [p for p, _, _ in PAIRS]
    with torch.no_grad():
        ratios = [completion_logps(policy, prompts, completions, 0, len(PAIRS)).double()
                  - completion_logps(reference, prompts, completions, 0, len(PAIRS)).double()
                  for completions in ([c for _, c, _ in PAIRS], [r for _, _, r in PAIRS])]
    lengths = [torch.tensor([len(c) for _, c, _ in PAIRS], dtype=torch.float64),
               torch.tensor([len(r) for _, _, r in PAIRS], dtype=torch.float64)]
    return ratios[0], ratios[1], lengths[0], lengths[1]


def reference_ipo(h: torch.Tensor, tau: float) -> torch.Tensor:
    return ((h - 1 / (2 * tau)) ** 2).mean()


def cdpo(h: torch.Tensor, beta: float, eps: float) -> torch.Tensor:
    return (-(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)).mean()


def trl_robust(h: torch.Tensor, beta: float, eps: float) -> torch.Tensor:
    return ((-(1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)).mean()


def gradient(loss, h0: float) -> float:
    h = torch.tensor(h0, dtype=torch.float64, requires_grad=True)
    loss(h).backward()
    return h.grad.item()


def measure() -> dict[str, float]:
    policy, reference = tiny_models()
    chosen, rejected, chosen_len, rejected_len = log_ratios(policy, reference)
    h = chosen - rejected
    h_averaged = chosen / chosen_len - rejected / rejected_len
    h0 = h[0].item()
    return {
        "ipo_trl": trl_loss("ipo", policy, reference),
        "ipo_reference_summed": reference_ipo(h, TAU).item(),
        "ipo_reference_averaged": reference_ipo(h_averaged, TAU).item(),
        "robust_trl": trl_loss("robust", policy, reference, EPSILON),
        "robust_transcribed": trl_robust(h, BETA, EPSILON).item(),
        "pair_0_h": h0,
        "robust_gradient": gradient(lambda x: trl_robust(x, BETA, EPSILON), h0),
        "cdpo_gradient": gradient(lambda x: cdpo(x, BETA, EPSILON), h0),
    }


def formatted(figures: dict[str, float]) -> str:
    """The figures as docs/experiment.md quotes them, to 4 decimals (tests/test_loss_differences.py checks the quoted
    figures against a new measurement, within that rounding and the float32 noise of another CPU)."""
    return json.dumps({key: round(value, 4) for key, value in figures.items()}, indent=1)


def main() -> None:
    print(formatted(measure()))


if __name__ == "__main__":
    main()
