"""Step 3b (the paper's PPO baselines): online RL from the SFT model with TRL's RLOO or GRPO trainer on the prompts
of the preference pairs, KL-regularised to the SFT model, rewarded by the learned reward model (reward_model.py:
the paper's "PPO") or the classifier itself (the true reward: "PPO-GT"); one run per sweep entry, written beside
the DPO runs, where eval.py puts them on the frontier.

    python rl.py --config configs/tiny/rl.yaml
    python rl.py --config configs/gpt2-large/rl.yaml

Interrupted? Run the same command again: finished runs are skipped, the others resume from their last checkpoint.
"""

from dpo_pipeline.cli import run_script


def main(script_args, training_args, model_args):
    from dpo_pipeline.stages.rl import run_rl_sweep

    run_rl_sweep(script_args, training_args, model_args)


def dataclass_types():
    from trl import ModelConfig

    from dpo_pipeline.arguments import RLScriptArguments, RLTrainingConfig

    return (RLScriptArguments, RLTrainingConfig, ModelConfig)


if __name__ == "__main__":
    run_script(main, dataclass_types())
