"""`rl.py`'s configs: TRL's `GRPOConfig` (RLOO's settings are a subset of it; online DPO's config is made from it,
`stages.rl.online_dpo_config`) with the pipeline's checks, the trainer, the reward and the sweep."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig, ScriptArguments

from ..errors import PipelineError
from .common import (
    DEFAULT_CLASSIFIER,
    SWEEP_SHARD_HELP,
    PipelineTrainingArguments,
    TrackingArguments,
    parse_sweep_shard,
    refuse_streaming,
)

RL_METHODS = ("rloo", "grpo", "online_dpo")
RL_REWARDS = ("classifier", "reward_model")


@dataclass
class RLTrainingConfig(PipelineTrainingArguments, GRPOConfig):
    """The online RL trainers' settings: TRL's `GRPOConfig` (RLOO's settings are a subset of it, but for
    `normalize_advantages`), with the pipeline's checks. `beta` is the KL coefficient to the reference (SFT) model."""

    # TRL's GRPOConfig leaves dropout on (the SFT models have dropout 0.1), and the Trainer samples in train mode:
    # rollouts and the log-probs of the KL penalty would come from a perturbed copy of the policy, the reference's
    # from the model without dropout.
    disable_dropout: bool = field(
        default=True, metadata={"help": "Always true here: dropout off in the policy and the reference model."})
    DROPOUT_OFF_BECAUSE = ("online RL samples from the policy and compares its log-probabilities with the "
                           "reference's, which are taken without dropout")

    normalize_advantages: bool = field(
        default=False, metadata={"help": "RLOO only: normalize the leave-one-out advantages (TRL's RLOOConfig)."})

    # TRL derives these two from each other and the batch in __post_init__, and refuses both set: a copy of the
    # config (a sweep entry's, RLOO's) is made from the values the user gave (`given_generation_settings`).
    GENERATION_SETTINGS = ("generation_batch_size", "steps_per_generation")

    def __post_init__(self):
        self.given_generation_settings = {name: getattr(self, name) for name in self.GENERATION_SETTINGS}
        super().__post_init__()


@dataclass
class RLScriptArguments(ScriptArguments, TrackingArguments):
    """`rl.py`: online RL from the SFT model on the prompts of the preference pairs, KL-regularised to the SFT
    model (the DPO paper's PPO baselines), with TRL's RLOO, GRPO or online DPO trainer, one run per sweep entry."""

    pairs_file: str | None = field(
        default=None, metadata={"help": "Pairs whose distinct prompts are the training prompts (pairs.jsonl)."})
    method: str = field(
        default="rloo",
        metadata={"help": "TRL trainer: rloo, grpo, or online_dpo (DPO's loss on pairs the policy samples at every "
                          "step, ranked by the reward).", "choices": list(RL_METHODS)},
    )
    reward: str = field(
        default="classifier",
        metadata={"help": "classifier: the true reward, P(POSITIVE) of classifier_name_or_path on prompt + completion "
                          "(the paper's PPO-GT); reward_model: the reward model reward_model.py learned from the "
                          "pairs (the paper's PPO).", "choices": list(RL_REWARDS)},
    )
    classifier_name_or_path: str | None = field(
        default=DEFAULT_CLASSIFIER, metadata={"help": "The sentiment classifier of the true reward."})
    classifier_batch_size: int = field(
        default=64, metadata={"help": "Sequences per forward pass of the classifier or the reward model."})
    classifier_max_length: int = field(default=512, metadata={"help": "Classifier input truncation, in tokens."})
    reward_model_path: str | None = field(
        default=None, metadata={"help": "The learned reward model (output_dir of reward_model.py)."})
    sweep: list[str] = field(
        default_factory=lambda: ["beta=0.05"],
        metadata={"help": "One run per entry: RLTrainingConfig overrides (beta is the KL coefficient), and method= "
                          "and reward= to vary the trainer and the reward, e.g. `method=rloo,reward=classifier,"
                          "beta=0.05`. Each run trains into output_dir/<entry>, where eval.py finds it."},
    )
    sweep_name: str | None = field(default=None, metadata={"help": "wandb group of the sweep's runs."})
    sweep_shard: str | None = field(default=None, metadata={"help": SWEEP_SHARD_HELP})
    max_prompts: int | None = field(default=None, metadata={"help": "Train on only this many prompts."})

    def __post_init__(self):
        refuse_streaming(self)
        if not self.sweep:
            raise PipelineError("sweep is empty: give at least one run, e.g. beta=0.05")
        parse_sweep_shard(self.sweep_shard)
        if self.max_prompts is not None and self.max_prompts < 1:
            raise PipelineError(f"max_prompts must be positive, got {self.max_prompts}")
