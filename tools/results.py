"""The figures the README and docs/results.md show, written from the files the demos leave (never typed by hand):

    make demo; make demo-chat; make study     (any of them; what has not run is left out)
    make results                              (python -m tools.results)

Reads the wall times the Makefile records (`.venv/install.seconds`, `runs/*/timings/*.seconds`: the first successful
run of each step), the summaries of the pairs and of each run (`stage_complete.json`) and the evaluations'
`frontier.csv`; writes docs/results.md whole, and the block between `<!-- results -->` and `<!-- /results -->` of
README.md.
"""

from __future__ import annotations

import csv
import math
import json
import re
import shutil
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from dpo_pipeline.cli import run_script
from dpo_pipeline.measure import BEST_OF_N_RUN, SFT_RUN
from dpo_pipeline.methods import get_method
from dpo_pipeline.errors import PipelineError

DEMO_STEPS = (("install", "create .venv"), ("assets", "build the embedded assets"), ("sft", "SFT"),
              ("pairs", "sample and score pairs"), ("dpo", "DPO sweep"), ("eval", "evaluation and report"))
STUDY_STEPS = (("preferred-ft", "Preferred-FT"), ("unlikelihood", "Unlikelihood runs"),
               ("reward-model", "the reward model"), ("rl", "RLOO runs"), ("judge", "the judge"),
               ("dpo-study", "the study's DPO runs"),
               ("eval-study", "evaluation of the new models"))
CHAT_STEPS = (("assets", "conversations and pairs"), ("sft", "chat SFT"), ("dpo", "DPO sweep"),
              ("eval", "evaluation, judge and report"))
README_BLOCK = re.compile(r"(<!-- results -->\n).*?(<!-- /results -->)", re.S)


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s" if seconds >= 60 else f"{int(seconds)} s"


def read_seconds(path: Path) -> int | None:
    return int(path.read_text().split()[0]) if path.is_file() else None


