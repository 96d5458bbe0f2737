"""`sft.py`'s configs: TRL's `SFTConfig` with the pipeline's checks, and the data to train on (as TRL's
`sft_config.py` sits beside its `sft_trainer.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import ScriptArguments, SFTConfig

from ..errors import PipelineError
from .common import DEFAULT_TASK, PipelineTrainingArguments, TrackingArguments, refuse_streaming

@dataclass
class SFTTrainingConfig(PipelineTrainingArguments, SFTConfig):
    """TRL's `SFTConfig` with the pipeline's checks (`PipelineTrainingArguments`)."""


@dataclass
class SFTScriptArguments(ScriptArguments, TrackingArguments):
    """Data and initialisation for `sft.py` (the training itself is TRL's `SFTConfig`)."""

    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Hub id, local folder or local file of the SFT data: text, messages (chat, multi-turn), "
                          "prompt + completion, or input_ids, as TRL's SFTTrainer takes them."},
    )
    text_column: str = field(default="text", metadata={"help": "Column with the text to train on."})
    clean_reviews: bool = field(
        default=False,
        metadata={"help": "Clean the texts with the task's own cleaning before training (the sentiment task's: "
                          "remove IMDb's `<br />` line breaks and collapse white space); never applied unless asked "
                          "for."},
    )
    task: str = field(default=DEFAULT_TASK, metadata={"help": "The task whose text cleaning clean_reviews applies."})
    from_scratch: bool = field(
        default=False,
        metadata={
            "help": "Initialise the weights randomly from the model's config instead of loading pretrained ones "
            "(the embedded default trains a small GPT-2 from scratch)."
        },
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only this many training reviews (for quick runs)."}
    )
    pairs_file: str | None = field(
        default=None,
        metadata={
            "help": "Preferred-FT baseline: fine-tune on the chosen completions of this pairs file (loss on the "
            "completion only) instead of on reviews; dataset_name is then unused. Train it into the DPO sweep "
            "folder and eval.py puts it on the frontier."
        },
    )

    def __post_init__(self):
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise PipelineError(f"max_train_samples must be positive, got {self.max_train_samples}")
        refuse_streaming(self)
