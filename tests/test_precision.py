"""Measurement precision at GPT-2 Large's logit magnitudes: logits, log-probabilities, KL and rewards come
from float32 logits whatever precision the weights are sampled in.

The models here are small GPT-2s whose logits lie around -65 (as GPT-2 Large's do, -60 to -70): the final layer
norm adds a large bias along one direction and every output embedding points against it. At that magnitude
bfloat16 values are 0.25 to 0.5 apart.
"""

import copy

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from dpo_pipeline.generation import completion_logits, completion_logps, iter_samples
from dpo_pipeline.estimators import sequence_kl
from dpo_pipeline.models import Float32Head, with_float32_head

VOCAB, WIDTH = 1000, 64


def large_logit_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=128, n_embd=WIDTH, n_layer=2, n_head=4,
                                       bos_token_id=0, eos_token_id=0)).eval()
    generator = torch.Generator().manual_seed(seed)
    direction = torch.randn(WIDTH, generator=generator)
    direction /= direction.norm()
    with torch.no_grad():
        model.transformer.ln_f.bias.copy_(36 * direction)
        model.lm_head.weight.copy_(-2.2 * direction + 0.1 * torch.randn(VOCAB, WIDTH, generator=generator))
    return model


def nudged(model: GPT2LMHeadModel, scale: float, seed: int = 1) -> GPT2LMHeadModel:
    """A copy with every matrix moved by `scale` of its spread, as a DPO run moves its reference."""
    other = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in other.parameters():
            if parameter.dim() == 2:
                parameter.add_(scale * parameter.std() * torch.randn(parameter.shape, generator=generator))
    return other


def in_bfloat16(model, float32_head: bool):
    model = copy.deepcopy(model)
    return with_float32_head(model, torch.bfloat16) if float32_head else model.to(torch.bfloat16)


PROMPTS = [[1 + i, 50 + i, 300 + i] for i in range(16)]


@pytest.fixture(scope="module")
def sampled():
    """Policy, reference, and 32 sampled completions of 64 tokens (EOS made impossible) from the float32 policy."""
    reference = large_logit_gpt2()
    with torch.no_grad():
        reference.lm_head.weight[0] = -10 * reference.lm_head.weight[0].abs()  # no EOS: every sample is 64 tokens
    policy = nudged(reference, 0.005)
    batch = next(iter_samples(policy, PROMPTS, 2, 64, 1.0, 32, seed=0, pad_token_id=0, eos_token_id=0))
    return policy, reference, batch


def test_the_logits_are_of_gpt2_large_magnitude(sampled):
    policy, _, batch = sampled
    logits = completion_logits(policy, batch)[..., 1:]  # EOS (id 0) is made impossible
    assert -85 < logits.min() and logits.max() < -45 and -70 < logits.mean() < -60


def test_the_float32_head_keeps_the_checkpoint_weights_and_computes_in_float32(sampled):
    """The body in bfloat16, the head exactly the float32 layer of the checkpoint: the logits equal the float32
    head applied to the bfloat16 body's hidden states. A model cast to bfloat16 whole rounds them by up to 0.25."""
    policy, _, batch = sampled
    ours = in_bfloat16(policy, float32_head=True)
    assert isinstance(ours.lm_head, Float32Head) and ours.transformer.h[0].attn.c_attn.weight.dtype == torch.bfloat16
    assert torch.equal(ours.lm_head.head.weight, policy.lm_head.weight)  # not rounded, and no longer tied
    ours.to("cpu", torch.bfloat16)  # moving (or casting) the model again leaves the head as it is
    assert ours.lm_head.head.weight.dtype == torch.float32
    with torch.no_grad():
        hidden = ours.transformer(input_ids=batch.sequences).last_hidden_state
        expected = torch.nn.functional.linear(hidden.float(), policy.lm_head.weight)
        logits = ours(input_ids=batch.sequences).logits
        rounded = in_bfloat16(policy, float32_head=False)(input_ids=batch.sequences).logits
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    assert (rounded.float() - expected).abs().max() > 0.1


