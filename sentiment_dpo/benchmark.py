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
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

from .cli import PipelineError, parse_config
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
        self.warmup, self.start, self.end, self.steps = warmup, None, None, 0

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.start = synchronized_time()
        elif state.global_step > self.warmup:
            self.end, self.steps = synchronized_time(), state.global_step - self.warmup

    @property
    def seconds_per_step(self) -> float:
        if self.start is None or self.end is None:
            raise PipelineError("steps must be at least 1 more than warmup_steps to time a stage")
        return (self.end - self.start) / self.steps


def _reset_peak_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_memory_gib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


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

    def new_policy(self):
        from transformers import AutoModelForCausalLM

        torch.manual_seed(self.args.seed)
        return AutoModelForCausalLM.from_config(self.policy_config)

    def completion(self) -> str:
        length = int(self.rng.integers(self.args.min_completion_tokens, self.args.max_completion_tokens + 1))
        return " " + random_words(self.rng, length, self.policy_config.vocab_size)

    def prompt(self) -> str:
        return random_words(self.rng, self.args.prompt_tokens, self.policy_config.vocab_size)

    def training_overrides(self, output_dir: str, batch_size: int) -> dict:
        return dict(output_dir=output_dir, per_device_train_batch_size=batch_size, gradient_accumulation_steps=1,
                    max_steps=self.args.warmup_steps + self.args.steps, save_strategy="no", report_to="none",
                    logging_steps=10**9, disable_tqdm=True, use_cpu=self.device.type == "cpu",
                    dataloader_pin_memory=self.device.type == "cuda", num_train_epochs=1)

    # --- training stages -----------------------------------------------------------------------------------------

    def sft(self) -> dict:
        import sft as sft_script
        from trl import SFTTrainer

        _, training_args, _ = parse_config(sft_script.dataclass_types(), ["--config", self.args.sft_config])
        batch = training_args.per_device_train_batch_size
        texts = [random_words(self.rng, self.args.sft_tokens, self.policy_config.vocab_size)
                 for _ in range(batch * (self.args.warmup_steps + self.args.steps))]
        from datasets import Dataset

        with tempfile.TemporaryDirectory() as tmp:
            args = dataclasses.replace(training_args, **self.training_overrides(tmp, batch),
                                       max_length=self.args.sft_tokens + 1)
            timer = StepTimer(self.args.warmup_steps)
            _reset_peak_memory()
            SFTTrainer(model=self.new_policy(), args=args, train_dataset=Dataset.from_dict({"text": texts}),
                       processing_class=self.tokenizer, callbacks=[timer]).train()
        tokens_per_step = batch * (self.args.sft_tokens + 1)
        flops = 3 * forward_flops_per_token(self.policy_config, self.args.sft_tokens + 1) * tokens_per_step
        return self._training_result(timer, batch, "sequences", tokens_per_step, flops)

    def dpo(self) -> dict:
        import dpo as dpo_script
        from datasets import Dataset

        _, ours, _ = parse_config(dpo_script.dataclass_types(), ["--config", self.args.dpo_config])
        plain_type = type(ours)
        results = {}
        for batch in self.args.dpo_batch_sizes:
            pairs = [{"prompt": self.prompt(), "chosen": self.completion(), "rejected": self.completion()}
                     for _ in range(batch * (self.args.warmup_steps + self.args.steps))]
            tokens_per_pair = np.mean([2 * self.args.prompt_tokens + len(p["chosen"].split())
                                       + len(p["rejected"].split()) + 2 for p in pairs])
            context = self.args.prompt_tokens + self.args.max_completion_tokens + 1
            # policy forward + backward (3 forward passes' worth) and the reference's forward
            flops_per_pair = 4 * forward_flops_per_token(self.policy_config, context) * tokens_per_pair
            for name in ("plain_trl", "ours"):
                with tempfile.TemporaryDirectory() as tmp:
                    overrides = self.training_overrides(tmp, batch)
                    # plain TRL: DPOConfig's defaults (our class only adds the bf16 fallback of CPU machines)
                    args = (plain_type(**overrides, logging_nan_inf_filter=True) if name == "plain_trl"
                            else dataclasses.replace(ours, **overrides))
                    results[f"{name}_batch_{batch}"] = self._time_dpo(args, Dataset.from_list(pairs), batch,
                                                                      tokens_per_pair, flops_per_pair)
            results[f"speedup_batch_{batch}"] = (results[f"ours_batch_{batch}"]["pairs_per_s"]
                                                 / results[f"plain_trl_batch_{batch}"]["pairs_per_s"])
        return results

    def _time_dpo(self, args, dataset, batch: int, tokens_per_pair: float, flops_per_pair: float) -> dict:
        from trl import DPOTrainer

        timer = StepTimer(self.args.warmup_steps)
        _reset_peak_memory()
        # The reference is passed in: TRL would load it from the policy's path, and random weights have none.
        reference = None if args.precompute_ref_log_probs else self.new_policy()
        DPOTrainer(model=self.new_policy(), ref_model=reference, args=args, train_dataset=dataset,
                   processing_class=self.tokenizer, callbacks=[timer]).train()
        return self._training_result(timer, batch, "pairs", batch * tokens_per_pair, batch * flops_per_pair)

    def _training_result(self, timer: StepTimer, batch: int, unit: str, tokens_per_step: float,
                         flops_per_step: float) -> dict:
        seconds = timer.seconds_per_step
        flops_per_s = flops_per_step / seconds
        return {f"{unit}_per_s": batch / seconds, "tokens_per_s": tokens_per_step / seconds,
                "seconds_per_step": seconds, "batch": batch, "model_tflops_per_s": flops_per_s / 1e12,
                "mfu": flops_per_s / (self.args.peak_tflops * 1e12), "peak_memory_gib": _peak_memory_gib()}

    # --- sampling, scoring, KL ----------------------------------------------------------------------------------

    def _timed(self, function) -> tuple[float, object]:
        start = synchronized_time()
        result = function()
        return synchronized_time() - start, result

    def sampled_batches(self, policy, count: int):
        from .generation import iter_samples

        prompts = [self.prompt() for _ in range(count)]
        return list(iter_samples(policy, self.tokenizer, prompts, 1, self.args.max_completion_tokens, 1.0,
                                 self.args.generation_batch_size, self.args.seed))

    def sample(self) -> dict:
        policy = self.new_policy().to(self.device, self.dtype).eval()
        self.sampled_batches(policy, self.args.generation_batch_size)  # warm-up
        _reset_peak_memory()
        seconds, batches = self._timed(lambda: self.sampled_batches(policy, self.args.num_completions))
        new_tokens = sum(int(b.completion_mask.sum()) for b in batches)
        return {"completions_per_s": self.args.num_completions / seconds, "new_tokens_per_s": new_tokens / seconds,
                "completions": self.args.num_completions, "seconds": seconds, "peak_memory_gib": _peak_memory_gib()}

    def score(self) -> dict:
        from transformers import RobertaConfig, RobertaForSequenceClassification

        from .models import SentimentClassifier

        shape = SHAPES[self.args.shape]["classifier"]
        config = RobertaConfig(**shape, id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0,
                               "POSITIVE": 1}, pad_token_id=0, bos_token_id=0, eos_token_id=0)
        torch.manual_seed(self.args.seed)
        model = RobertaForSequenceClassification(config).to(self.device, self.dtype)
        classifier = SentimentClassifier(model, synthetic_tokenizer(shape["vocab_size"]),
                                         self.args.classifier_batch_size, self.args.classifier_max_length)
        texts = [self.prompt() + self.completion() for _ in range(self.args.num_texts)]
        classifier.score(texts[: self.args.classifier_batch_size])  # warm-up
        _reset_peak_memory()
        seconds, _ = self._timed(lambda: classifier.score(texts))
        return {"texts_per_s": len(texts) / seconds, "texts": len(texts), "seconds": seconds,
                "peak_memory_gib": _peak_memory_gib()}

    def kl(self) -> dict:
        from .generation import completion_logits
        from .metrics import sequence_kl

        policy = self.new_policy().to(self.device, self.dtype).eval()
        reference = self.new_policy().to(self.device, self.dtype).eval()
        batches = self.sampled_batches(policy, self.args.num_kl_sequences)
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
                "seconds": seconds, "peak_memory_gib": _peak_memory_gib()}


