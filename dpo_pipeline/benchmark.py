"""Throughput of every stage at the experiment's shapes, with random weights and synthetic tokens (no hub needed).

The policy has GPT-2 Large's shape (774M parameters) and the classifier RoBERTa-large's; prompts are 8 tokens and
completions 32 to 64, as in the IMDb experiment. The tokenizer is a word-level one whose words are the token ids
("t17 t4 ..."), so every synthetic text has exactly the length asked for. Each stage is timed after warm-up steps,
with the GPU synchronised:

    sft      SFTTrainer on review-length texts: tokens/s, model FLOP/s, MFU, peak memory
    dpo      DPOTrainer, plain TRL defaults and our dpo.py settings side by side at the same batch: pairs/s, ratio
    sample   the pipeline's sampling (temperature 1, no truncation): completions/s
    score    the pipeline's classifier scoring: texts/s
    kl       the evaluation's exact sequence-KL pass (policy and reference forward): sequences/s

Model FLOPs follow Kaplan et al. 2020: a forward pass costs 2N + 2 n_layer n_ctx d_model per token (N parameters,
the embedding matrix counted once, as the LM head), a backward pass twice that; MFU = model FLOP/s / peak.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

from .cli import parse_config
from .errors import PipelineError
from .configs import BenchArguments
from .runs import atomic_write_text

logger = logging.getLogger(__name__)

EOS = "<|endoftext|>"
SHAPES = {
    "gpt2-large": {
        "policy": dict(n_embd=1280, n_layer=36, n_head=20, vocab_size=50257, n_positions=1024),
        "classifier": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                           vocab_size=50265, max_position_embeddings=514),
    },
    "tiny": {
        "policy": dict(n_embd=64, n_layer=2, n_head=2, vocab_size=512, n_positions=256),
        "classifier": dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                           vocab_size=512, max_position_embeddings=258),
    },
}


def synthetic_tokenizer(vocab_size: int):
    """A word-level tokenizer of `vocab_size` tokens: EOS, then the words t1 ... t{vocab_size - 1}."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {EOS: 0, **{f"t{i}": i for i in range(1, vocab_size)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=EOS))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS, pad_token=EOS, unk_token=EOS,
                                   bos_token=EOS)


def random_words(rng: np.random.Generator, length: int, vocab_size: int) -> str:
    return " ".join(f"t{i}" for i in rng.integers(1, vocab_size, size=length))


def forward_flops_per_token(config, context: int) -> float:
    """2N + 2 n_layer n_ctx d_model for a GPT-2 `config`, N the parameters that multiply: the blocks (12 d^2 + 13 d
    each), the final layer norm and the LM head (the tied embedding); position embeddings are only looked up."""
    d = config.n_embd
    parameters = config.n_layer * (12 * d * d + 13 * d) + 2 * d + d * config.vocab_size
    return 2 * parameters + 2 * config.n_layer * context * d


