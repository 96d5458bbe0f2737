"""Check the live evaluation of finished runs against eval.py: for every run folder under the given folders, the
live figures in its offline wandb run (the binary run-*.wandb file that `wandb sync` uploads) and in its
metrics.jsonl, the number of sample tables, and the last live reward and KL beside the final model's row of
frontier.csv.

    python -m tools.check_live runs/tiny/dpo --frontier runs/tiny/eval/frontier.csv

Prints one markdown row per run; exits 1 when a run has no live figures in either file, no sample table, or a last
live figure that differs from frontier.csv (relative 1e-6), so that it can be run after `make study`.
"""

from __future__ import annotations

import argparse
import csv
import json
import struct
import sys
from pathlib import Path

from tools.live_frontier import live_points

# The .wandb file is a LevelDB-style log (wandb's transaction log): a 7-byte header, then 32 KiB blocks of records,
# each with a 7-byte header (crc32, length, type) and a piece of a serialized wandb Record protobuf.
WANDB_HEADER = struct.Struct("<4sHB")
RECORD_HEADER = struct.Struct("<IHB")
BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
TOLERANCE = 1e-6


def wandb_records(path: Path) -> list[bytes]:
    """The serialized records of one run-*.wandb file, in order."""
    data = path.read_bytes()
    ident, _, _ = WANDB_HEADER.unpack_from(data, 0)
    if ident != b":W&B":
        raise ValueError(f"{path} is not a wandb run file")
    records, pieces, offset = [], [], WANDB_HEADER.size
    while offset + RECORD_HEADER.size <= len(data):
        if BLOCK - offset % BLOCK < RECORD_HEADER.size:  # the rest of a block too short for a header is padding
            offset += BLOCK - offset % BLOCK
            continue
        _, length, kind = RECORD_HEADER.unpack_from(data, offset)
        offset += RECORD_HEADER.size
        if kind == 0 and length == 0:  # zero padding at the end of a block
            offset += BLOCK - offset % BLOCK if offset % BLOCK else 0
            continue
        piece = data[offset:offset + length]
        offset += length
        if kind == FULL:
            records.append(piece)
        elif kind == FIRST:
            pieces = [piece]
        elif kind == MIDDLE:
            pieces.append(piece)
        elif kind == LAST:
            records.append(b"".join([*pieces, piece]))
            pieces = []
    return records


def wandb_history(run_folder: Path) -> list[dict]:
    """The history rows (wandb.log calls) of a run folder's offline wandb runs, in order: {key: value}."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for path in sorted(run_folder.glob("wandb/offline-run-*/run-*.wandb")):
        for raw in wandb_records(path):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(raw)
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


def final_rows(frontier: Path) -> dict[str, dict]:
    with open(frontier) as handle:
        return {row["run"]: row for row in csv.DictReader(handle) if row.get("is_final") == "True"}


def close(a: float, b: float) -> bool:
    return abs(a - b) <= TOLERANCE * max(abs(a), abs(b), 1e-9)


def check_run(run_folder: Path, final: dict | None) -> tuple[list[str], bool]:
    """(the table row's cells, whether the run passes)."""
    live = [row for row in wandb_history(run_folder) if "live/kl" in row]
    points = live_points(run_folder / "metrics.jsonl") if (run_folder / "metrics.jsonl").is_file() else []
    tables = list(run_folder.glob("wandb/offline-run-*/files/media/table/live/samples_*.table.json"))
    cells = [run_folder.name, str(len(live)), str(len(points)), str(len(tables))]
    ok = bool(live) and bool(points) and bool(tables)
    if not live or not points:
        return cells + ["—"] * 4 + ["no live figures"], False
    last_wandb, last_jsonl = live[-1], points[-1]
    ok &= all(close(last_wandb[f"live/{key}"], last_jsonl[f"live/{key}"]) for key in ("reward", "kl"))
    cells += [f"{last_jsonl['live/reward']:.4f}", f"{last_jsonl['live/kl']:.3f}"]
    if final is None:
        return cells + ["—", "—", "not in frontier.csv"], False
    reward, kl = float(final["reward"]), float(final["kl"])
    ok &= close(last_jsonl["live/reward"], reward) and close(last_jsonl["live/kl"], kl)
    return cells + [f"{reward:.4f}", f"{kl:.3f}", "ok" if ok else "differs"], ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="sweep folders holding run folders (runs/tiny/dpo)")
    parser.add_argument("--frontier", type=Path, required=True, help="eval.py's frontier.csv")
    args = parser.parse_args(argv)
    finals = final_rows(args.frontier)
    print("| run | live steps in wandb | in metrics.jsonl | sample tables | last live reward | last live KL | "
          "frontier.csv reward | frontier.csv KL | |")
    print("|---|---|---|---|---|---|---|---|---|")
    failures = 0
    for folder in args.folders:
        for run_folder in sorted(path.parent for path in folder.glob("*/stage_complete.json")):
            cells, ok = check_run(run_folder, finals.get(run_folder.name))
            failures += not ok
            print("| " + " | ".join(cells) + " |")
    print(f"{failures} run(s) failed the check" if failures else "every run: live figures in wandb and metrics.jsonl, "
          "sample tables, the last live reward and KL equal to frontier.csv")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
