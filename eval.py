"""Step 4: evaluate the SFT model and every checkpoint of the sweep folder (DPO runs and baselines) on held-out
prefixes: reward (mean P(POSITIVE)), exact sequence-level KL to the SFT model, implicit-reward accuracy on held-out
pairs, win rate against SFT (classifier, optionally an LLM judge), best-of-N from SFT; write report.md,
frontier.csv and the plots.

    python eval.py --config configs/tiny/eval.yaml
    python eval.py --config configs/gpt2-large/eval.yaml

Models already evaluated with the same settings are not evaluated again.
"""

from dpo_pipeline.cli import run_script


def main(args):
    from dpo_pipeline.stages.evaluate import evaluate_frontier

    evaluate_frontier(args)


def dataclass_types():
    from dpo_pipeline.arguments import EvalArguments

    return (EvalArguments,)


if __name__ == "__main__":
    run_script(main, dataclass_types())
