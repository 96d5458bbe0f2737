"""How far `make demo`'s figures move from one machine to another, measured: the final models of several finished
demos (fresh clones of one commit, each run on another CPU configuration) gathered into docs/demo_spread.csv, which
`make results` reads to state each figure with the interval another machine's run falls in.

    python -m tools.demo_spread --label "AVX-512, 2 threads" DEMO_FOLDER [--label ... DEMO_FOLDER ...]

A CPU configuration of this machine stands in for another machine (same commit, same seeds):

    git clone <repo> demo-avx2 && cd demo-avx2
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 make demo
    ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_ENABLE_INSTRUCTIONS=SSE4_2 OMP_NUM_THREADS=1 make demo

Other kernels and thread counts add floating-point sums in another order: the embedded classifier and the SFT model
train to weights that differ in their last digits, sampling at temperature 1 turns some of those differences into
other tokens, and the pairs are another draw (2,293 to 2,298 of them). DPO on one set of pairs is the same on every
configuration; DPO on another draw of pairs is not: the spread is that of the data, as another pair-sampling seed
would give.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

FIGURES = ("reward", "kl", "heldout_accuracy", "win_rate", "mean_response_tokens")
COLUMNS = ("configuration", "commit", "pairs", "name", *FIGURES)


def final_models(folder: Path) -> list[dict]:
    """The demo's final models (frontier.csv rows with is_final), without best-of-N."""
    with (folder / "runs/tiny/eval/frontier.csv").open() as handle:
        return [row for row in csv.DictReader(handle) if row["is_final"] == "True" and row["run"] != "best-of-n"]


def commit_of(folder: Path) -> str:
    record = json.loads((folder / "runs/tiny/eval/run_config.json").read_text())
    return str(record.get("git_commit") or record.get("commit") or "")[:10]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", action="append", required=True, help="the CPU configuration of the next folder")
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--output", type=Path, default=Path("docs/demo_spread.csv"))
    args = parser.parse_intermixed_args(argv)
    if len(args.label) != len(args.folders):
        print(f"error: {len(args.label)} labels for {len(args.folders)} folders: one --label before each",
              file=sys.stderr)
        return 2
    rows = []
    for label, folder in zip(args.label, args.folders):
        if not (folder / "runs/tiny/eval/frontier.csv").is_file():
            print(f"error: {folder} holds no finished make demo (runs/tiny/eval/frontier.csv)", file=sys.stderr)
            return 2
        pairs = json.loads((folder / "generations/tiny/stage_complete.json").read_text())["summary"]["pairs"]
        for row in final_models(folder):
            rows.append({"configuration": label, "commit": commit_of(folder), "pairs": pairs, "name": row["run"],
                         **{figure: row.get(figure, "") for figure in FIGURES}})
    with args.output.open("w") as handle:
        handle.write("# make demo's final models on several CPU configurations of one machine (python -m "
                     "tools.demo_spread); make results reads it\n")
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