def synchronized_time() -> float:
    """perf_counter once the GPU has finished the work queued so far (kernels run asynchronously)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


class StepTimer(TrainerCallback):
    """Wall time of the training steps after `warmup` steps, the GPU synchronised at both ends."""

    def __init__(self, warmup: int):
        self.warmup, self.begin, self.start, self.end, self.steps = warmup, None, None, None, 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.begin = synchronized_time()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.start = synchronized_time()
        elif state.global_step > self.warmup:
            self.end, self.steps = synchronized_time(), state.global_step - self.warmup

    @property
    def warmup_seconds(self) -> float:
        """The untimed first steps (compilation, allocator warm-up)."""
        return self.start - self.begin

    @property
    def seconds_per_step(self) -> float:
        if self.start is None or self.end is None:
            raise PipelineError("steps must be at least 1 more than warmup_steps to time a stage")
        return (self.end - self.start) / self.steps


def _reset_peak_memory() -> None:
    """Free what the previous stage left (trainers hold reference cycles) and restart the peak counters."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_memory() -> dict:
    """Peak GPU memory since the last reset: allocated by tensors, and reserved by PyTorch's caching allocator
    (what the card must hold, a little more than allocated). None on a CPU."""
    if not torch.cuda.is_available():
        return {"peak_memory_gib": None, "peak_reserved_gib": None}
    return {"peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
            "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30}


PLAIN_TRL = "plain TRL"


def config_label(entry: str) -> str:
    """`configs/paper/dpo_24gb.yaml:torch_compile=true` -> `paper/dpo_24gb+torch_compile=true`."""
    path, _, overrides = entry.partition(":")
    label = Path(path).with_suffix("").as_posix().removeprefix("configs/")
    return f"{label}+{overrides}" if overrides else label


def _training_config(dataclass_types, entry: str):
    """The training config of a script's YAML file, with the `key=value,...` overrides after a colon applied; the
    held-out evaluation during training is left out (the benchmark times training steps)."""
    from .sweep import apply_overrides, parse_sweep_entry

    path, _, overrides = entry.partition(":")
    _, training_args, _ = parse_config(dataclass_types, ["--config", path])
    return apply_overrides(training_args, {**parse_sweep_entry(overrides or "eval_strategy=no"),
                                           "eval_strategy": "no"})


class ReferencePassTimer:
    """Wall time per item of TRL's reference pass (precompute_ref_log_probs), the first batch left out as warm-up
    when there are more."""

    def __init__(self):
        self.batches: list[tuple[float, int]] = []

    @property
    def seconds_per_item(self) -> float:
        timed = self.batches[1:] or self.batches
        return sum(seconds for seconds, _ in timed) / sum(items for _, items in timed) if timed else 0.0


def _dpo_trainer_timing_reference_pass():
    from trl import DPOTrainer

    class DPOTrainerTimingReferencePass(DPOTrainer):
        """DPOTrainer whose precomputed reference pass is timed batch by batch."""

        def __init__(self, *args, **kwargs):
            self.reference_pass = ReferencePassTimer()  # before super().__init__, which runs the pass
            super().__init__(*args, **kwargs)

        def compute_ref_log_probs(self, model, inputs):
            start = synchronized_time()
            chosen, rejected = super().compute_ref_log_probs(model, inputs)
            self.reference_pass.batches.append((synchronized_time() - start, len(chosen)))
            return chosen, rejected

    return DPOTrainerTimingReferencePass


class Bench:
    def __init__(self, args: BenchArguments):
        from transformers import GPT2Config

        if args.shape not in SHAPES:
            raise PipelineError(f"shape must be one of {', '.join(SHAPES)}, got {args.shape}")
        self.args = args
        self.rng = np.random.default_rng(args.seed)
        self.policy_config = GPT2Config(**SHAPES[args.shape]["policy"], bos_token_id=0, eos_token_id=0)
        self.tokenizer = synthetic_tokenizer(self.policy_config.vocab_size)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = torch.bfloat16 if self.device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
        # The pipeline's measurements (rewards, KL) use float32 weights by default (measure_dtype).
        self.measure_dtype = getattr(torch, self.args.measure_dtype)

    def new_policy(self):
        from transformers import AutoModelForCausalLM

        torch.manual_seed(self.args.seed)
        return AutoModelForCausalLM.from_config(self.policy_config)

    def completion(self) -> str:
        length = int(self.rng.integers(self.args.min_completion_tokens, self.args.max_completion_tokens + 1))
        return " " + random_words(self.rng, length, self.policy_config.vocab_size)

    def prompt(self) -> str:
        return random_words(self.rng, self.args.prompt_tokens, self.policy_config.vocab_size)

    def training_overrides(self, output_dir: str, batch: int, micro_batch: int) -> dict:
        """Settings every timed training run shares: `batch` sequences (or pairs) per optimizer step, in
        micro-batches of `micro_batch`, the device's precision, no saving and no logging."""
        if batch % micro_batch:
            raise PipelineError(f"a batch of {batch} is not a multiple of the micro-batch {micro_batch}")
        return dict(output_dir=output_dir, per_device_train_batch_size=micro_batch,
                    gradient_accumulation_steps=batch // micro_batch, bf16=self.dtype == torch.bfloat16,
                    max_steps=self.args.warmup_steps + self.args.steps, save_strategy="no", report_to="none",
                    logging_steps=10**9, disable_tqdm=True, use_cpu=self.device.type == "cpu",
                    dataloader_pin_memory=self.device.type == "cuda", num_train_epochs=1)

    def _timed_steps(self) -> int:
        return self.args.warmup_steps + self.args.steps

    # --- training stages -----------------------------------------------------------------------------------------

    def sft(self) -> dict:
        """Each SFT config at its own micro-batch and accumulation, on review-length synthetic texts."""
        from datasets import Dataset
        from trl import SFTTrainer

        import sft as sft_script

        results = {}
        for entry in self.args.sft_configs:
            training_args = _training_config(sft_script.dataclass_types(), entry)
            micro = training_args.per_device_train_batch_size
            batch = micro * training_args.gradient_accumulation_steps
            texts = [random_words(self.rng, self.args.sft_tokens, self.policy_config.vocab_size)
                     for _ in range(batch * self._timed_steps())]
            with tempfile.TemporaryDirectory() as tmp:
                args = dataclasses.replace(training_args, **self.training_overrides(tmp, batch, micro),
                                           max_length=self.args.sft_tokens + 1)
                timer = StepTimer(self.args.warmup_steps)
                _reset_peak_memory()
                SFTTrainer(model=self.new_policy(), args=args, train_dataset=Dataset.from_dict({"text": texts}),
                           processing_class=self.tokenizer, callbacks=[timer]).train()
            tokens_per_step = batch * (self.args.sft_tokens + 1)
            flops = 3 * forward_flops_per_token(self.policy_config, self.args.sft_tokens + 1) * tokens_per_step
            results[config_label(entry)] = {
                **self._training_result(timer.seconds_per_step, batch, "sequences", tokens_per_step, flops),
                "warmup_seconds": timer.warmup_seconds, "micro_batch": micro,
                "activation_checkpointing": bool(args.activation_checkpointing),
                "torch_compile": bool(args.torch_compile)}
        return results

    def dpo(self) -> dict:
        """Plain TRL (DPOConfig's defaults) and each of our DPO configs at the same pairs per optimizer step.

        Ours run at their own micro-batch (accumulating up to the batch). With `precompute_ref_log_probs`, TRL runs
        the reference model once over the data before training: that pass is timed too and charged to every pair,
        so `pairs_per_s` is end to end in both columns (as for one epoch, the paper's setting).
        """
        from datasets import Dataset

        import dpo as dpo_script

        dataclass_types = dpo_script.dataclass_types()
        ours = {config_label(entry): _training_config(dataclass_types, entry) for entry in self.args.dpo_configs}
        plain_type = dataclass_types[1]  # TRL's DPOConfig; our subclass only adds the float32 fallback of CPUs
        results = {}
        for batch in self.args.dpo_batch_sizes:
            pairs = Dataset.from_list([{"prompt": self.prompt(), "chosen": self.completion(),
                                        "rejected": self.completion()} for _ in range(batch * self._timed_steps())])
            tokens_per_pair = np.mean([2 * self.args.prompt_tokens + len(chosen.split()) + len(rejected.split()) + 2
                                       for chosen, rejected in zip(pairs["chosen"], pairs["rejected"])])
            context = self.args.prompt_tokens + self.args.max_completion_tokens + 1
            # policy forward + backward (3 forward passes' worth) and the reference's forward
            flops_per_pair = 4 * forward_flops_per_token(self.policy_config, context) * tokens_per_pair
            with tempfile.TemporaryDirectory() as tmp:
                args = plain_type(**self.training_overrides(tmp, batch, batch), logging_nan_inf_filter=True)
                plain = self._time_dpo(args, pairs, batch, tokens_per_pair, flops_per_pair)
            results[f"{PLAIN_TRL} @ {batch}"] = plain
            for label, config in ours.items():
                micro = min(batch, config.per_device_train_batch_size)
                with tempfile.TemporaryDirectory() as tmp:
                    args = dataclasses.replace(config, **self.training_overrides(tmp, batch, micro))
                    result = self._time_dpo(args, pairs, batch, tokens_per_pair, flops_per_pair)
                result["speedup_vs_plain_trl"] = result["pairs_per_s"] / plain["pairs_per_s"]
                results[f"{label} @ {batch}"] = result
        return results

    def _time_dpo(self, args, dataset, batch: int, tokens_per_pair: float, flops_per_pair: float) -> dict:
        timer = StepTimer(self.args.warmup_steps)
        _reset_peak_memory()
        # The reference is passed in: TRL would load it from the policy's path, and random weights have none.
        reference = None if args.precompute_ref_log_probs else self.new_policy()
        setup_start = synchronized_time()
        trainer = _dpo_trainer_timing_reference_pass()(model=self.new_policy(), ref_model=reference, args=args,
                                                      train_dataset=dataset, processing_class=self.tokenizer,
                                                      callbacks=[timer])
        setup_seconds = synchronized_time() - setup_start
        trainer.train()
        reference_seconds_per_pair = trainer.reference_pass.seconds_per_item
        seconds_per_pair = timer.seconds_per_step / batch + reference_seconds_per_pair
        result = self._training_result(batch * seconds_per_pair, batch, "pairs", batch * tokens_per_pair,
                                       batch * flops_per_pair)
        return {**result, "train_step_seconds": timer.seconds_per_step,
                "reference_pass_seconds_per_pair": reference_seconds_per_pair, "setup_seconds": setup_seconds,
                "warmup_seconds": timer.warmup_seconds,
                "micro_batch": args.per_device_train_batch_size,
                "activation_checkpointing": bool(args.activation_checkpointing),
                "precompute_ref_log_probs": bool(args.precompute_ref_log_probs),
                "torch_compile": bool(args.torch_compile)}

    def _training_result(self, seconds: float, batch: int, unit: str, tokens_per_step: float,
                         flops_per_step: float) -> dict:
        flops_per_s = flops_per_step / seconds
        return {f"{unit}_per_s": batch / seconds, "tokens_per_s": tokens_per_step / seconds,
                "seconds_per_step": seconds, "batch": batch, "model_tflops_per_s": flops_per_s / 1e12,
                "mfu": flops_per_s / (self.args.peak_tflops * 1e12), **_peak_memory()}

    # --- sampling, scoring, KL ----------------------------------------------------------------------------------

    def _timed(self, function) -> tuple[float, object]:
        start = synchronized_time()
        result = function()
        return synchronized_time() - start, result

    def sampled_batches(self, policy, count: int, cache_implementation: str = "dynamic"):
        from .generation import iter_samples

        prompts = self.tokenizer([self.prompt() for _ in range(count)], add_special_tokens=False)["input_ids"]
        return list(iter_samples(policy, prompts, 1, self.args.max_completion_tokens, 1.0,
                                 self.args.generation_batch_size, self.args.seed, self.tokenizer.pad_token_id,
                                 self.tokenizer.eos_token_id, cache_implementation=cache_implementation))

    def sample(self) -> dict:
        """The pipeline's sampling with each KV-cache implementation; the warm-up batch (which compiles the static
        cache's decoding step on a GPU) is timed apart."""
        from .models import with_float32_head

        policy = with_float32_head(self.new_policy(), self.dtype).to(self.device).eval()  # as the pipeline samples
        results = {}
        for cache in self.args.cache_implementations:
            warmup_seconds, _ = self._timed(
                lambda: self.sampled_batches(policy, self.args.generation_batch_size, cache))
            _reset_peak_memory()
            seconds, batches = self._timed(lambda: self.sampled_batches(policy, self.args.num_completions, cache))
            new_tokens = sum(int(b.completion_mask.sum()) for b in batches)
            results[f"{cache} cache"] = {
                "completions_per_s": self.args.num_completions / seconds, "new_tokens_per_s": new_tokens / seconds,
                "completions": self.args.num_completions, "seconds": seconds, "warmup_seconds": warmup_seconds,
                **_peak_memory()}
        return results

    def score(self) -> dict:
        from transformers import RobertaConfig, RobertaForSequenceClassification

        from .models import SentimentClassifier, with_float32_head

        shape = SHAPES[self.args.shape]["classifier"]
        config = RobertaConfig(**shape, id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0,
                               "POSITIVE": 1}, pad_token_id=0, bos_token_id=0, eos_token_id=0)
        torch.manual_seed(self.args.seed)
        model = with_float32_head(RobertaForSequenceClassification(config), self.measure_dtype).to(self.device)
        classifier = SentimentClassifier(model, synthetic_tokenizer(shape["vocab_size"]),
                                         self.args.classifier_batch_size, self.args.classifier_max_length)
        texts = [self.prompt() + self.completion() for _ in range(self.args.num_texts)]
        classifier.score(texts[: self.args.classifier_batch_size])  # warm-up
        _reset_peak_memory()
        seconds, _ = self._timed(lambda: classifier.score(texts))
        return {"texts_per_s": len(texts) / seconds, "texts": len(texts), "seconds": seconds,
                **_peak_memory()}

    def kl(self) -> dict:
        from .generation import completion_logits
        from .metrics import sequence_kl
        from .models import with_float32_head

        sampler = with_float32_head(self.new_policy(), self.dtype).to(self.device).eval()
        policy = with_float32_head(self.new_policy(), self.measure_dtype).to(self.device).eval()
        reference = with_float32_head(self.new_policy(), self.measure_dtype).to(self.device).eval()
        batches = self.sampled_batches(sampler, self.args.num_kl_sequences)
        step = self.args.kl_batch_size

        def kl_pass():
            for batch in batches:
                for start in range(0, len(batch.item_indices), step):
                    rows = slice(start, start + step)
                    sequence_kl(completion_logits(policy, batch, rows), completion_logits(reference, batch, rows),
                                batch.completion_mask[rows])

        kl_pass()  # warm-up
        _reset_peak_memory()
        seconds, _ = self._timed(kl_pass)
        return {"sequences_per_s": self.args.num_kl_sequences / seconds, "sequences": self.args.num_kl_sequences,
                "seconds": seconds, **_peak_memory()}


