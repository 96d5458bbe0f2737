"""One function per timed stage; each takes the shared `BenchContext` and returns its figures as a dict.

    sft      SFTTrainer on review-length texts: tokens/s, model FLOP/s, MFU, peak memory
    dpo      DPOTrainer, plain TRL (DPOConfig's defaults) and our dpo.py configs side by side at the same batch
    sample   the pipeline's sampling (temperature 1, no truncation), per KV-cache implementation: completions/s
    score    the pipeline's classifier scoring: texts/s
    kl       the evaluation's exact sequence-KL pass (policy and reference forward): sequences/s

Every stage runs warm-up work before the clock starts, and synchronises the GPU at both ends of what it times.
"""

from __future__ import annotations

import tempfile

import numpy as np
import torch

from .harness import (
    SHAPES,
    BenchContext,
    StepTimer,
    config_label,
    forward_flops_per_token,
    peak_memory,
    random_words,
    reset_peak_memory,
    synchronized_time,
    synthetic_tokenizer,
    timed,
    training_config,
)

PLAIN_TRL = "plain TRL"


def time_sft(context: BenchContext) -> dict:
    """Each SFT config at its own micro-batch and accumulation, on review-length synthetic texts."""
    from datasets import Dataset
    from trl import SFTTrainer

    import sft as sft_script

    args, results = context.args, {}
    for entry in args.sft_configs:
        config = training_config(sft_script.dataclass_types(), entry)
        micro = config.per_device_train_batch_size
        batch = micro * config.gradient_accumulation_steps
        texts = [random_words(context.rng, args.sft_tokens, context.policy_config.vocab_size)
                 for _ in range(batch * context.training_steps)]
        with tempfile.TemporaryDirectory() as tmp:
            run_args = context.pipeline_config_at(config, tmp, batch, micro, max_length=args.sft_tokens + 1)
            timer = StepTimer(args.warmup_steps)
            reset_peak_memory()
            SFTTrainer(model=context.new_policy(), args=run_args, train_dataset=Dataset.from_dict({"text": texts}),
                       processing_class=context.tokenizer, callbacks=[timer]).train()
        tokens_per_step = batch * (args.sft_tokens + 1)
        flops = 3 * forward_flops_per_token(context.policy_config, args.sft_tokens + 1) * tokens_per_step
        results[config_label(entry)] = {
            **context.training_result(timer.seconds_per_step, batch, "sequences", tokens_per_step, flops),
            "warmup_seconds": timer.warmup_seconds, "micro_batch": micro,
            "gradient_accumulation_steps": run_args.gradient_accumulation_steps,
            "activation_checkpointing": bool(run_args.activation_checkpointing),
            "torch_compile": bool(run_args.torch_compile)}
    return results


class ReferencePassTimer:
    """Wall time per item of TRL's reference pass (precompute_ref_log_probs), the first batch left out as warm-up
    when there are more."""

    def __init__(self):
        self.batches: list[tuple[float, int]] = []

    @property
    def seconds_per_item(self) -> float:
        timed_batches = self.batches[1:] or self.batches
        if not timed_batches:
            return 0.0
        return sum(seconds for seconds, _ in timed_batches) / sum(items for _, items in timed_batches)


def timing_reference_pass(trainer_class):
    """`trainer_class` (TRL's DPOTrainer or a subclass) with its precomputed reference pass timed batch by batch."""

    class TimingReferencePass(trainer_class):
        def __init__(self, *args, **kwargs):
            self.reference_pass = ReferencePassTimer()  # before super().__init__, which runs the pass
            super().__init__(*args, **kwargs)

        def compute_ref_log_probs(self, model, inputs):
            start = synchronized_time()
            chosen, rejected = super().compute_ref_log_probs(model, inputs)
            self.reference_pass.batches.append((synchronized_time() - start, len(chosen)))
            return chosen, rejected

    TimingReferencePass.__name__ = f"Timed{trainer_class.__name__}"
    return TimingReferencePass


