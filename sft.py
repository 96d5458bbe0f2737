"""Step 1: supervised fine-tuning of the policy on movie reviews (TRL `SFTTrainer`).

    python sft.py --config configs/tiny/sft.yaml         # embedded offline default: a small GPT-2 from scratch
    python sft.py --config configs/gpt2-large/sft.yaml   # gpt2-large on stanfordnlp/imdb
    python sft.py --config configs/tiny/preferred_ft.yaml  # baseline Preferred-FT: the chosen completions only

Any config key can be overridden on the command line, e.g. `--num_train_epochs 2 --report_to none`.
Re-running continues from the last checkpoint, or does nothing if the run finished.
"""

from dpo_pipeline.cli import run_script


def main(script_args, training_args, model_args):
    from dpo_pipeline.stages.sft import run_sft

    run_sft(script_args, training_args, model_args)


def dataclass_types():
    from trl import ModelConfig

    from dpo_pipeline.arguments import SFTScriptArguments, SFTTrainingConfig

    return (SFTScriptArguments, SFTTrainingConfig, ModelConfig)


if __name__ == "__main__":
    run_script(main, dataclass_types())