@dataclass
class PipelineWorkload:
    """How much work each stage of a pipeline config does, in the units the benchmark measures."""

    sft_tokens: float  # training tokens of sft.py: examples x mean length x epochs
    pair_completions: int  # sampled and scored by preference_pairs.py (train and held-out prompts)
    dpo_runs: int
    dpo_pairs_per_run: float  # pairs x epochs (an upper bound: pairs with equal rewards are dropped)
    eval_models: int  # SFT + every final model and checkpoint of the sweep
    eval_samples_per_model: int
    heldout_sequences_per_model: int  # chosen and rejected of every held-out pair
    best_of_n_samples: int


def pipeline_workload(sft_args, pairs_args, dpo_script_args, dpo_args, eval_args, sft_examples: int,
                      sft_mean_tokens: float) -> PipelineWorkload:
    from .pairs import max_pairs_per_prompt

    pairs_per_prompt = max_pairs_per_prompt(pairs_args.completions_per_prompt, pairs_args.pair_mode)
    train_pairs = pairs_args.num_prompts * pairs_per_prompt
    if dpo_script_args.max_train_pairs:
        train_pairs = min(train_pairs, dpo_script_args.max_train_pairs)
    pairs_per_run = train_pairs * dpo_args.num_train_epochs
    steps = math.ceil(pairs_per_run / (dpo_args.per_device_train_batch_size * dpo_args.gradient_accumulation_steps))
    checkpoints = steps // dpo_args.save_steps if eval_args.include_checkpoints and dpo_args.save_steps else 0
    runs = len(dpo_script_args.sweep)
    best_of_n = max(eval_args.best_of_n, default=0) * (eval_args.best_of_n_prompts or eval_args.num_prompts)
    return PipelineWorkload(
        sft_tokens=sft_examples * min(sft_mean_tokens, sft_args.max_length or sft_mean_tokens)
        * sft_args.num_train_epochs,
        pair_completions=(pairs_args.num_prompts + pairs_args.heldout_prompts) * pairs_args.completions_per_prompt,
        dpo_runs=runs, dpo_pairs_per_run=pairs_per_run,
        eval_models=1 + runs * (checkpoints + 1),
        eval_samples_per_model=eval_args.num_prompts * eval_args.samples_per_prompt,
        heldout_sequences_per_model=2 * pairs_args.heldout_prompts * pairs_per_prompt
        if eval_args.heldout_pairs_file else 0,
        best_of_n_samples=best_of_n,
    )