def read_frontier(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for row in csv.DictReader(path.open()):
        for key, value in row.items():
            if key in ("name", "run", "method", "loss_type", "is_final", "setting"):
                continue
            row[key] = float(value) if value not in ("", None) else None
        row["is_final"] = row["is_final"] == "True"
        rows.append(row)
    return rows


def summary(folder: Path) -> dict:
    path = folder / "stage_complete.json"
    return json.loads(path.read_text())["summary"] if path.is_file() else {}


def number(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def with_sem(row: dict, key: str, digits: int) -> str:
    """The figure ± its standard error: `_sem` (reward, KL: analytic) or `_se` (the rates: a bootstrap over
    prompts), where frontier.csv has one. The figure to `digits` decimals; the error to as many, or more where it
    would round to 0 (it keeps one significant digit)."""
    if row.get(key) is None:
        return "—"
    sem = row.get(f"{key}_sem", row.get(f"{key}_se"))
    if not sem:
        return f"{row[key]:.{digits}f}"
    return f"{row[key]:.{digits}f} ± {sem:.{max(digits, supported_decimals(sem, most=4))}f}"


def timing_lines(steps, folder: Path, venv: Path, with_install: bool) -> tuple[list[str], int | None]:
    """'step: time' for each recorded step, and the total (None when a step has no record)."""
    parts, total = [], 0
    for step, label in steps:
        seconds = read_seconds(venv / "install.seconds") if step == "install" else read_seconds(
            folder / f"{step}.seconds")
        if step == "install" and not with_install:
            continue
        if seconds is None:
            total = None
            continue
        parts.append(f"{label} {minutes(seconds)}")
        total = None if total is None else total + seconds
    return parts, total


def sentiment_table(rows: list[dict], names: list[str] | None = None, digits: dict | None = None) -> list[str]:
    """The final models' figures; `digits` ({run: {figure: decimals}}, from `demo_spread`) rounds a run's figures to
    what their spread across machines supports (default: 3 decimals, 2 for KL)."""
    from dpo_pipeline.methods import series_label

    lines = ["| model | reward: mean P(POSITIVE) | KL(π ‖ π_SFT), nats | held-out accuracy | win rate vs SFT | "
             "mean completion tokens |", "|---|---|---|---|---|---|"]
    finals = [row for row in rows if row["is_final"] and row["run"] != BEST_OF_N_RUN
              and (names is None or row["run"] in names)]
    for row in sorted(finals, key=lambda r: (r["run"] != SFT_RUN, r["kl"] or 0)):
        places = {"reward": 3, "kl": 2, "heldout_accuracy": 3, "win_rate": 3, **(digits or {}).get(row["run"], {})}
        lines.append(f"| {series_label(row)} (step {int(row['step'])}) | {with_sem(row, 'reward', places['reward'])} | "
                     f"{with_sem(row, 'kl', places['kl'])} | "
                     f"{with_sem(row, 'heldout_accuracy', places['heldout_accuracy'])} | "
                     f"{with_sem(row, 'win_rate', places['win_rate'])} | {number(row.get('mean_response_tokens'), 1)} |"
                     .replace(" (step 0)", ""))
    best = [row for row in rows if row["run"] == BEST_OF_N_RUN and row["step"] > 1]
    if best:
        lines.append(f"| best-of-{' / '.join(str(int(r['step'])) for r in best)} from SFT "
                     f"({int(best[0]['num_prompts'])} prompts) | {' / '.join(number(r['reward']) for r in best)} | "
                     f"{' / '.join(number(r['kl'], 2) for r in best)} (analytic) | — | — | — |")
    return lines


def chat_table(rows: list[dict]) -> list[str]:
    from dpo_pipeline.methods import series_label

    lines = ["| model | KL(π ‖ π_SFT), nats | held-out accuracy | win rate vs SFT (classifier) | judge win rate: "
             "ties ½ / wins ÷ (wins+losses+ties) | judge unparsable | mean answer tokens |",
             "|---|---|---|---|---|---|---|"]
    for row in sorted((r for r in rows if r["is_final"]), key=lambda r: (r["run"] != SFT_RUN, r["kl"] or 0)):
        judge = ("—" if row.get("judge_win_rate") is None else
                 f"{with_sem(row, 'judge_win_rate', 3)} / {with_sem(row, 'judge_win_rate_strict', 3)}")
        lines.append(f"| {series_label(row)} | {with_sem(row, 'kl', 2)} | {with_sem(row, 'heldout_accuracy', 3)} | "
                     f"{with_sem(row, 'win_rate', 3)} | {judge} | {number(row.get('judge_unparsable_share'), 2)} | "
                     f"{number(row.get('mean_response_tokens'), 1)} |")
    return lines


BEFORE_SAMPLED_IDS = "demo_before_sampled_ids.csv"
DEMO_SPREAD = "demo_spread.csv"
SPREAD_FIGURES = (("reward", "reward"), ("kl", "KL, nats"), ("win_rate", "win rate vs SFT"))


def supported_decimals(sd: float, most: int = 3) -> int:
    """The decimals a figure is quoted to when runs on other machines spread it by `sd`: down to the first
    significant digit of sd (sd 5.9 -> 0 decimals, 0.28 -> 1, 0.016 -> 2, 0.0076 -> 3), at most `most`."""
    import math

    return most if sd <= 0 else max(0, min(most, -math.floor(math.log10(sd))))


def demo_spread(path: Path) -> dict[str, dict]:
    """{run: {figure: {"values", "mean", "sd", "low", "high", "decimals"}}} of the demo's final models over the CPU
    configurations of docs/demo_spread.csv (`tools.demo_spread`), with the 95% prediction interval of one more
    run (another machine's), mean ± t_{0.975}(n - 1) sd sqrt(1 + 1/n), n the configurations."""
    from dpo_pipeline.estimators import spread_over_seeds, t_quantile_975

    if not path.is_file():
        return {}
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    values: dict[str, dict[str, list[float]]] = {}
    for row in csv.DictReader(lines):
        for figure, _ in SPREAD_FIGURES:
            if row.get(figure) not in ("", None):
                values.setdefault(row["name"], {}).setdefault(figure, []).append(float(row[figure]))
    spread = {}
    for name, figures in values.items():
        for figure, numbers in figures.items():
            if len(numbers) < 2:
                continue
            stats = spread_over_seeds(numbers)
            half = t_quantile_975(len(numbers) - 1) * stats["sd"] * (1 + 1 / len(numbers)) ** 0.5
            spread.setdefault(name, {})[figure] = {
                "values": numbers, "mean": stats["mean"], "sd": stats["sd"], "low": stats["mean"] - half,
                "high": stats["mean"] + half, "decimals": supported_decimals(stats["sd"])}
    return spread


def spread_table(spread: dict[str, dict], rows: list[dict], configurations: int) -> list[str]:
    """The demo's final models over the CPU configurations: each figure's mean, its range over them, and the 95%
    prediction interval of another machine's run, each quoted to the decimals its spread supports."""
    from dpo_pipeline.methods import series_label

    names = {row["run"]: series_label(row) for row in rows if row["is_final"]}
    header = " | ".join(f"{label}: mean (range) [another machine, 95%]" for _, label in SPREAD_FIGURES)
    lines = [f"| model | {header} |", "|---|" + "---|" * len(SPREAD_FIGURES)]
    for name, figures in sorted(spread.items(), key=lambda item: item[1].get("kl", {}).get("mean", 0.0)):
        cells = []
        for figure, _ in SPREAD_FIGURES:
            stats = figures.get(figure)
            if stats is None or stats["sd"] == 0:
                cells.append("—" if stats is None else f"{stats['mean']:g}")
                continue
            d = stats["decimals"]
            low = max(stats["low"], 0.0)
            high = min(stats["high"], 1.0) if figure != "kl" else stats["high"]
            cells.append(f"{stats['mean']:.{d}f} ({min(stats['values']):.{d}f}–{max(stats['values']):.{d}f}) "
                         f"[{low:.{d}f}–{high:.{d}f}]")
        lines.append(f"| {names.get(name, name)} | " + " | ".join(cells) + " |")
    return lines


def seeds_table(path: Path) -> list[str]:
    """The settings trained with several seeds (report.py's frontier_seeds.csv): mean ± standard error over the seeds,
    and their sd, of the final models' reward, KL, held-out accuracy and win rate."""
    if not path.is_file():
        return []
    groups = list(csv.DictReader(path.open()))
    if not groups:
        return []

    def cell(group, figure, digits):
        mean, se, sd = (group.get(f"{figure}_{stat}") for stat in ("mean", "se", "sd"))
        if mean in (None, ""):
            return "—"
        return f"{float(mean):.{digits}f} ± {float(se or 0):.{digits}f} (sd {float(sd or 0):.{digits}f})"

    lines = ["| setting | seeds | reward: mean ± s.e. (sd) | KL, nats | held-out accuracy | win rate vs SFT |",
             "|---|---|---|---|---|---|"]
    for group in sorted(groups, key=lambda group: float(group.get("kl_mean") or 0)):
        lines.append(f"| {group['label']} | {group['num_seeds']} | {cell(group, 'reward', 3)} | "
                     f"{cell(group, 'kl', 2)} | {cell(group, 'heldout_accuracy', 3)} | {cell(group, 'win_rate', 3)} |")
    return lines


def compared(row: dict) -> bool:
    """Whether a run is one the claims compare with the DPO curve: a trained method's, not the SFT model's or
    best-of-N's (sampling), nor one of the runs that draw the curve."""
    method = get_method(row["method"])
    return method.family != "sampling" and not method.on_the_dpo_curve(row)


def claims_against_the_dpo_curve(seeds_file: Path, rows: list[dict]) -> list[str]:
    """Sentences comparing each other method with DPO at the same KL, which state only what survives every error that
    goes into the comparison (`estimators.compare_with_concave_curve`). The DPO curve passes through the SFT model at KL
    0 (its reward's error over prompts: it has no training seed; its KL exactly 0) and each DPO β's means over its
    seeds (final models, no label noise; their KL and reward errors over seeds). Taken as concave and
    non-decreasing, at a method's mean KL it lies between the chord of the neighbouring points and an upper bound
    (the neighbouring chords extended, the next point's reward). A method is above the curve when its mean reward
    clears the upper bound, below when it is under the chord, each by more than t_{0.975}(n - 1) standard errors of
    the difference (n the fewest seeds among the method and the DPO settings); the sentence prints both
    differences, their t and the critical value. A setting past DPO's largest mean KL, or of one seed, is named and
    not compared."""
    from dpo_pipeline.estimators import CURVE_DRAWS, CURVE_SEED, SeedMean, compare_with_concave_curve
    from dpo_pipeline.methods import series_label

    if not seeds_file.is_file():
        return []
    groups = [{key: (float(value) if key.endswith(("_mean", "_se", "_sd")) and value not in ("", None) else value)
               for key, value in group.items()} for group in csv.DictReader(seeds_file.open())]
    sft = next((row for row in rows if row["run"] == SFT_RUN), None)
    dpo = [g for g in groups if get_method(g["method"]).on_the_dpo_curve(g) and not float(g["label_noise"] or 0)]
    if sft is None or len(dpo) < 2:
        return []
    curve = [SeedMean(0.0, 0.0, sft["reward"], sft.get("reward_sem") or 0.0)] + [
        SeedMean(g["kl_mean"], g["kl_se"], g["reward_mean"], g["reward_se"]) for g in dpo]
    fewest_dpo_seeds = min(int(g["num_seeds"]) for g in dpo)
    lines = []
    for group in sorted((g for g in groups if g not in dpo and not float(g["label_noise"] or 0)),
                        key=lambda g: (g["label"], g["kl_mean"])):
        method = SeedMean(group["kl_mean"], group["kl_se"], group["reward_mean"], group["reward_se"])
        head = (f"- {group['label']} ({group['num_seeds']} seeds): KL {method.kl:.2f} ± {method.kl_se:.2f}, reward "
                f"{method.reward:.3f} ± {method.reward_se:.3f}")
        # The seed-level errors with the fewest seeds set the degrees of freedom; SFT's error over its many
        # prompts does not limit them.
        seeds = min(int(group["num_seeds"]), fewest_dpo_seeds)
        found = compare_with_concave_curve(method, curve, degrees_of_freedom=seeds - 1)
        if found is None:
            lines.append(f"{head}: past DPO's largest mean KL ({max(p.kl for p in curve):.2f}), no DPO point to "
                         "compare with.")
            continue
        lines.append(f"{head}; the DPO curve there between {found['lower']:.3f} (chord) and {found['upper']:.3f} "
                     f"(upper bound); reward minus chord {found['d_lower']:+.3f} ± {found['se_lower']:.3f} "
                     f"(t = {found['t_lower']:.2f}), minus upper bound {found['d_upper']:+.3f} ± "
                     f"{found['se_upper']:.3f} (t = {found['t_upper']:.2f}); critical t {found['t_crit']:.2f} "
                     f"({seeds - 1} df): {verdict_words(found)}.")
    in_groups = {run for group in groups for run in str(group["runs"]).split()}
    single = sorted({series_label(row) for row in rows if row["is_final"] and row["run"] not in in_groups
                     and compared(row) and not row.get("label_noise")})
    if single:
        lines.append(f"- One training seed, so not compared: {', '.join(single)}.")
    intro = ("Each method against the DPO curve at its own KL (`make study`). The curve passes through the SFT model "
             "at KL 0 and DPO's means over seeds; taken as concave and non-decreasing, at a method's KL it lies "
             "between the chord of the neighbouring points (its lower bound) and the least of the neighbouring "
             "chords extended and the next point's reward (its upper bound). ± is one standard error: over seeds, "
             "SFT's over prompts. The error of each difference carries the method's KL and reward errors, every DPO "
             f"point's KL and reward errors and SFT's reward error ({CURVE_DRAWS:,} normal draws, seed {CURVE_SEED})."
             " A method is called above the DPO curve only when (reward − upper bound) / its error exceeds the "
             "two-sided 95% t quantile with n − 1 degrees of freedom (n the fewest seeds among the method and the "
             "DPO settings: 4.30 for 3 seeds), below only when (reward − chord) / its error is under minus that; "
             "otherwise within the bracket or the noise:")
    return [intro, "", *lines] if lines else []


def verdict_words(found: dict) -> str:
    """The verdict of `estimators.compare_with_concave_curve` in words, naming the bound that decided it."""
    if found["verdict"] == "above":
        return "above the DPO curve (clears its upper bound)"
    if found["verdict"] == "below":
        return "below the DPO curve (under its chord)"
    over_chord, under_upper = found["t_lower"] > found["t_crit"], found["t_upper"] < -found["t_crit"]
    if over_chord and under_upper:
        return "within the bracket of the DPO curve (over its chord and under its upper bound)"
    if over_chord:
        return "within the bracket of the DPO curve (over its chord, not clear of its upper bound)"
    if under_upper:
        return "within the bracket of the DPO curve (under its upper bound, not under its chord)"
    return "within noise of the DPO curve"


MATCHED_KLS = (2.0, 5.0, 10.0)


def read_groups(seeds_file: Path) -> list[dict]:
    """frontier_seeds.csv's settings, their figures and settings as numbers (a method's own settings, SimPO's gamma
    or KTO's weights, as its label and series format them)."""
    from dpo_pipeline.report import method_setting_columns

    numbers = ("beta", "label_smoothing", "label_noise", *method_setting_columns())

    def parsed(key: str, value):
        if value in ("", None) or not (key.endswith(("_mean", "_se", "_sd")) or key in numbers):
            return value
        try:
            return float(value)
        except ValueError:  # a method's setting that is a word
            return value

    return [{key: parsed(key, value) for key, value in group.items()} for group in csv.DictReader(seeds_file.open())]


def methods_timing(timings: Path) -> str:
    """The line of `make methods`' wall time (its steps ran STUDY_JOBS at a time: their sum is not its wall time),
    with each step's own; "" before it has finished once."""
    wall = read_seconds(timings / "methods.seconds")
    if wall is None:
        return ""
    steps = [(path.stem, read_seconds(path)) for path in sorted(timings.glob("methods-shard-*.seconds"))]
    steps += [(name, read_seconds(timings / f"{name}.seconds"))
              for name in ("dpo-study", "reward-model", "methods-online", "eval-methods")]
    said = ", ".join(f"{name} {minutes(seconds)}" for name, seconds in steps if seconds is not None)
    return (f"`make methods`: {minutes(wall)} of wall time (its training steps two at a time, one core each, then "
            f"the evaluation of the new final models on two processes; each step's own wall time when it first ran, "
            f"by this target or by make study before it: {said}).")


def training_cost(sweep: Path, runs: list[str]) -> tuple[float | None, int]:
    """(the mean training seconds of `runs`: the Trainer's train_runtime in their metrics.jsonl, the completions they
    sampled while training: their summaries' completions_sampled, 0 for a method that trains on the pairs)."""
    seconds, sampled = [], 0
    for run in runs:
        metrics = sweep / run / "metrics.jsonl"
        if metrics.is_file():
            records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
            seconds += [record["train_runtime"] for record in records if "train_runtime" in record][-1:]
        sampled += int(summary(sweep / run).get("completions_sampled") or 0)
    return (sum(seconds) / len(seconds) if seconds else None), sampled // max(1, len(runs))


def leaderboard(seeds_file: Path, rows: list[dict], sweep: Path, kls=MATCHED_KLS) -> list[str]:
    """Which method at what KL: each method's curve (its settings' means over training seeds, the SFT model at KL 0,
    `methods.series_of`) read at each matched KL (`estimators.reward_at_kl`: every point's KL and reward error
    carried in, a 95% interval with the t quantile of the fewest seeds), the methods ranked by it, a method whose
    interval overlaps the next one's marked "≈" (not separated from it); past a method's largest mean KL, "—". Beside
    it: the method's most rewarded setting, and its cost (training seconds per run, completions sampled per run while
    training; the pairs' own sampling is shared by every offline method)."""
    from dpo_pipeline.estimators import SeedMean, reward_at_kl, separated
    from dpo_pipeline.methods import series_label, series_of

    if not seeds_file.is_file():
        return []
    sft = next((row for row in rows if row["run"] == SFT_RUN), None)
    groups = [g for g in read_groups(seeds_file)
              if not float(g["label_noise"] or 0) and g.get("reward_mean") is not None]
    if sft is None or sft.get("reward") is None or not groups:
        return []
    series: dict[str, list[dict]] = {}
    for group in groups:
        series.setdefault(series_of(group), []).append(group)
    start = SeedMean(0.0, 0.0, sft["reward"], sft.get("reward_sem") or 0.0)
    readings: dict[str, dict] = {}
    for name, members in series.items():
        curve = [start, *(SeedMean(g["kl_mean"], g["kl_se"], g["reward_mean"], g["reward_se"]) for g in members)]
        df = min(int(g["num_seeds"]) for g in members) - 1
        readings[name] = {kl: reward_at_kl(curve, kl, df) for kl in kls}
    best_of_n = sorted((row for row in rows if row["run"] == BEST_OF_N_RUN and row.get("reward") is not None),
                       key=lambda row: row["kl"])
    if len(best_of_n) > 1:  # no training seed: its errors are over prompts, read with the normal quantile
        name = "best-of-N from SFT (analytic KL)"
        curve = [SeedMean(row["kl"], 0.0, row["reward"], row.get("reward_sem") or 0.0) for row in best_of_n]
        readings[name] = {kl: reward_at_kl(curve, kl, math.inf) for kl in kls}
        series[name] = [{"label": f"best-of-{int(best_of_n[-1]['step'])}", "kl_mean": best_of_n[-1]["kl"],
                         "reward_mean": best_of_n[-1]["reward"], "reward_se": best_of_n[-1].get("reward_sem") or 0.0,
                         "runs": ""}]
    header = " | ".join(f"reward at KL {kl:g} (95%)" for kl in kls)
    # every method ranked: at the largest matched KL that all of them reach
    middle = max((kl for kl in kls if all(readings[name][kl] is not None for name in readings)), default=kls[0])
    lines = [f"| rank at KL {middle:g} | method | {header} | most rewarded setting: KL, reward | "
             "training s / run | sampled / run |", "|---|---|" + "---|" * len(kls) + "---|---|---|"]
    order = sorted(series, key=lambda name: -(readings[name][middle] or {"reward": -1.0})["reward"])
    for rank, name in enumerate(order, start=1):
        cells = []
        for kl in kls:
            reading = readings[name][kl]
            if reading is None:
                cells.append("—")
                continue
            below = next((readings[other][kl] for other in sorted(
                (other for other in order if readings[other][kl] is not None),
                key=lambda other: -readings[other][kl]["reward"])
                if readings[other][kl]["reward"] < reading["reward"]), None)
            mark = " ≈" if below is not None and not separated(reading, below) else ""
            cells.append(f"{reading['reward']:.3f} ± {reading['se']:.3f}{mark}")
        best = max(series[name], key=lambda g: g["reward_mean"])
        seconds, sampled = training_cost(sweep, [run for g in series[name] for run in str(g["runs"]).split()])
        lines.append(f"| {rank if readings[name][middle] is not None else '—'} | {name} | {' | '.join(cells)} | "
                     f"{best['label']}: {best['kl_mean']:.1f}, {best['reward_mean']:.3f} ± {best['reward_se']:.3f} | "
                     f"{'—' if seconds is None else f'{seconds:.0f}'} | {sampled:,} |")
    ranked = {run for group in groups for run in str(group["runs"]).split()}
    single = sorted({series_label(row) for row in rows if row["is_final"] and row["run"] not in ranked
                     and compared(row) and not row.get("label_noise")})
    if single:
        lines += ["", f"Not ranked, one training seed: {', '.join(single)}."]
    intro = (f"Which method at what KL (`make results` from frontier_seeds.csv: each method's settings over training "
             f"seeds, read along its own curve from the SFT model at the matched KL, every KL and reward error carried "
             f"in; ± one standard error, ≈: its 95% interval overlaps the next method's at that KL, so the two are not "
             f"separated; —: the method's settings do not reach that KL). Ranked at KL {middle:g}, the largest of "
             f"these KLs that every method reaches:")
    return [intro, "", *lines, ""]


def before_and_after(before_file: Path, rows: list[dict]) -> list[str]:
    """The demo's final models before DPO trained on the sampled token ids (re-tokenized text, EOS on every
    completion; the figures of that commit, in docs/demo_before_sampled_ids.csv) beside today's."""
    if not before_file.is_file():
        return []
    lines = [line for line in before_file.read_text().splitlines() if not line.startswith("#")]
    before = {row["name"]: row for row in csv.DictReader(lines)}
    finals = {row["run"]: row for row in rows if row["is_final"]}
    table = ["### Training on the sampled token ids: before and after", "",
             "Before: DPO re-tokenized each sampled completion's text and appended EOS to every one (TRL's text "
             "path); after: DPO trains on the token ids that were sampled, EOS only where it was sampled. Same "
             f"configs and seeds ({BEFORE_SAMPLED_IDS} holds the figures of the earlier commit).", "",
             "| model | reward before → after | KL before → after | held-out accuracy before → after | "
             "win rate before → after |", "|---|---|---|---|---|"]
    for name, old in before.items():
        new = finals.get(name)
        if new is None:
            continue
        cells = [f"{float(old[key]):.{digits}f} → {new[key]:.{digits}f}" if old[key] and new.get(key) is not None
                 else "—" for key, digits in (("reward", 3), ("kl", 2), ("heldout_accuracy", 3), ("win_rate", 3))]
        table.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*table, ""]


def demo_section(root: Path, venv: Path) -> tuple[list[str], list[str]]:
    """(the docs section, the README block) of make demo and make study."""
    import yaml

    rows = read_frontier(root / "runs/tiny/eval/frontier.csv")
    if not rows:
        return [], []
    demo_runs = [entry.replace("=", "-").replace(",", "_")
                 for entry in yaml.safe_load((root / "configs/tiny/dpo.yaml").read_text())["sweep"]]
    steps, total = timing_lines(DEMO_STEPS, root / "runs/tiny/timings", venv, with_install=True)
    pairs = summary(root / "generations/tiny")
    timing = (f"`make demo`: {minutes(total)} in all" if total is not None else "`make demo`") + \
        (f" ({', '.join(steps)})" if steps else "")
    facts = []
    if pairs:
        facts.append(f"{pairs['pairs']:,} training pairs from {pairs['prompts']} prompts x "
                     f"{pairs['completions'] // pairs['prompts']} completions "
                     f"({pairs.get('heldout_pairs', 0)} held-out pairs of {pairs.get('heldout_prompts', 0)} other "
                     f"prompts); {1 - pairs['completions_ended_with_eos']:.0%} of the completions were cut at "
                     "max_new_tokens (no EOS)")
    sft = next(row for row in rows if row["run"] == SFT_RUN)
    facts.append(f"evaluation on {int(sft['num_prompts'])} held-out test prompts x "
                 f"{int(sft['num_samples'] // sft['num_prompts'])} samples; ± is the prompt-clustered standard error")
    spread = demo_spread(root / "docs" / DEMO_SPREAD)
    digits = {name: {figure: stats["decimals"] for figure, stats in figures.items()}
              for name, figures in spread.items()}
    demo_table = sentiment_table(rows, ["sft", *demo_runs], digits)
    before = before_and_after(root / "docs" / BEFORE_SAMPLED_IDS, rows)
    seeds_in_demo = sorted({int(row.get("seed") or 0) for row in rows if row["run"] in demo_runs})
    one_seed = (f"One training seed of each β (seed {seeds_in_demo[0]}): a single run, not a result; `make study` "
                "gives the spread over 3 seeds." if len(seeds_in_demo) == 1 else "")
    machines = []
    if spread:
        lines = [line for line in (root / "docs" / DEMO_SPREAD).read_text().splitlines() if not line.startswith("#")]
        configurations = sorted({row["configuration"] for row in csv.DictReader(lines)})
        machines = [f"On another machine the same commit gives other figures: floating-point sums in another order "
                    "change the last digits of the embedded classifier and the SFT model, sampling turns some of "
                    "them into other tokens, and the pairs are another draw; DPO on one set of pairs is the same on "
                    f"every machine, DPO on another draw is not. `make demo` on {len(configurations)} CPU "
                    f"configurations of one machine ({'; '.join(configurations)}: `{DEMO_SPREAD}`, written by "
                    "`python -m tools.demo_spread`): the mean, the range, and the 95% prediction interval of one more "
                    "run, mean ± t(n−1)·sd·√(1+1/n). The figures above are quoted to the decimals this spread "
                    "supports.", "", *spread_table(spread, rows, len(configurations)), ""]
    docs = ["## make demo", "", timing + ".", "", *[f"- {fact}" for fact in facts], "", *demo_table, "",
            *machines, *before]
    readme = [timing + ".", "", *demo_table, "", *([one_seed, ""] if one_seed else []), *machines]
    study_steps, study_total = timing_lines(STUDY_STEPS, root / "runs/tiny/timings", venv, with_install=False)
    study_wall = read_seconds(root / "runs/tiny/timings/study.seconds")  # the steps ran two at a time: their wall
    figures = root / "runs/tiny/eval"
    if any(row["run"] not in ("sft", "best-of-n", *demo_runs) for row in rows):
        if study_wall is not None:
            study_time = (f"After the demo, {minutes(study_wall)} more (the training steps two at a time, one core "
                          f"each, then the evaluation on two processes; each step's own wall time: "
                          f"{', '.join(study_steps)})")
        else:
            study_time = ((f"After the demo, {minutes(study_total)} more" if study_total is not None
                           else "After the demo") + (f" ({', '.join(study_steps)})" if study_steps else ""))
        methods_time = methods_timing(root / "runs/tiny/timings")
        if methods_time and study_wall is None:  # make methods alone: the study's steps it ran are in its own line
            study_time = ""
        title = "make study" if not methods_time else "make methods" if study_wall is None else \
            "make study and make methods"
        docs += [f"## {title}", "", " ".join(part for part in (study_time and study_time + ".", methods_time) if part)
                 + " Final models:", "", *sentiment_table(rows), ""]
        seeds = seeds_table(figures / "frontier_seeds.csv")
        if seeds:
            intro = ("Over training seeds (the same pairs; final models; ± is the standard error over seeds, sd their "
                     "spread; from frontier_seeds.csv):")
            docs += [intro, "", *seeds, ""]
            readme += [f"`{title}`, the settings trained with 3 seeds: " + intro[0].lower() + intro[1:], "",
                       *seeds, ""]
            claims = claims_against_the_dpo_curve(figures / "frontier_seeds.csv", rows)
            if claims:
                docs += [*claims, ""]
                readme += [*claims, ""]
            board = leaderboard(figures / "frontier_seeds.csv", rows, root / "runs/tiny/dpo")
            if board:
                docs += ["### The method leaderboard", "", *board]
                readme += [*([methods_time, ""] if methods_time else []), *board]
        reward_model = summary(root / "runs/tiny/reward_model")
        if "heldout_accuracy" in reward_model:
            docs += ["The reward model the RLOO \"reward model\" runs train against (`reward_model.py`, learned "
                     f"from the pairs): pairwise accuracy {reward_model['heldout_accuracy']:.3f} on the "
                     f"{reward_model['heldout_pairs']} held-out pairs.", ""]
        docs += ["![the study's frontier](study_frontier.png)", ""]
        copies = {"frontier.png": "study_frontier.png", "label_noise.png": "study_label_noise.png"}
        if (figures / "label_noise.png").is_file():
            docs += ["![the label-noise study](study_label_noise.png)", ""]
    else:  # the report's figure while it shows the demo's runs only
        copies = {"frontier.png": "demo_frontier.png"}
    for source, target in copies.items():
        if (figures / source).is_file():
            shutil.copyfile(figures / source, root / "docs" / target)
    return docs, readme


def chat_section(root: Path, venv: Path) -> tuple[list[str], list[str]]:
    rows = read_frontier(root / "runs/chat-tiny/eval/frontier.csv")
    if not rows:
        return [], []
    steps, total = timing_lines(CHAT_STEPS, root / "runs/chat-tiny/timings", venv, with_install=False)
    sft = summary(root / "runs/chat-tiny/sft")
    timing = (f"`make demo-chat` (after `make demo`'s install and assets): {minutes(total)}"
              if total is not None else "`make demo-chat`") + (f" ({', '.join(steps)})" if steps else "")
    sft_line = f"; the chat model trained {sft['global_step']} SFT steps" if sft else ""
    first = rows[0]
    lines = [timing + sft_line + f". {int(first['num_prompts'])} held-out conversations x "
             f"{int(first['num_samples'] // first['num_prompts'])} answers per model; the classifier's win rate is "
             "the offline judge; the judge columns run the LLM-judge code path with the tiny chat model as judge "
             "(its verdicts are mostly unparsable: it shows the path works, not a judgement).", "",
             *chat_table(rows), ""]
    return ["## make demo-chat", "", *lines], lines


def write_results(root: Path, venv: Path) -> Path:
    (root / "docs").mkdir(exist_ok=True)
    demo_docs, demo_readme = demo_section(root, venv)
    chat_docs, chat_readme = chat_section(root, venv)
    if not demo_docs and not chat_docs:
        raise PipelineError("no results yet: run make demo (and make demo-chat, make study) first")
    docs = root / "docs" / "results.md"
    docs.write_text("\n".join([
        "# Results of the offline demos", "",
        f"Written by `make results` on {date.today().isoformat()} from the files the demos left on a 2-core CPU "
        "without a GPU; do not edit by hand. Wall times are each step's first successful run.", "",
        *demo_docs, *chat_docs]))
    readme_path = root / "README.md"
    readme = readme_path.read_text()
    block = "\n".join([*demo_readme, *(["Chat demo: " + chat_readme[0], *chat_readme[1:]] if chat_readme else []),
                       "(Written by `make results`; more in [docs/results.md](docs/results.md).)", ""])
    if README_BLOCK.search(readme):
        readme_path.write_text(README_BLOCK.sub(lambda m: m.group(1) + block + m.group(2), readme))
    return docs


@dataclass
class ResultsArguments:
    """`python -m tools.results`: where the repository and its virtual environment are."""

    root: str = field(default=".", metadata={"help": "The repository (where runs/, docs/ and README.md are)."})
    venv: str = field(default=".venv", metadata={"help": "The virtual environment make created, under root."})


def main(args: ResultsArguments) -> None:
    print(write_results(Path(args.root), Path(args.root) / args.venv))


if __name__ == "__main__":
    run_script(main, [ResultsArguments])
