"""`dpo.py`'s configs: TRL's `DPOConfig` with the pipeline's checks, and the pairs and the sweep."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import DPOConfig, ScriptArguments

from ..errors import PipelineError
from .common import (
    SWEEP_SHARD_HELP,
    PipelineTrainingArguments,
    TrackingArguments,
    parse_sweep_shard,
    refuse_streaming,
)

@dataclass
class DPOTrainingConfig(PipelineTrainingArguments, DPOConfig):
    """TRL's `DPOConfig` with the pipeline's checks (`PipelineTrainingArguments`); dropout stays off."""

    DROPOUT_OFF_BECAUSE = ("DPO compares the policy's log-probabilities with the reference's, which are taken "
                           "without dropout")


@dataclass
class DPOScriptArguments(ScriptArguments, TrackingArguments):
    """`dpo.py`: the pairs to train on and the sweep (the shared training settings are TRL's `DPOConfig`). The pairs
    are TRL's script arguments' dataset (`dataset_name`, `dataset_config`, `dataset_train_split`,
    `dataset_test_split`), or `pairs_file`."""

    pairs_file: str | None = field(
        default=None,
        metadata={"help": "The pairs preference_pairs.py wrote (pairs.jsonl: sampled token ids and text), or any local "
                          "JSONL of preference pairs. dataset_name, when set, wins over it."},
    )
    sweep: list[str] = field(
        default_factory=lambda: ["beta=0.05", "beta=0.1", "beta=1.0"],
        metadata={
            "help": "One run per entry, each a comma-separated list of DPOConfig overrides, e.g. `beta=0.1` or "
            "`beta=0.1,loss_type=ipo` or `beta=0.1,loss_type=robust,label_smoothing=0.1`, plus `label_noise=q` "
            "(the noisy pairs), or `method=unlikelihood,alpha=0.1` (the unlikelihood baseline, no reference "
            "model). Each run trains into output_dir/<entry> and is its own wandb run in one group."
        },
    )
    sweep_name: str | None = field(
        default=None,
        metadata={"help": "wandb group of the sweep's runs; by default <scale>/<folder>, e.g. tiny/dpo."},
    )
    sweep_shard: str | None = field(default=None, metadata={"help": SWEEP_SHARD_HELP})
    eval_pairs_file: str | None = field(
        default=None,
        metadata={
            "help": "Held-out pairs (heldout_pairs.jsonl) that DPOTrainer evaluates every eval_steps with "
            "eval_strategy: steps: held-out implicit-reward accuracy and margin curves in metrics.jsonl and wandb."
        },
    )
    max_eval_pairs: int | None = field(
        default=None,
        metadata={"help": "Evaluate during training on only the first this many pairs of eval_pairs_file (eval.py "
                          "measures every final model and checkpoint on all of them)."},
    )
    max_train_pairs: int | None = field(default=None, metadata={"help": "Use only this many pairs (quick runs)."})
    ref_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "The reference model of the DPO loss, when it is not the model the policy starts from "
                          "(model_name_or_path, the default): a local folder or a hub id, loaded with the policy's "
                          "model_init_kwargs. eval.py still measures KL to its sft_model_path."},
    )

    def __post_init__(self):
        refuse_streaming(self)
        if not self.sweep:
            raise PipelineError("sweep is empty: give at least one run, e.g. beta=0.1")
        parse_sweep_shard(self.sweep_shard)
        for name in ("max_train_pairs", "max_eval_pairs"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise PipelineError(f"{name} must be positive, got {getattr(self, name)}")