def pipeline_estimate(work: PipelineWorkload, sft_tokens_per_s: float, dpo_pairs_per_s: float,
                      completions_per_s: float, texts_per_s: float, kl_sequences_per_s: float) -> dict:
    """Seconds per stage of a whole pipeline run, from the stage throughputs (model loading not counted):

        sft   = sft_tokens / sft_tokens_per_s
        pairs = pair_completions (1/completions_per_s + 1/texts_per_s)        sample, then score
        dpo   = dpo_runs * dpo_pairs_per_run / dpo_pairs_per_s
        eval  = (eval_models * eval_samples + best_of_n_samples) (1/completions_per_s + 1/texts_per_s)
                + (eval_models - 1) * eval_samples / kl_sequences_per_s     policy and SFT forward, SFT's KL is 0
                + eval_models * heldout_sequences / (2 kl_sequences_per_s)  one model's forward per sequence
    """
    per_sample = 1 / completions_per_s + 1 / texts_per_s
    stages = {
        "sft": work.sft_tokens / sft_tokens_per_s,
        "pairs": work.pair_completions * per_sample,
        "dpo": work.dpo_runs * work.dpo_pairs_per_run / dpo_pairs_per_s,
        "eval": (work.eval_models * work.eval_samples_per_model + work.best_of_n_samples) * per_sample
        + (work.eval_models - 1) * work.eval_samples_per_model / kl_sequences_per_s
        + work.eval_models * work.heldout_sequences_per_model / (2 * kl_sequences_per_s),
    }
    return {"seconds": stages, "total_seconds": sum(stages.values()), "workload": dataclasses.asdict(work)}


