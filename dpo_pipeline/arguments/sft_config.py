"""`sft.py`'s configs: TRL's `SFTConfig` with the pipeline's checks, and the data to train on (as TRL's
`sft_config.py` sits beside its `sft_trainer.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import ScriptArguments, SFTConfig

from ..errors import PipelineError
from ..judge import check_judge_template
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

    judge_template: str | None = field(
        default=None,
        metadata={
            "help": "With pairs_file: fine-tune a judge instead of Preferred-FT. Each pair is shown in both orders "
            "in this template ({prompt}, {first}, {second}: eval.py's judge_template), and the model learns to "
            "answer ' A' or ' B', naming the chosen completion. An offline stand-in for an instruction-tuned judge "
            "(make study's tiny judge); give eval.py the same template."
        },
    )

    def __post_init__(self):
        if self.judge_template is not None:
            if self.pairs_file is None:
                raise PipelineError("judge_template trains a judge on the pairs of pairs_file: set pairs_file")
            check_judge_template(self.judge_template)
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise PipelineError(f"max_train_samples must be positive, got {self.max_train_samples}")
        refuse_streaming(self)
