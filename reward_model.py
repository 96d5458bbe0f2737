"""Step 3a (the paper's "PPO" baseline): a reward model learned from the preference pairs with TRL's
`RewardTrainer`, its pairwise accuracy measured on the held-out pairs. rl.py then trains against it.

    python reward_model.py --config configs/tiny/reward_model.yaml
    python reward_model.py --config configs/gpt2-large/reward_model.yaml

Interrupted? Run the same command again: it resumes from its last checkpoint.
"""

from dpo_pipeline.cli import run_script


def main(script_args, training_args, model_args):
    from dpo_pipeline.stages.reward_model import run_reward_model

    run_reward_model(script_args, training_args, model_args)


def dataclass_types():
    from trl import ModelConfig

    from dpo_pipeline.arguments import RewardModelScriptArguments, RewardModelTrainingConfig

    return (RewardModelScriptArguments, RewardModelTrainingConfig, ModelConfig)


if __name__ == "__main__":
    run_script(main, dataclass_types())
