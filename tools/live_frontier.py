"""Draw the live reward-vs-KL curves of training runs from their metrics.jsonl (the live/* lines that
dpo_pipeline/live_eval.py writes), as the wandb panel "live/reward against live/kl" shows them, offline.

    python tools/live_frontier.py runs/tiny/dpo --output docs/live_frontier.png

Each run folder under the given folders (any folder holding a metrics.jsonl with live lines) is one curve, its
points the live evaluations in step order (step 0: the SFT model, KL 0), with the standard errors as bars. The
last point of each run is measured on all of eval.py's prompts: the one eval.py puts in frontier.csv.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def live_points(metrics_file: Path) -> list[dict]:
    """The live/* records of one metrics.jsonl, one per step (a resumed run's repeated step: the last one)."""
    points = {}
    for line in metrics_file.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "live/kl" in record:
            points[record["step"]] = record
    return [points[step] for step in sorted(points)]


def find_runs(folders: list[Path]) -> dict[str, list[dict]]:
    runs = {}
    for folder in folders:
        for metrics_file in sorted(folder.rglob("metrics.jsonl")):
            points = live_points(metrics_file)
            if points and all(p.get("live/reward") is not None for p in points):
                runs[str(metrics_file.parent.relative_to(folder)) if metrics_file.parent != folder
                     else folder.name] = points
    return runs


def draw(runs: dict[str, list[dict]], output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.4))
    for name, points in runs.items():
        kl = [p["live/kl"] for p in points]
        reward = [p["live/reward"] for p in points]
        axis.errorbar(kl, reward, xerr=[p.get("live/kl_sem", 0) for p in points],
                      yerr=[p.get("live/reward_sem", 0) for p in points], marker="o", markersize=3, capsize=2,
                      label=name)
        axis.annotate(f"step {points[-1]['step']}: {points[-1].get('live/num_prompts', '?')} prompts", (kl[-1], reward[-1]), fontsize=7, xytext=(3, 3),
                      textcoords="offset points")
    axis.set_xlabel("live KL(policy || SFT model), nats per sequence")
    axis.set_ylabel("live true reward")
    axis.set_title("The frontier as it forms (live evaluation during training)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="run folders or sweep folders (e.g. runs/tiny/dpo)")
    parser.add_argument("--output", type=Path, default=Path("docs/live_frontier.png"))
    args = parser.parse_args(argv)
    runs = find_runs(args.folders)
    if not runs:
        print(f"error: no metrics.jsonl with live reward lines under {', '.join(map(str, args.folders))}",
              file=sys.stderr)
        return 2
    draw(runs, args.output)
    print(f"{args.output}: {len(runs)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