def estimate_from_results(args: BenchArguments, results: dict) -> dict | None:
    """`pipeline_estimate` for `args.pipeline_configs` from this run's figures, or None where a stage it needs was
    not timed (the SFT and DPO configs of the pipeline, at the DPO config's own batch, and its sampling cache)."""
    import dpo as dpo_script
    import eval as eval_script
    import preference_pairs as pairs_script
    import sft as sft_script

    sft_path, pairs_path, dpo_path, eval_path = args.pipeline_configs
    _, sft_args, _ = parse_config(sft_script.dataclass_types(), ["--config", sft_path])
    (pairs_args,) = parse_config(pairs_script.dataclass_types(), ["--config", pairs_path])
    dpo_script_args, dpo_args, _ = parse_config(dpo_script.dataclass_types(), ["--config", dpo_path])
    (eval_args,) = parse_config(eval_script.dataclass_types(), ["--config", eval_path])
    stages = results["stages"]
    dpo_batch = dpo_args.per_device_train_batch_size * dpo_args.gradient_accumulation_steps
    dpo_key = f"{config_label(dpo_path)} @ {dpo_batch}"
    try:
        rates = dict(
            sft_tokens_per_s=stages["sft"][config_label(sft_path)]["tokens_per_s"],
            dpo_pairs_per_s=stages["dpo"][dpo_key]["pairs_per_s"],
            completions_per_s=stages["sample"][f"{eval_args.cache_implementation} cache"]["completions_per_s"],
            texts_per_s=stages["score"]["texts_per_s"], kl_sequences_per_s=stages["kl"]["sequences_per_s"])
    except KeyError as missing:
        logger.info("No end-to-end estimate: this run did not time %s", missing)
        return None
    work = pipeline_workload(sft_args, pairs_args, dpo_script_args, dpo_args, eval_args, args.sft_examples,
                             args.sft_mean_tokens)
    return {"configs": list(args.pipeline_configs), "rates": rates, **pipeline_estimate(work, **rates)}


