"""Step 4: sample from the SFT model and every DPO checkpoint on held-out prefixes; measure reward (mean
P(POSITIVE)) and exact sequence-level KL to the SFT model; write frontier.csv and the reward-vs-KL plot.

    python eval.py --config configs/tiny/eval.yaml
    python eval.py --config configs/gpt2-large/eval.yaml

Models already evaluated with the same settings are not evaluated again.
"""

from sentiment_dpo.cli import run_script


def main(args):
    from sentiment_dpo.evaluation import evaluate_frontier

    evaluate_frontier(args)


def dataclass_types():
    from sentiment_dpo.configs import EvalArguments

    return (EvalArguments,)


if __name__ == "__main__":
    run_script(main, dataclass_types())
