"""The benchmark's figures as Markdown: the rows the README's performance table quotes."""

from __future__ import annotations

# "first steps": the wall time of the untimed warm-up steps before the timed ones, where torch_compile compiles (and
# the allocator warms up): against the steady throughput beside it, it says after how many steps compiling pays.
HEADER = ["| stage | throughput | first steps, s | model TFLOP/s | MFU | peak memory (reserved) | vs plain TRL |",
          "|---|---|---|---|---|---|---|"]


def merge_stages(into: dict, stages: dict) -> dict:
    """`stages` (stage -> figures, as a results file holds them) added to `into`: the rows of a stage timed in
    several runs (DPO at one batch, then another) are kept side by side, a later row replacing one of the same
    name."""
    for stage, figures in stages.items():
        into.setdefault(stage, {}).update(figures)
    return into


def stage_rows(stage: str, result: dict) -> list[tuple[str, ...]]:
    """(stage, throughput, model TFLOP/s, MFU, peak memory, speed-up) rows of one stage's figures."""
    if stage in ("dpo", "sft"):
        unit, digits = ("pairs", 1) if stage == "dpo" else ("tokens", 0)
        rows = []
        for label, value in result.items():
            speedup = value.get("speedup_vs_plain_trl")
            first = value.get("warmup_seconds")
            rows.append((f"{stage} {label}", f"{value[f'{unit}_per_s']:.{digits}f} {unit}/s",
                         "" if first is None else f"{first:.1f}",
                         f"{value['model_tflops_per_s']:.1f}", f"{value['mfu']:.1%}", memory_cell(value),
                         "" if speedup is None else f"{speedup:.2f}x"))
        return rows
    if stage == "sample":
        return [(f"sample ({label})", f"{value['completions_per_s']:.1f} completions/s",
                 "" if value.get("warmup_seconds") is None else f"{value['warmup_seconds']:.1f}", "", "",
                 memory_cell(value), "") for label, value in result.items()]
    key = next(k for k in result if k.endswith("_per_s"))
    return [(stage, f"{result[key]:.1f} {key[:-6].replace('_', ' ')}/s", "", "", "", memory_cell(result), "")]


def summary_table(results: dict) -> str:
    """The results as Markdown, with the end-to-end estimate under the table when there is one."""
    rows = [row for stage, result in results["stages"].items() for row in stage_rows(stage, result)]
    lines = [f"{results['shape']} shape on {results['device']} ({results['dtype']})", "", *HEADER]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    estimate = results.get("estimate")
    if estimate:
        lines += ["", estimate_line(estimate)]
        if estimate.get("methods"):
            methods = estimate["methods"]
            parts = ", ".join(f"{stage} {seconds / 60:.1f}" for stage, seconds in methods["seconds"].items())
            lines += ["", f"Method leaderboard estimate for {', '.join(methods['configs'])}: "
                          f"{methods['total_seconds'] / 60:.1f} min ({parts} min; model loading not counted)"]
    return "\n".join(lines)


def estimate_line(estimate: dict) -> str:
    parts = ", ".join(f"{stage} {seconds / 60:.1f}" for stage, seconds in estimate["seconds"].items())
    return (f"End-to-end estimate for {', '.join(estimate['configs'])}: {estimate['total_seconds'] / 60:.1f} min "
            f"({parts} min; model loading not counted)")


def memory_cell(result: dict) -> str:
    if result.get("peak_memory_gib") is None:
        return ""
    return f"{result['peak_memory_gib']:.1f} GiB ({result['peak_reserved_gib']:.1f})"
