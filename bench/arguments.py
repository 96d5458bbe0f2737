"""The benchmark's settings (`python -m bench.run --config bench/configs/<shape>.yaml`), parsed by TRL's TrlParser."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from dpo_pipeline.errors import PipelineError
from dpo_pipeline.generation import CACHE_IMPLEMENTATIONS

BENCH_STAGES = ("sft", "dpo", "sample", "score", "kl")


@dataclass
class BenchArguments:
    """`python -m bench.run`: throughput of every stage at the experiment's shapes, random weights, synthetic tokens."""

    shape: str = field(
        default="gpt2-large",
        metadata={"help": "Model shapes: gpt2-large (GPT-2 Large policy, RoBERTa-large classifier) or tiny "
                          "(CPU tests).",
                  "choices": ["gpt2-large", "tiny"]},
    )
    stages: list[str] = field(
        default_factory=lambda: list(BENCH_STAGES), metadata={"help": f"Stages to time: {', '.join(BENCH_STAGES)}."}
    )
    sft_configs: list[str] = field(
        default_factory=lambda: ["configs/gpt2-large/sft.yaml", "configs/gpt2-large/sft_24gb.yaml"],
        metadata={"help": "sft.py configs timed, each at its own batch. An entry may end in `:key=value,...` "
                          "overrides, e.g. `configs/gpt2-large/sft.yaml:torch_compile=true`."},
    )
    dpo_configs: list[str] = field(
        default_factory=lambda: ["configs/paper/dpo.yaml", "configs/paper/dpo_24gb.yaml"],
        metadata={"help": "dpo.py configs timed against plain TRL's defaults at each batch of dpo_batch_sizes (with "
                          "`:key=value,...` overrides as for sft_configs)."},
    )
    dpo_batch_sizes: list[int] = field(
        default_factory=lambda: [8, 64], metadata={"help": "Pairs per optimizer step (the paper's is 64)."}
    )
    cache_implementations: list[str] = field(
        default_factory=lambda: ["dynamic", "static"], metadata={"help": "KV caches the sampling stage is timed with."}
    )
    pipeline_configs: list[str] = field(
        default_factory=lambda: ["configs/gpt2-large/sft.yaml", "configs/paper/pairs.yaml", "configs/paper/dpo.yaml",
                                 "configs/paper/eval.yaml"],
        metadata={"help": "The sft, pairs, dpo and eval configs of a pipeline whose end-to-end time is estimated from "
                          "the stage figures; empty for no estimate."},
    )
    methods_configs: list[str] = field(
        default_factory=lambda: ["configs/gpt2-large/methods.yaml", "configs/gpt2-large/methods_online.yaml",
                                 "configs/gpt2-large/pairs.yaml", "configs/gpt2-large/eval.yaml"],
        metadata={"help": "The method leaderboard's dpo.py and rl.py configs, and the pairs and eval configs of its "
                          "pairs and evaluation, estimated from the same stage figures; empty for no estimate."},
    )
    sft_examples: int = field(default=25_000, metadata={"help": "SFT dataset size for the estimate (IMDb train)."})
    sft_mean_tokens: float = field(
        default=270.0,
        metadata={"help": "Mean SFT example length in tokens for the estimate (IMDb train reviews in GPT-2 tokens, "
                          "capped at the config's max_length)."},
    )
    prompt_tokens: int = field(default=8, metadata={"help": "Prompt length, as the longest IMDb prefix."})
    min_completion_tokens: int = field(default=32, metadata={"help": "Shortest synthetic completion."})
    max_completion_tokens: int = field(default=64, metadata={"help": "Longest completion; also max_new_tokens."})
    sft_tokens: int = field(default=256, metadata={"help": "SFT sequence length (IMDb reviews are ~300 tokens)."})
    warmup_steps: int = field(default=3, metadata={"help": "Training steps run before the clock starts."})
    steps: int = field(default=10, metadata={"help": "Training steps timed."})
    num_completions: int = field(default=1024, metadata={"help": "Completions sampled for the sampling figure."})
    generation_batch_size: int = field(default=256, metadata={"help": "Sequences per generate call."})
    num_texts: int = field(default=2048, metadata={"help": "Texts scored for the scoring figure."})
    classifier_batch_size: int = field(default=256, metadata={"help": "Texts per classifier forward pass."})
    classifier_max_length: int = field(default=512, metadata={"help": "Classifier truncation."})
    num_kl_sequences: int = field(default=512, metadata={"help": "Sampled sequences of the KL pass."})
    kl_batch_size: int = field(default=64, metadata={"help": "Sequences per KL forward pass."})
    peak_tflops: float = field(
        default=989.0, metadata={"help": "The device's dense bf16 peak, for MFU (H100 and H200 SXM: 989)."})
    measure_dtype: str = field(
        default="float32", metadata={"help": "Weights of the scoring and KL stages, as the pipeline's measure_dtype.",
                                     "choices": ["float32", "bfloat16"]})
    output_file: str = field(default="bench/results/gpt2-large.json", metadata={"help": "Where the results go."})
    previous_results: list[str] = field(
        default_factory=list,
        metadata={"help": "Results files of earlier runs of the harness at the same shape, whose stages this run's "
                          "results include (for one estimate over stages timed in separate processes, each with its "
                          "own time limit, as bench/gpu_check.sh runs them); a missing file is left out."})
    seed: int = field(default=0, metadata={"help": "Seed of the weights and the synthetic data."})

    def __post_init__(self):
        if self.steps < 1 or self.warmup_steps < 1:
            raise PipelineError("steps and warmup_steps must be at least 1")
        if not 1 <= self.min_completion_tokens <= self.max_completion_tokens:
            raise PipelineError("completion lengths need 1 <= min_completion_tokens <= max_completion_tokens")
        unknown = [stage for stage in self.stages if stage not in BENCH_STAGES]
        if unknown:
            raise PipelineError(f"stages: unknown stage(s) {', '.join(unknown)}; choose from {', '.join(BENCH_STAGES)}")
        if any(batch < 1 for batch in self.dpo_batch_sizes):
            raise PipelineError(f"dpo_batch_sizes must be positive, got {self.dpo_batch_sizes}")
        unknown = [cache for cache in self.cache_implementations if cache not in CACHE_IMPLEMENTATIONS]
        if unknown:
            raise PipelineError(f"cache_implementations: unknown {', '.join(unknown)}; choose from "
                                f"{', '.join(CACHE_IMPLEMENTATIONS)}")
        if self.pipeline_configs and len(self.pipeline_configs) != 4:
            raise PipelineError("pipeline_configs needs 4 files (the sft, pairs, dpo and eval configs) or none")
        if self.methods_configs and len(self.methods_configs) != 4:
            raise PipelineError("methods_configs needs 4 files (the dpo.py, rl.py, pairs and eval configs) or none")
        config_files = [entry.partition(":")[0] for entry in self.sft_configs + self.dpo_configs]
        for path in [*self.pipeline_configs, *self.methods_configs, *config_files]:
            if not os.path.isfile(path):
                raise PipelineError(f"config file {path} does not exist")
