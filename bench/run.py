"""Benchmark harness: throughput of every stage at GPT-2 Large's shape with random weights and synthetic data.

    python bench/run.py --config bench/configs/gpt2-large.yaml   # on a GPU machine, no hub access needed
    python bench/run.py --config bench/configs/tiny.yaml         # the same code at tiny scale, on a CPU

Prints a Markdown table and writes every figure to `output_file` (JSON). For DPO it times plain TRL with its
defaults and our dpo.py settings in the same run, at the same batch, and prints the ratio.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: dpo_pipeline, dpo.py, sft.py

from dpo_pipeline.cli import run_script  # noqa: E402


def main(args):
    from dpo_pipeline.benchmark import run_benchmark

    run_benchmark(args)


def dataclass_types():
    from dpo_pipeline.configs import BenchArguments

    return (BenchArguments,)


if __name__ == "__main__":
    run_script(main, dataclass_types())
