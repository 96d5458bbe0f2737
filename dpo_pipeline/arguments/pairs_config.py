"""`preference_pairs.py`'s config: the SFT model to sample from, the prompts, the pairing and the held-out pairs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import PipelineError
from .sampling_config import SamplingArguments

@dataclass
class PairsArguments(SamplingArguments):
    """`preference_pairs.py`: sample from the SFT model on train prefixes, score, and pair the completions."""

    model_name_or_path: str | None = field(default=None, metadata={"help": "The SFT model to sample from."})
    dataset_split: str = field(default="train", metadata={"help": "Split the prompts come from."})
    completions_per_prompt: int = field(default=4, metadata={"help": "Completions sampled per prompt (N)."})
    pair_mode: str = field(
        default="all",
        metadata={
            "help": "all: every N(N-1)/2 pair of completions with different rewards (the paper's 6 for N=4); "
            "best_vs_worst: one pair per prompt.",
            "choices": ["all", "best_vs_worst"],
        },
    )
    heldout_prompts: int = field(
        default=0,
        metadata={
            "help": "Extra prompts, beyond num_prompts, whose pairs go to heldout_pairs.jsonl: no model trains on "
            "them, and eval.py measures each model's implicit-reward accuracy on them."
        },
    )
    heldout_split: str | None = field(
        default=None,
        metadata={
            "help": "Split the held-out prompts come from, e.g. IMDb's `unsupervised` (50,000 unlabelled reviews), "
            "so that the train prompts can use every review of dataset_split. By default they come from "
            "dataset_split too, after the train prompts. Never the evaluation split."
        },
    )
    label_noise: list[float] = field(
        default_factory=list,
        metadata={
            "help": "Label-noise levels for a noise study: for each level q, pairs_noise-<q>.jsonl is pairs.jsonl "
            "with a seeded share q of its pairs flipped (chosen and rejected swapped). Train on it with the sweep "
            "entry `label_noise=q` of dpo.py. Held-out pairs are never flipped."
        },
    )
    output_dir: str = field(
        default="generations/gpt2-large",
        metadata={"help": "Folder for completions.jsonl, pairs.jsonl, heldout_pairs.jsonl and the config."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.completions_per_prompt < 2:
            raise PipelineError("completions_per_prompt must be at least 2 to make pairs, got "
                                f"{self.completions_per_prompt}")
        if self.heldout_prompts < 0:
            raise PipelineError(f"heldout_prompts must be 0 or more, got {self.heldout_prompts}")
        for level in self.label_noise:
            if not (math.isfinite(level) and 0 < level < 1):
                raise PipelineError(f"label_noise: each level must be between 0 and 1 (exclusive), got {level}")