def test_what_bfloat16_weights_cost_with_and_without_a_float32_head(sampled):
    """Measured here (a policy 0.5 % of a weight's spread away from its reference, as after DPO; 32 samples of 64
    tokens), against float32 weights:

                                        mean sequence KL (0.058 nats)    log pi(y), max error
        bfloat16 + float32 head         off by 0.001 (2 %)               0.08 nats
        bfloat16 everything (old)       off by 0.19 (3x the KL)          0.87 nats

    This test holds them to: the float32 head within 5 % of the KL and 0.2 nats of log pi(y); bfloat16 logits off by
    more than twice the KL and 0.5 nats. With the float32 head, bfloat16 weights are harmless for the frontier's KL,
    but 0.1 nats of log-probability is as large as the held-out implicit-reward margins of a policy this close to its
    reference, so eval.py measures KL, log-probabilities and rewards with float32 weights by default (measure_dtype)
    and only samples with `dtype`."""
    policy, reference, batch = sampled
    prompt_ids = [PROMPTS[i // 2] for i in range(len(batch.item_indices))]

    def measure(p, r):
        kl = sequence_kl(completion_logits(p, batch), completion_logits(r, batch), batch.completion_mask).mean().item()
        return kl, completion_logps(p, prompt_ids, batch.completion_token_ids(), pad_token_id=0, batch_size=8)

    exact_kl, exact_logps = measure(policy, reference)
    head_kl, head_logps = measure(in_bfloat16(policy, True), in_bfloat16(reference, True))
    rounded_kl, rounded_logps = measure(in_bfloat16(policy, False), in_bfloat16(reference, False))
    assert 0.02 < exact_kl < 0.1
    assert abs(head_kl - exact_kl) < 0.05 * exact_kl and (head_logps - exact_logps).abs().max() < 0.2
    assert abs(rounded_kl - exact_kl) > 2 * exact_kl and (rounded_logps - exact_logps).abs().max() > 0.5


def test_eval_measures_in_float32_whatever_it_samples_in(sampled):
    """evaluate_policy with the policy sampled in bfloat16 and measured in float32 (eval.py's default at full scale):
    every sample's KL equals the float32 models' exact KL of that sample, recomputed one unpadded sequence at a time
    with torch.distributions."""
    from types import SimpleNamespace

    from dpo_pipeline.data import Prompt
    from dpo_pipeline.measure import Policy, evaluate_policy

    policy, reference, _ = sampled
    prompts = [Prompt(i, i, 0, f"prompt {i}", 3, tuple(ids)) for i, ids in enumerate(PROMPTS[:6])]
    tokenizer = SimpleNamespace(pad_token_id=0, eos_token_id=0, decode=lambda ids, **_: " ".join(map(str, ids)))
    classifier = SimpleNamespace(score=lambda texts, desc=None: [0.5] * len(texts))
    args = SimpleNamespace(samples_per_prompt=2, max_new_tokens=16, temperature=1.0, generation_batch_size=12, seed=0,
                           cache_implementation="dynamic", kl_batch_size=5, score_prompt=True)
    summary, samples = evaluate_policy(Policy(in_bfloat16(policy, True), policy), Policy(reference, reference),
                                       tokenizer, classifier, prompts, args, is_reference=False)
    assert len(samples) == 12 and summary["kl"] > 0
    for sample in samples:
        ids = torch.tensor([sample["prompt_token_ids"] + sample["completion_token_ids"]])
        width = len(sample["prompt_token_ids"])
        with torch.no_grad():
            p = torch.distributions.Categorical(logits=policy(ids).logits[0, width - 1 : -1].double())
            r = torch.distributions.Categorical(logits=reference(ids).logits[0, width - 1 : -1].double())
        assert sample["kl"] == pytest.approx(torch.distributions.kl_divergence(p, r).sum().item(), abs=1e-4)


def float64_head_logps(model, input_ids, attention_mask, position_ids=None):
    """[B, L - 1] log-probabilities of each next token: the model's body as it runs (under the caller's autocast),
    its head's weights applied in float64. What a float32 head should give, to float32 rounding."""
    hidden = model.transformer(input_ids=input_ids, attention_mask=attention_mask,
                               position_ids=position_ids).last_hidden_state
    logits = hidden.double() @ model.lm_head.weight.double().T
    return logits[:, :-1].log_softmax(-1).gather(-1, input_ids[:, 1:, None])[..., 0]


@pytest.mark.parametrize("weights", [torch.float32, torch.bfloat16])
def test_dpo_training_log_probs_are_float32_under_bf16_autocast(weights, tmp_path):
    """DPO under bf16 autocast (`bf16=True`, as every gpt2-large and paper config trains) with the reference
    log-probs precomputed, on this GPT-2 with GPT-2 Large's logit magnitudes (at -65 bfloat16 values are 0.25 to 0.5
    apart; a randomly initialised GPT-2's logits lie near 0, where bfloat16 rounding would hide). Per pair, at step 0
    (the policy is the reference): the per-token log-probs TRL's loss computes equal the float64 head's on the same
    hidden states to 1e-5 relative, the precomputed reference log-probs are their sums, and the margin
    (chosen log-ratio minus rejected log-ratio) is 0 to 1e-6: both passes compute the same float32 numbers on the CPU.
    Also with the weights in bfloat16 (a model loaded so): the head is read as it is, still tied to the embeddings.

    Measured with TRL's bfloat16 head instead: per-token log-probs off by up to 0.29 nats, sequence log-probs by up to
    0.38 (the margin stays 0 here only because both passes round alike on the CPU, where the kernels do not depend on
    the batch's shape); with the float32 head added after __init__ (on the policy, not on the precomputed pass),
    margins of up to 0.58 nats, 2.9 in beta x margin."""
    from datasets import Dataset
    from trl import DPOConfig

    from dpo_pipeline.trainers import DPOTrainer
    from tools.loss_differences import PAIRS, tiny_tokenizer

    beta = 5.0
    model = large_logit_gpt2().to(weights)
    pairs = Dataset.from_dict({"prompt_ids": [p for p, _, _ in PAIRS], "chosen_ids": [c for _, c, _ in PAIRS],
                               "rejected_ids": [r for _, _, r in PAIRS]})
    # All 4 pairs in one precomputed batch (padded to the longest), one pair per training batch (unpadded): training
    # batches differ from the precomputed ones, as they do once the sampler shuffles.
    args = DPOConfig(output_dir=str(tmp_path), beta=beta, bf16=True, use_cpu=True, precompute_ref_log_probs=True,
                     precompute_ref_batch_size=len(PAIRS), per_device_train_batch_size=1, report_to="none",
                     activation_checkpointing=False, max_length=None)
    trainer = DPOTrainer(model=model, args=args, train_dataset=pairs, processing_class=tiny_tokenizer())
    assert trainer.ref_model is None and model.lm_head.weight is model.transformer.wte.weight
    assert model.lm_head.weight.dtype == weights
    trainer.model.train()
    seen = []
    hook = trainer.model.register_forward_hook(lambda module, args, output: seen.append(output.log_probs))
    for index in range(len(PAIRS)):
        pair = trainer.train_dataset[index]
        batch = trainer.data_collator([pair])  # [chosen; rejected]
        with torch.no_grad(), trainer.accelerator.autocast():
            trainer.compute_loss(trainer.model, batch)
            expected = float64_head_logps(model, batch["input_ids"], batch["attention_mask"])
        completion = batch["completion_mask"][:, 1:].bool()
        torch.testing.assert_close(seen[-1][completion].double(), expected[completion], rtol=1e-5, atol=1e-6)
        sums = (expected * completion).sum(1)
        torch.testing.assert_close(torch.tensor([pair["ref_chosen_logps"], pair["ref_rejected_logps"]],
                                                dtype=torch.float64), sums, rtol=1e-5, atol=0)
        assert trainer._metrics["train"]["rewards/margins"][-1] / beta == pytest.approx(0, abs=1e-6)
    hook.remove()


@pytest.mark.parametrize("method", ["rloo", "grpo"])
def test_rl_training_log_probs_are_float32_under_bf16_autocast(method, tmp_path):
    """The pipeline's RLOO and GRPO trainers under bf16 autocast, on the GPT-2 with GPT-2 Large's logit magnitudes:
    the per-token completion log-probs of the policy (as the loss calls it) and of the reference (as scoring does) on
    left-padded rows equal the float64 head's on the same hidden states (at the sampled positions) to 1e-5 relative.
    With TRL's bfloat16 head they were off by up to 0.27 nats."""
    from datasets import Dataset
    from trl import GRPOConfig, RLOOConfig

    from dpo_pipeline.generation import left_pad, position_ids_from_mask
    from dpo_pipeline.trainers import GRPOTrainer, RLOOTrainer
    from tools.loss_differences import tiny_tokenizer

    large_logit_gpt2().save_pretrained(tmp_path / "model")
    config_class, trainer_class = (RLOOConfig, RLOOTrainer) if method == "rloo" else (GRPOConfig, GRPOTrainer)
    args = config_class(output_dir=str(tmp_path / "out"), beta=0.05, bf16=True, use_cpu=True, num_generations=2,
                        per_device_train_batch_size=2, report_to="none")
    trainer = trainer_class(model=str(tmp_path / "model"), reward_funcs=lambda completions, **_: [0.0] *
                            len(completions), args=args, train_dataset=Dataset.from_dict({"prompt": ["t5 t6"] * 2}),
                            processing_class=tiny_tokenizer())
    completion = [41, 42, 43, 44, 45, 46]
    ids, mask = left_pad([[11, 12] + completion, [21, 22, 23, 24, 25] + completion], pad_token_id=0)
    with torch.no_grad(), trainer.accelerator.autocast():
        policy, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, len(completion),
                                                                  compute_entropy=True)
        reference, _, _ = trainer._get_per_token_logps_and_entropies(trainer.ref_model, ids, mask, len(completion),
                                                                     batch_size=1)
        for model, logps in ((trainer.model, policy), (trainer.ref_model, reference)):
            expected = float64_head_logps(model, ids, mask, position_ids_from_mask(mask))[:, -len(completion) :]
            torch.testing.assert_close(logps.double(), expected, rtol=1e-5, atol=1e-6)


def test_kto_training_log_probs_are_float32_under_bf16_autocast(tmp_path):
    """KTO (`trainers.KTOTrainer`) under bf16 autocast on the GPT-2 with GPT-2 Large's logit magnitudes, the reference
    loaded by TRL's KTOTrainer from the policy's folder: on one batch of the pairs' unpaired examples, the per-token
    completion log-probs of the policy (as the loss calls it), of its KL completions and of the reference equal the
    float64 head's on the same hidden states to 1e-5 relative, and at step 0 (the policy is the reference) every
    implicit reward is 0 to 1e-6. Measured with TRL's bfloat16 head instead (KTOTrainer built without
    `fused_heads_in_float32`): per-token log-probs off by up to 0.28 nats."""
    from datasets import Dataset
    from trl import KTOConfig

    from dpo_pipeline.trainers import KTOTrainer
    from tools.loss_differences import PAIRS, tiny_tokenizer

    large_logit_gpt2().save_pretrained(tmp_path / "model")
    pairs = Dataset.from_dict({"prompt_ids": [p for p, _, _ in PAIRS], "chosen_ids": [c for _, c, _ in PAIRS],
                               "rejected_ids": [r for _, _, r in PAIRS]})
    args = KTOConfig(output_dir=str(tmp_path / "out"), beta=5.0, bf16=True, use_cpu=True, report_to="none",
                     per_device_train_batch_size=8, activation_checkpointing=False, max_length=None)
    trainer = KTOTrainer(model=str(tmp_path / "model"), args=args, train_dataset=pairs,
                         processing_class=tiny_tokenizer())
    assert trainer.ref_model is not None and len(trainer.train_dataset) == 2 * len(PAIRS)
    batch = trainer.data_collator(trainer.train_dataset.to_list())
    seen = {"policy": [], "reference": []}
    hooks = [model.register_forward_hook(lambda module, args, output, key=key: seen[key].append(output.log_probs))
             for key, model in (("policy", trainer.model), ("reference", trainer.ref_model))]
    trainer.model.train()
    with torch.no_grad(), trainer.accelerator.autocast():
        trainer.compute_loss(trainer.model, batch)
        for hook in hooks:
            hook.remove()
        # each model's passes: the KL completions first, then the examples
        for key, model in (("policy", trainer.model), ("reference", trainer.ref_model)):
            assert len(seen[key]) == 2
            for logps, prefix in zip(seen[key], ("KL_", "")):
                completion = batch[f"{prefix}completion_mask"][:, 1:].bool()
                expected = float64_head_logps(model, batch[f"{prefix}input_ids"], batch[f"{prefix}attention_mask"])
                torch.testing.assert_close(logps[completion].double(), expected[completion], rtol=1e-5, atol=1e-6)
    for side in ("chosen", "rejected"):
        assert trainer._metrics["train"][f"rewards/{side}"][-1] == pytest.approx(0, abs=1e-6)
