"""`eval.py`'s config: the models to evaluate, the held-out prompts and pairs, best-of-N, win rates, the judge."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import PipelineError
from ..judge import check_judge_template
from .sampling_config import SamplingArguments

@dataclass
class EvalArguments(SamplingArguments):
    """`eval.py`: sample from the SFT model and every DPO checkpoint on held-out prompts; reward, exact KL, held-out
    implicit-reward accuracy, win rates (classifier, LLM judge)."""

    max_heldout_pairs: int | None = field(
        default=None, metadata={"help": "Measure held-out accuracy on only the first this many held-out pairs."}
    )
    sft_model_path: str | None = field(default=None, metadata={"help": "The SFT model, also the KL reference."})
    dpo_output_dir: str | None = field(default=None, metadata={"help": "The sweep folder written by dpo.py."})
    dataset_split: str = field(default="test", metadata={"help": "Held-out split the prompts come from."})
    num_prompts: int = field(default=500, metadata={"help": "Held-out prefixes, balanced over classes."})
    samples_per_prompt: int = field(default=4, metadata={"help": "Completions sampled per prompt and model."})
    include_checkpoints: bool = field(
        default=True, metadata={"help": "Evaluate every saved checkpoint, not only each run's final model. When false, "
                                        "no checkpoint is measured; those measured before with these settings stay "
                                        "in the report."}
    )
    kl_batch_size: int = field(
        default=32, metadata={"help": "Sequences per forward pass of the KL and held-out log-probability passes."}
    )
    heldout_pairs_file: str | None = field(
        default=None,
        metadata={
            "help": "Held-out preference pairs (heldout_pairs.jsonl of preference_pairs.py): each model's "
            "implicit-reward accuracy and margin on them."
        },
    )
    best_of_n: list[int] = field(
        default_factory=list,
        metadata={"help": "Best-of-N sampling from the SFT model as a reference curve, e.g. 1 4 16 64."},
    )
    best_of_n_prompts: int | None = field(
        default=None, metadata={"help": "Use only the first this many prompts for best-of-N (it samples max N each): "
                                        "its curve is then measured on other prompts than the models' (the report "
                                        "says so); the default is all of them."}
    )
    win_rate_tie_tolerance: float = field(
        default=0.0,
        metadata={"help": "Classifier win rate: a reward difference no larger than this is a tie."},
    )
    judge_model_path: str | None = field(
        default=None,
        metadata={
            "help": "Optional LLM-as-judge: a local causal LM (instruction-tuned, with a chat template if it has one) "
            "that compares each final model's completion with the SFT model's on the same prompt."
        },
    )
    judge_template: str | None = field(
        default=None,
        metadata={"help": "The judge's prompt, with {prompt}, {first} and {second} (the two completions as A, B); "
                          "by default the task's own (which review is more positive; which answer is more helpful)."},
    )
    judge_max_new_tokens: int = field(default=16, metadata={"help": "Longest judge verdict, in tokens (greedy)."})
    judge_batch_size: int = field(default=16, metadata={"help": "Judge prompts per forward pass."})
    judge_prompts: int | None = field(
        default=None, metadata={"help": "Judge only the first this many prompts (one comparison per prompt)."}
    )
    report_prompts: int = field(
        default=4, metadata={"help": "Prompts whose sample generations the report shows, SFT beside each model."}
    )
    output_dir: str = field(
        default="runs/gpt2-large/eval",
        metadata={"help": "Folder for report.md, frontier.csv, the plots, samples/ and per-model results."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.samples_per_prompt < 1 or self.kl_batch_size < 1:
            raise PipelineError("samples_per_prompt and kl_batch_size must be at least 1")
        if any(n < 1 for n in self.best_of_n):
            raise PipelineError(f"best_of_n: every N must be at least 1, got {self.best_of_n}")
        for name in ("best_of_n_prompts", "judge_prompts"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise PipelineError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not (math.isfinite(self.win_rate_tie_tolerance) and self.win_rate_tie_tolerance >= 0):
            raise PipelineError(f"win_rate_tie_tolerance must be 0 or more, got {self.win_rate_tie_tolerance}")
        if self.judge_template is not None:
            check_judge_template(self.judge_template)
        if self.max_heldout_pairs is not None and self.max_heldout_pairs < 1:
            raise PipelineError(f"max_heldout_pairs must be at least 1, got {self.max_heldout_pairs}")