def run_benchmark(args: BenchArguments) -> dict:
    bench = Bench(args)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    results = {"device": device, "shape": args.shape, "dtype": str(bench.dtype).replace("torch.", ""),
               "settings": dataclasses.asdict(args), "stages": {}}
    for stage in args.stages:
        logger.info("Benchmarking %s at %s's shape on %s", stage, args.shape, device)
        results["stages"][stage] = getattr(bench, stage)()
        logger.info("%s: %s", stage, json.dumps(results["stages"][stage], default=str))
    if args.pipeline_configs:
        results["estimate"] = estimate_from_results(args, results)
    atomic_write_text(args.output_file, json.dumps(results, indent=2, default=str) + "\n")
    print(summary_table(results))
    return results


def summary_table(results: dict) -> str:
    """The results as Markdown, the figures the README's performance table quotes."""
    rows = []
    for stage, result in results["stages"].items():
        if stage == "dpo":
            for label, value in result.items():
                speedup = value.get("speedup_vs_plain_trl")
                rows.append((f"dpo {label}", f"{value['pairs_per_s']:.1f} pairs/s", f"{value['mfu']:.1%}",
                             _memory(value), "" if speedup is None else f"{speedup:.2f}x"))
        elif stage == "sft":
            for label, value in result.items():
                rows.append((f"sft {label}", f"{value['tokens_per_s']:.0f} tokens/s", f"{value['mfu']:.1%}",
                             _memory(value), ""))
        elif stage == "sample":
            for label, value in result.items():
                rows.append((f"sample ({label})", f"{value['completions_per_s']:.1f} completions/s", "",
                             _memory(value), ""))
        else:
            key = next(k for k in result if k.endswith("_per_s"))
            rows.append((stage, f"{result[key]:.1f} {key[:-6].replace('_', ' ')}/s", "", _memory(result), ""))
    lines = [f"{results['shape']} shape on {results['device']} ({results['dtype']})", "",
             "| stage | throughput | MFU | peak memory (reserved) | vs plain TRL |", "|---|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    estimate = results.get("estimate")
    if estimate:
        parts = ", ".join(f"{stage} {seconds / 60:.1f}" for stage, seconds in estimate["seconds"].items())
        lines += ["", f"End-to-end estimate for {', '.join(estimate['configs'])}: "
                      f"{estimate['total_seconds'] / 60:.1f} min ({parts} min; model loading not counted)"]
    return "\n".join(lines)


def _memory(result: dict) -> str:
    if result.get("peak_memory_gib") is None:
        return ""
    return f"{result['peak_memory_gib']:.1f} GiB ({result['peak_reserved_gib']:.1f})"
