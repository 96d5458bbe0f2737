"""What `preference_pairs.py` and `eval.py` share: prompts, sampling, the reward classifier and precision."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import PipelineError
from ..generation import CACHE_IMPLEMENTATIONS
from .common import DEFAULT_CLASSIFIER, DEFAULT_DATASET, DEFAULT_TASK, TrackingArguments, check_output_dir

TASK_HELP = ("The task whose prompts, reward and judge are used: a package under dpo_pipeline/tasks (sentiment: review "
             "prefixes of dataset_name, reward = the classifier's P(POSITIVE); chat: the conversations of a preference "
             "dataset, rendered by the chat template), or one that a module named in the environment variable "
             "DPO_PIPELINE_TASKS registers (docs/architecture.md).")


@dataclass
class SamplingArguments(TrackingArguments):
    """What `preference_pairs.py` and `eval.py` share: the task, prompts, sampling and the reward classifier."""

    task: str = field(default=DEFAULT_TASK, metadata={"help": TASK_HELP})

    classifier_name_or_path: str | None = field(
        default=DEFAULT_CLASSIFIER,
        metadata={"help": "Sentiment classifier; the reward is its probability of the label named POSITIVE."},
    )
    dataset_name: str = field(default=DEFAULT_DATASET, metadata={"help": "Hub id or local folder of the reviews."})
    dataset_config: str | None = field(default=None, metadata={"help": "Dataset configuration name, if any."})
    text_column: str = field(default="text", metadata={"help": "Column with the review text."})
    label_column: str = field(default="label", metadata={"help": "Column with the review's class (0 or 1)."})
    num_prompts: int = field(default=1000, metadata={"help": "Number of review prefixes, balanced over classes."})
    min_prefix_tokens: int = field(default=2, metadata={"help": "Shortest prompt prefix, in policy tokens."})
    max_prefix_tokens: int = field(default=8, metadata={"help": "Longest prompt prefix, in policy tokens."})
    max_new_tokens: int = field(default=64, metadata={"help": "Longest completion, in tokens."})
    temperature: float = field(
        default=1.0, metadata={"help": "Sampling temperature. No top-k or top-p truncation is ever applied."}
    )
    score_prompt: bool = field(
        default=True,
        metadata={"help": "Score prompt + completion (the whole review) rather than the completion alone."},
    )
    generation_batch_size: int = field(default=64, metadata={"help": "Sequences sampled per forward pass."})
    cache_implementation: str = field(
        default="dynamic",
        metadata={
            "help": "KV cache while sampling: dynamic (grows token by token) or static (preallocated; transformers "
            "then compiles the decoding step on a GPU, which pays off from the second batch on).",
            "choices": list(CACHE_IMPLEMENTATIONS),
        },
    )
    classifier_batch_size: int = field(default=64, metadata={"help": "Texts scored per classifier forward pass."})
    classifier_max_length: int = field(default=512, metadata={"help": "Classifier input truncation, in tokens."})
    dtype: str = field(
        default="auto",
        metadata={
            "help": "Precision of the policy's weights while sampling: auto (bfloat16 on a GPU that has it, else "
            "float32), float32, bfloat16 or float16. The logits are float32 whatever it is (the output layer stays "
            "float32), so the sampled distribution is not rounded.",
            "choices": ["auto", "float32", "bfloat16", "float16"],
        },
    )
    measure_dtype: str = field(
        default="float32",
        metadata={
            "help": "Precision of the weights of every measurement: the classifier's rewards and, in eval.py, the KL "
            "and held-out log-probability passes. float32 by default: with GPT-2 Large's logits (-60 to -70) even "
            "bfloat16 weights behind a float32 output layer move small KLs and implicit-reward margins by a large "
            "share of their size (tests/test_precision.py). bfloat16 (output layer still float32) is faster.",
            "choices": ["auto", "float32", "bfloat16", "float16"],
        },
    )
    seed: int = field(default=42, metadata={"help": "Seed for prompt selection, prefix lengths and sampling."})
    report_to: str = field(
        default="wandb", metadata={"help": "wandb or none.", "choices": ["wandb", "none"]}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow models that ship their own Python code (off: safe by default)."}
    )

    def __post_init__(self):
        positive = ("num_prompts", "max_new_tokens", "generation_batch_size", "classifier_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise PipelineError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 1 <= self.min_prefix_tokens <= self.max_prefix_tokens:
            raise PipelineError(
                "prefix lengths need 1 <= min_prefix_tokens <= max_prefix_tokens, got "
                f"{self.min_prefix_tokens} and {self.max_prefix_tokens}"
            )
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise PipelineError(f"temperature must be a positive number, got {self.temperature}")
        if hasattr(self, "output_dir"):
            check_output_dir(self.output_dir)
