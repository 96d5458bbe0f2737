"""`reward_model.py`'s configs: TRL's `RewardConfig` with the pipeline's checks, and the pairs to learn from."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import RewardConfig, ScriptArguments

from ..errors import PipelineError
from .common import PipelineTrainingArguments, TrackingArguments, refuse_streaming

@dataclass
class RewardModelTrainingConfig(PipelineTrainingArguments, RewardConfig):
    """TRL's `RewardConfig` with the pipeline's checks (`PipelineTrainingArguments`); dropout stays off."""

    DROPOUT_OFF_BECAUSE = ("the reward model's scores are compared between completions and with those RL scores "
                           "without dropout")


@dataclass
class RewardModelScriptArguments(ScriptArguments, TrackingArguments):
    """`reward_model.py`: a reward model learned from the preference pairs with TRL's `RewardTrainer` (the DPO
    paper's "PPO" baseline scores its samples with it), its pairwise accuracy measured on held-out pairs."""

    pairs_file: str | None = field(
        default=None, metadata={"help": "The pairs to learn from (pairs.jsonl of preference_pairs.py)."})
    eval_pairs_file: str | None = field(
        default=None, metadata={"help": "Held-out pairs (heldout_pairs.jsonl): the reward model's pairwise accuracy."})
    max_train_pairs: int | None = field(default=None, metadata={"help": "Use only this many pairs (quick runs)."})
    validation_fraction: float = field(
        default=0.1,
        metadata={"help": "Share of the training pairs' prompts whose pairs form the validation split (never the "
                          "held-out pairs): the checkpoint chosen with load_best_model_at_end, the accuracy during "
                          "training, and the SFT samples the scores are standardised on. 0: no validation split."})

    def __post_init__(self):
        refuse_streaming(self)
        if self.max_train_pairs is not None and self.max_train_pairs < 1:
            raise PipelineError(f"max_train_pairs must be positive, got {self.max_train_pairs}")
        if not 0 <= self.validation_fraction < 1:
            raise PipelineError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
