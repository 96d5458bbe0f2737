"""Step 3: DPO (TRL `DPOTrainer`) on the preference pairs, one run per entry of the sweep (e.g. per beta).

    python dpo.py --config configs/tiny/dpo.yaml
    python dpo.py --config configs/gpt2-large/dpo.yaml --sweep beta=0.1 "beta=0.1,loss_type=ipo"

Each run trains into <output_dir>/<entry> with checkpoints every `save_steps`, and is its own wandb run in the
sweep's group. The reference model is the SFT model. Re-running the same command resumes interrupted runs from
their last checkpoint and skips finished ones.
"""

from dpo_pipeline.cli import run_script


def main(script_args, training_args, model_args):
    from dpo_pipeline.stages.dpo import run_dpo_sweep

    run_dpo_sweep(script_args, training_args, model_args)


def dataclass_types():
    from trl import ModelConfig

    from dpo_pipeline.arguments import DPOScriptArguments, DPOTrainingConfig

    return (DPOScriptArguments, DPOTrainingConfig, ModelConfig)


if __name__ == "__main__":
    run_script(main, dataclass_types())
