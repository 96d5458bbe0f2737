"""Benchmark harness: throughput of every stage at GPT-2 Large's shape with random weights and synthetic data.

    python -m bench.run --config bench/configs/gpt2-large.yaml   # on a GPU machine, no hub access needed
    python -m bench.run --config bench/configs/tiny.yaml         # the same code at tiny scale, on a CPU

(from the repository root: the harness reads the scripts' own config classes). Prints a Markdown table and writes
every figure to `output_file` (JSON), after each stage, so that a run stopped part-way keeps what it timed. For DPO
it times plain TRL with its defaults and our dpo.py settings in the same run, at the same batch, and prints the
ratio. The stages are in bench/stages.py, the end-to-end estimate in bench/estimate.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from dpo_pipeline.cli import run_script
from dpo_pipeline.errors import PipelineError

logger = logging.getLogger(__name__)


def run_benchmark(args) -> dict:
    from dpo_pipeline.runs import atomic_write_text

    from .estimate import estimate_from_results
    from .harness import BenchContext
    from .report import merge_stages, summary_table
    from .stages import STAGES

    context = BenchContext(args)
    results = {"device": context.device_name, "shape": args.shape, "dtype": str(context.dtype).replace("torch.", ""),
               "settings": dataclasses.asdict(args), "stages": {}}
    for path in args.previous_results:
        if not Path(path).is_file():
            logger.warning("Previous results %s are missing (that run failed or did not run): left out", path)
            continue
        try:
            previous = json.loads(Path(path).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise PipelineError(f"previous_results: {path} is not a results file of the harness (not JSON)") from None
        if not isinstance(previous, dict) or not isinstance(previous.get("stages"), dict):
            raise PipelineError(f"previous_results: {path} is not a results file of the harness (no stages)")
        if previous.get("shape") != args.shape:
            raise PipelineError(f"previous_results: {path} is at the {previous.get('shape')} shape, not {args.shape}")
        merge_stages(results["stages"], previous["stages"])
    for stage in args.stages:
        logger.info("Benchmarking %s at %s's shape on %s", stage, args.shape, context.device_name)
        figures = STAGES[stage](context)
        logger.info("%s: %s", stage, json.dumps(figures, default=str))
        merge_stages(results["stages"], {stage: figures})
        atomic_write_text(args.output_file, json.dumps(results, indent=2, default=str) + "\n")
    if args.pipeline_configs:
        results["estimate"] = estimate_from_results(args, results)
    atomic_write_text(args.output_file, json.dumps(results, indent=2, default=str) + "\n")
    print(summary_table(results))
    return results


def main(args) -> None:
    run_benchmark(args)


def dataclass_types():
    from .arguments import BenchArguments

    return (BenchArguments,)


if __name__ == "__main__":
    run_script(main, dataclass_types())
