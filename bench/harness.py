"""What every stage of the benchmark shares: the model shapes, synthetic data, FLOP counts, GPU-synchronised timers.

The policy has GPT-2 Large's shape (774M parameters) and the classifier RoBERTa-large's; prompts are 8 tokens and
completions 32 to 64, as in the IMDb experiment. The tokenizer is a word-level one whose words are the token ids
("t17 t4 ..."), so every synthetic text has exactly the length asked for.

Model FLOPs follow Kaplan et al. 2020: a forward pass costs 2N + 2 n_layer n_ctx d_model per token (N parameters,
the embedding matrix counted once, as the LM head), a backward pass twice that; MFU = model FLOP/s / peak.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

from dpo_pipeline.cli import parse_config
from dpo_pipeline.errors import PipelineError

from .arguments import BenchArguments

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


def timed(function) -> tuple[float, object]:
    """(seconds, result) of `function()`, the GPU synchronised at both ends."""
    start = synchronized_time()
    result = function()
    return synchronized_time() - start, result


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


def reset_peak_memory() -> None:
    """Free what the previous stage left (trainers hold reference cycles) and restart the peak counters."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory() -> dict:
    """Peak GPU memory since the last reset: allocated by tensors, and reserved by PyTorch's caching allocator
    (what the card must hold, a little more than allocated). None on a CPU."""
    if not torch.cuda.is_available():
        return {"peak_memory_gib": None, "peak_reserved_gib": None}
    return {"peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
            "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30}


def config_label(entry: str) -> str:
    """`configs/paper/dpo_24gb.yaml:torch_compile=true` -> `paper/dpo_24gb+torch_compile=true`."""
    path, _, overrides = entry.partition(":")
    label = Path(path).with_suffix("").as_posix().removeprefix("configs/")
    return f"{label}+{overrides}" if overrides else label


def training_config(dataclass_types, entry: str):
    """The training config of a script's YAML file, with the `key=value,...` overrides after a colon applied; the
    held-out evaluation during training is left out (the benchmark times training steps)."""
    from dpo_pipeline.sweep import apply_overrides, parse_sweep_entry

    path, _, overrides = entry.partition(":")
    _, training_args, _ = parse_config(dataclass_types, ["--config", path])
    return apply_overrides(training_args, {**parse_sweep_entry(overrides or "eval_strategy=no"),
                                           "eval_strategy": "no"})


class BenchContext:
    """The state the stages share: the settings, one random generator for the synthetic data, the policy's shape,
    the synthetic tokenizer, and the device and precision the stages run in."""

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
        self.measure_dtype = getattr(torch, args.measure_dtype)

    @property
    def device_name(self) -> str:
        return torch.cuda.get_device_name() if self.device.type == "cuda" else "cpu"

    def new_policy(self):
        """A policy of the shape asked for, in float32 with random weights, initialised on the device (a GPT-2 Large
        initialised on the CPU takes seconds that the GPU does in a moment)."""
        from transformers import AutoModelForCausalLM

        torch.manual_seed(self.args.seed)
        with torch.device(self.device):
            return AutoModelForCausalLM.from_config(self.policy_config)

    def completion(self) -> str:
        length = int(self.rng.integers(self.args.min_completion_tokens, self.args.max_completion_tokens + 1))
        return " " + random_words(self.rng, length, self.policy_config.vocab_size)

    def prompt(self) -> str:
        return random_words(self.rng, self.args.prompt_tokens, self.policy_config.vocab_size)

    @property
    def training_steps(self) -> int:
        return self.args.warmup_steps + self.args.steps

    def training_overrides(self, output_dir: str, batch: int, micro_batch: int) -> dict:
        """Settings every timed training run shares: `batch` sequences (or pairs) per optimizer step, in
        micro-batches of `micro_batch`, the device's precision, no saving and no logging."""
        if batch % micro_batch:
            raise PipelineError(f"a batch of {batch} is not a multiple of the micro-batch {micro_batch}")
        return dict(output_dir=output_dir, per_device_train_batch_size=micro_batch,
                    gradient_accumulation_steps=batch // micro_batch, bf16=self.dtype == torch.bfloat16,
                    max_steps=self.training_steps, save_strategy="no", report_to="none",
                    logging_steps=10**9, disable_tqdm=True, use_cpu=self.device.type == "cpu",
                    dataloader_pin_memory=self.device.type == "cuda", num_train_epochs=1)

    def pipeline_config_at(self, config, output_dir: str, batch: int, micro_batch: int, **more):
        """A copy of one of the pipeline's training configs that runs `batch` examples per optimizer step. Its
        `global_batch_size` is set to `batch` too: the pipeline's configs derive the gradient accumulation from it
        when they are copied, and would otherwise train at the config's own batch whatever was asked."""
        overrides = self.training_overrides(output_dir, batch, micro_batch)
        if hasattr(config, "global_batch_size"):
            overrides["global_batch_size"] = batch
        return dataclasses.replace(config, **overrides, **more)

    def training_result(self, seconds: float, batch: int, unit: str, tokens_per_step: float,
                        flops_per_step: float) -> dict:
        flops_per_s = flops_per_step / seconds
        return {f"{unit}_per_s": batch / seconds, "tokens_per_s": tokens_per_step / seconds,
                "seconds_per_step": seconds, "batch": batch, "model_tflops_per_s": flops_per_s / 1e12,
                "mfu": flops_per_s / (self.args.peak_tflops * 1e12), **peak_memory()}