def time_dpo(context: BenchContext) -> dict:
    """Plain TRL and each of our DPO configs at the same pairs per optimizer step, for each of dpo_batch_sizes.

    Plain TRL is `trl.DPOConfig` with its defaults (activation checkpointing, a live reference model) and
    `trl.DPOTrainer`; only the batch, the precision of the device and the timing settings are set. Ours are dpo.py's
    configs and the pipeline's DPOTrainer, at their own micro-batch (accumulating up to the batch). With
    `precompute_ref_log_probs`, TRL runs the reference model once over the data before training: that pass is timed
    too and charged to every pair, so `pairs_per_s` is end to end in both columns (as for one epoch, the paper's
    setting).
    """
    import trl
    from datasets import Dataset

    import dpo as dpo_script
    from dpo_pipeline.trainers import DPOTrainer as PipelineDPOTrainer

    args = context.args
    ours = {config_label(entry): training_config(dpo_script.dataclass_types(), entry) for entry in args.dpo_configs}
    context_length = args.prompt_tokens + args.max_completion_tokens + 1
    # policy forward + backward (3 forward passes' worth) and the reference's forward
    flops_per_token = 4 * forward_flops_per_token(context.policy_config, context_length)
    results = {}
    for batch in args.dpo_batch_sizes:
        pairs = Dataset.from_list([{"prompt": context.prompt(), "chosen": context.completion(),
                                    "rejected": context.completion()} for _ in range(batch * context.training_steps)])
        tokens_per_pair = float(np.mean([2 * args.prompt_tokens + len(chosen.split()) + len(rejected.split()) + 2
                                         for chosen, rejected in zip(pairs["chosen"], pairs["rejected"])]))
        with tempfile.TemporaryDirectory() as tmp:
            plain_args = trl.DPOConfig(**context.training_overrides(tmp, batch, batch))
            plain = _time_dpo_run(context, trl.DPOTrainer, plain_args, pairs, batch, tokens_per_pair,
                                  flops_per_token)
        results[f"{PLAIN_TRL} @ {batch}"] = plain
        for label, config in ours.items():
            micro = min(batch, config.per_device_train_batch_size)
            with tempfile.TemporaryDirectory() as tmp:
                run_args = context.pipeline_config_at(config, tmp, batch, micro)
                result = _time_dpo_run(context, PipelineDPOTrainer, run_args, pairs, batch, tokens_per_pair,
                                       flops_per_token)
            result["speedup_vs_plain_trl"] = result["pairs_per_s"] / plain["pairs_per_s"]
            results[f"{label} @ {batch}"] = result
    return results


def _time_dpo_run(context: BenchContext, trainer_class, args, dataset, batch: int, tokens_per_pair: float,
                  flops_per_token: float) -> dict:
    timer = StepTimer(context.args.warmup_steps)
    reset_peak_memory()
    # The reference is passed in: TRL would load it from the policy's path, and random weights have none.
    reference = None if args.precompute_ref_log_probs else context.new_policy()
    setup_start = synchronized_time()
    trainer = timing_reference_pass(trainer_class)(model=context.new_policy(), ref_model=reference, args=args,
                                                   train_dataset=dataset, processing_class=context.tokenizer,
                                                   callbacks=[timer])
    setup_seconds = synchronized_time() - setup_start
    trainer.train()
    reference_seconds_per_pair = trainer.reference_pass.seconds_per_item
    seconds_per_pair = timer.seconds_per_step / batch + reference_seconds_per_pair
    result = context.training_result(batch * seconds_per_pair, batch, "pairs", batch * tokens_per_pair,
                                     batch * tokens_per_pair * flops_per_token)
    return {**result, "train_step_seconds": timer.seconds_per_step,
            "reference_pass_seconds_per_pair": reference_seconds_per_pair, "setup_seconds": setup_seconds,
            "warmup_seconds": timer.warmup_seconds, "config_class": type(args).__module__ + "." + type(args).__name__,
            "trainer_class": trainer_class.__module__ + "." + trainer_class.__name__,
            "micro_batch": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "activation_checkpointing": bool(args.activation_checkpointing),
            "precompute_ref_log_probs": bool(args.precompute_ref_log_probs),
            "torch_compile": bool(args.torch_compile)}


