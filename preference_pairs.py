"""Step 2: sample completions of the task's train prompts (review prefixes) from the SFT model, score them with its
reward (the sentiment classifier's P(POSITIVE)) and write chosen/rejected pairs under generations/.

    python preference_pairs.py --config configs/tiny/pairs.yaml
    python preference_pairs.py --config configs/gpt2-large/pairs.yaml

Outputs: completions.jsonl (every sample with its reward), pairs.jsonl (prompt, chosen, rejected, rewards),
heldout_pairs.jsonl (pairs of `heldout_prompts` more prompts, for evaluation only), pairs_noise-<q>.jsonl for each
`label_noise` level q (a seeded share q of the pairs flipped) and run_config.json (the config that made them).
An interrupted run continues with the prompts it had not finished.
"""

from dpo_pipeline.cli import run_script


def main(args):
    from dpo_pipeline.stages.preference_pairs import make_preference_pairs

    make_preference_pairs(args)


def dataclass_types():
    from dpo_pipeline.arguments import PairsArguments

    return (PairsArguments,)


if __name__ == "__main__":
    run_script(main, dataclass_types())