def run_benchmark(args: BenchArguments) -> dict:
    bench = Bench(args)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    results = {"device": device, "shape": args.shape, "dtype": str(bench.dtype).replace("torch.", ""),
               "settings": dataclasses.asdict(args), "stages": {}}
    for stage in args.stages:
        logger.info("Benchmarking %s at %s's shape on %s", stage, args.shape, device)
        results["stages"][stage] = getattr(bench, stage)()
        logger.info("%s: %s", stage, json.dumps(results["stages"][stage], default=str))
    atomic_write_text(args.output_file, json.dumps(results, indent=2, default=str) + "\n")
    print(summary_table(results))
    return results


def summary_table(results: dict) -> str:
    """The results as a Markdown table, the figures the README's performance table quotes."""
    rows = []
    for stage, result in results["stages"].items():
        if stage == "dpo":
            for key, value in result.items():
                if key.startswith("speedup"):
                    rows.append((f"dpo ours / plain TRL ({key.split('_')[-1]} pairs)", f"{value:.2f}x", "", ""))
                else:
                    rows.append((f"dpo {key}", f"{value['pairs_per_s']:.1f} pairs/s", f"{value['mfu']:.1%}",
                                 _memory(value)))
        elif stage == "sft":
            rows.append(("sft", f"{result['tokens_per_s']:.0f} tokens/s", f"{result['mfu']:.1%}", _memory(result)))
        else:
            key = next(k for k in result if k.endswith("_per_s"))
            rows.append((stage, f"{result[key]:.1f} {key[:-6].replace('_', ' ')}/s", "", _memory(result)))
    lines = [f"{results['shape']} shape on {results['device']} ({results['dtype']})", "",
             "| stage | throughput | MFU | peak memory |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(lines)


def _memory(result: dict) -> str:
    return "" if result.get("peak_memory_gib") is None else f"{result['peak_memory_gib']:.1f} GiB"
