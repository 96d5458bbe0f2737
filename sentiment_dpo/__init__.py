"""Shared code of the DPO controlled-sentiment pipeline (sft.py, preference_pairs.py, dpo.py, eval.py)."""

from .cli import PipelineError
from .data import Prompt, build_prompts, clean_review, draw_prefix_lengths, load_reviews
from .metrics import mean_and_standard_error, positive_label_index, positive_probability, sequence_kl
from .pairs import make_pairs, pair_records

__all__ = [
    "PipelineError",
    "Prompt",
    "build_prompts",
    "clean_review",
    "draw_prefix_lengths",
    "load_reviews",
    "make_pairs",
    "mean_and_standard_error",
    "pair_records",
    "positive_label_index",
    "positive_probability",
    "sequence_kl",
]
