"""The config dataclasses of the scripts, one module per stage as TRL lays out its own (`trl/trainer/dpo_config.py`,
`sft_config.py`): each extends TRL's classes (`ScriptArguments`, `SFTConfig`, `DPOConfig`, `RewardConfig`,
`GRPOConfig`) and is filled by `TrlParser` from a YAML file and the command line. What they share is declared once in
`common` (tracking, the training checks and fields) and `sampling_config` (prompts and sampling). Defaults are the
full-scale experiment (GPT-2 Large on IMDb); `configs/tiny/` sets the embedded offline default. A task's own configs
(its offline assets) live with the task."""

from .common import PipelineTrainingArguments, TrackingArguments
from .dpo_config import DPOScriptArguments, DPOTrainingConfig
from .eval_config import EvalArguments
from .pairs_config import PairsArguments
from .reward_model_config import RewardModelScriptArguments, RewardModelTrainingConfig
from .rl_config import RL_METHODS, RL_REWARDS, RLScriptArguments, RLTrainingConfig
from .sampling_config import SamplingArguments
from .sft_config import SFTScriptArguments, SFTTrainingConfig

__all__ = [
    "DPOScriptArguments", "DPOTrainingConfig", "EvalArguments", "PairsArguments", "PipelineTrainingArguments",
    "RL_METHODS", "RL_REWARDS", "RLScriptArguments", "RLTrainingConfig", "RewardModelScriptArguments",
    "RewardModelTrainingConfig", "SFTScriptArguments", "SFTTrainingConfig", "SamplingArguments", "TrackingArguments",
]