def sampled_batches(context: BenchContext, policy, count: int, cache_implementation: str = "dynamic") -> list:
    """`count` completions of synthetic prompts, sampled by the pipeline's `iter_samples`."""
    from dpo_pipeline.generation import iter_samples

    args = context.args
    prompts = context.tokenizer([context.prompt() for _ in range(count)], add_special_tokens=False)["input_ids"]
    return list(iter_samples(policy, prompts, 1, args.max_completion_tokens, 1.0, args.generation_batch_size,
                             args.seed, context.tokenizer.pad_token_id, context.tokenizer.eos_token_id,
                             cache_implementation=cache_implementation))


def time_sampling(context: BenchContext) -> dict:
    """The pipeline's sampling with each KV-cache implementation; the warm-up batch (which compiles the static
    cache's decoding step on a GPU) is timed apart."""
    from dpo_pipeline.models import with_float32_head

    args = context.args
    # as the pipeline samples: the body in the device's precision, the logits in float32
    policy = with_float32_head(context.new_policy(), context.dtype).to(context.device).eval()
    results = {}
    for cache in args.cache_implementations:
        warmup_seconds, _ = timed(lambda: sampled_batches(context, policy, args.generation_batch_size, cache))
        reset_peak_memory()
        seconds, batches = timed(lambda: sampled_batches(context, policy, args.num_completions, cache))
        new_tokens = sum(int(batch.completion_mask.sum()) for batch in batches)
        results[f"{cache} cache"] = {
            "completions_per_s": args.num_completions / seconds, "new_tokens_per_s": new_tokens / seconds,
            "completions": args.num_completions, "seconds": seconds, "warmup_seconds": warmup_seconds,
            **peak_memory()}
    return results


def time_scoring(context: BenchContext) -> dict:
    """The pipeline's classifier scoring of prompt + completion texts, with a RoBERTa of the shape asked for."""
    from transformers import RobertaConfig, RobertaForSequenceClassification

    from dpo_pipeline.models import SentimentClassifier, with_float32_head

    args = context.args
    shape = SHAPES[args.shape]["classifier"]
    config = RobertaConfig(**shape, id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1},
                           pad_token_id=0, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(args.seed)
    model = with_float32_head(RobertaForSequenceClassification(config), context.measure_dtype).to(context.device)
    classifier = SentimentClassifier(model, synthetic_tokenizer(shape["vocab_size"]), args.classifier_batch_size,
                                     args.classifier_max_length)
    texts = [context.prompt() + context.completion() for _ in range(args.num_texts)]
    classifier.score(texts[: args.classifier_batch_size])  # warm-up
    reset_peak_memory()
    seconds, _ = timed(lambda: classifier.score(texts))
    return {"texts_per_s": len(texts) / seconds, "texts": len(texts), "seconds": seconds, **peak_memory()}


def time_kl(context: BenchContext) -> dict:
    """The evaluation's exact sequence KL of sampled completions: policy and reference forward, in measure_dtype."""
    from dpo_pipeline.generation import completion_logits
    from dpo_pipeline.estimators import sequence_kl
    from dpo_pipeline.models import with_float32_head

    args = context.args
    sampler = with_float32_head(context.new_policy(), context.dtype).to(context.device).eval()
    policy = with_float32_head(context.new_policy(), context.measure_dtype).to(context.device).eval()
    reference = with_float32_head(context.new_policy(), context.measure_dtype).to(context.device).eval()
    batches = sampled_batches(context, sampler, args.num_kl_sequences)
    del sampler
    step = args.kl_batch_size

    def kl_pass():
        for batch in batches:
            for start in range(0, len(batch.item_indices), step):
                rows = slice(start, start + step)
                sequence_kl(completion_logits(policy, batch, rows), completion_logits(reference, batch, rows),
                            batch.completion_mask[rows])

    kl_pass()  # warm-up
    reset_peak_memory()
    seconds, _ = timed(kl_pass)
    return {"sequences_per_s": args.num_kl_sequences / seconds, "sequences": args.num_kl_sequences,
            "seconds": seconds, **peak_memory()}


STAGES = {"sft": time_sft, "dpo": time_dpo, "sample": time_sampling, "score": time_scoring, "kl": time_kl}
