"""The evaluation report: frontier.csv, the plots and report.md in the eval folder, the same content in wandb.

Plots: the reward-vs-KL frontier (every run through its checkpoints, baselines, best-of-N), training curves of
the DPO runs from their metrics.jsonl, and reward / held-out accuracy against label noise when a noise study ran.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from .estimators import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, cluster_bootstrap, spread_over_seeds
from .methods import get_method, methods, series_label, series_of
from .metric_registry import metric_columns, seed_figures, summary_keys
from .runs import atomic_write_text, git_commit
from .samples import EvalStore
from .tracking import METRICS_FILE

FRONTIER_CSV = "frontier.csv"
FRONTIER_PNG = "frontier.png"
CURVES_PNG = "training_curves.png"
NOISE_PNG = "label_noise.png"
REPORT_MD = "report.md"
FRONTIER_SEEDS_CSV = "frontier_seeds.csv"
# What identifies a row; the method's own settings (`methods.Method.sweep_keys`: alpha, gamma) follow beta.
IDENTITY_COLUMNS = ["name", "run", "method", "beta", "loss_type", "label_smoothing", "label_noise", "seed", "setting",
                    "step", "is_final"]


def frontier_columns() -> list[str]:
    """frontier.csv's columns: the row's identity, its method's own settings, then every registered figure with its
    errors (`metric_registry`: `_sem` the analytic standard error clustered by prompt, `_se` a bootstrap over
    prompts)."""
    return [*IDENTITY_COLUMNS[:4], *method_setting_columns(), *IDENTITY_COLUMNS[4:], *metric_columns()]


def method_setting_columns() -> list[str]:
    """The methods' own settings (`methods.Method.sweep_keys`), each a column."""
    return list(dict.fromkeys(key for method in methods() for key in method.sweep_keys))


def frontier_seeds_columns() -> list[str]:
    return ["setting", "label", "method", "beta", *method_setting_columns(), "loss_type", "label_smoothing",
            "label_noise", "num_seeds", "seeds", "runs"] + [f"{figure}_{stat}" for figure in seed_figures()
                                                            for stat in ("mean", "sd", "se")]


BEST_OF_N_KL_NOTE = "best-of-N KL is the analytic log N − (N−1)/N, not measured"


def write_frontier_csv(rows: list[dict], path: Path, columns: list[str] | None = None) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns or frontier_columns(), extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def seed_groups(final_rows: list[dict]) -> list[dict]:
    """The final models grouped by setting (`measure.run_setting`: the sweep_run.json without name and seed), one
    record per setting trained with 2 or more seeds: for each figure averaged over seeds (`metric_registry`:
    reward, KL, held-out accuracy, win rates) its mean, sd and standard error
    over the seeds (`estimators.spread_over_seeds`), the number of seeds, the seeds and the runs."""
    groups: dict[str, list[dict]] = {}
    for row in final_rows:
        if row.get("setting") and row["run"] not in ("sft", "best-of-n"):
            groups.setdefault(row["setting"], []).append(row)
    records = []
    for setting, members in groups.items():
        if len(members) < 2:
            continue
        first = members[0]
        record = {"setting": setting, "label": series_label(first), "num_seeds": len(members),
                  "seeds": " ".join("default" if m.get("seed") is None else str(m["seed"]) for m in members),
                  "runs": " ".join(m["run"] for m in members),
                  **{key: first.get(key) for key in ("method", "beta", "loss_type", "label_smoothing", "label_noise",
                                                     *method_setting_columns())}}
        for figure in seed_figures():
            values = [m[figure] for m in members if m.get(figure) is not None]
            if len(values) == len(members):
                spread = spread_over_seeds(values)
                record.update({f"{figure}_{stat}": spread[stat] for stat in ("mean", "sd", "se")})
        records.append(record)
    return records


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> None:
    plt = _pyplot()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(temporary)
    plt.close(figure)
    temporary.replace(path)


def plot_style(row: dict) -> tuple[str, object]:
    """(marker, linestyle) of a run's series: its method's (`methods.Method`)."""
    method = get_method(row["method"])
    style = method.linestyle(row) if callable(method.linestyle) else method.linestyle
    return method.marker, style


# What the frontier plots against KL: the reward where there is one (a classifier), else the judge's win rate
# against SFT (final models only), else the held-out implicit-reward accuracy.
FRONTIER_METRICS = (("reward", "reward: mean P(POSITIVE)"), ("judge_win_rate", "judge win rate vs SFT (ties ½)"),
                    ("heldout_accuracy", "held-out implicit-reward accuracy"))


def frontier_metric(rows: list[dict]) -> tuple[str, str]:
    return next(((key, label) for key, label in FRONTIER_METRICS if any(row.get(key) is not None for row in rows)),
                FRONTIER_METRICS[0])


def kl_reach_note(rows: list[dict]) -> str:
    """A plain sentence for each online RL series (method and reward source) whose models stop short of DPO's KL range
    (their largest measured KL under 80% of DPO's), with the smallest KL coefficient and the most steps it was
    trained with: a comparison at higher KL would compare training budgets, not methods. Empty where none does."""
    def measured(row):
        return row.get("kl") is not None and not row.get("label_noise")

    dpo = max((row["kl"] for row in rows if get_method(row.get("method")).on_the_dpo_curve(row) and measured(row)),
              default=None)
    series: dict[tuple, list[dict]] = {}
    for row in rows:
        if get_method(row.get("method")).family == "online RL" and measured(row):
            series.setdefault((row["method"], row.get("loss_type")), []).append(row)
    notes = []
    for members in series.values():
        reach = max(row["kl"] for row in members)
        if dpo is None or reach >= 0.8 * dpo:
            continue
        name = series_label(members[0]).rsplit(" β=", 1)[0]
        betas = [row["beta"] for row in members if row.get("beta") is not None]
        budget = (f" (KL coefficients down to {min(betas):g}, up to {int(max(row['step'] for row in members))} steps)"
                  if betas else "")
        notes.append(f"{name} reaches KL {reach:.1f} nats at most{budget}, DPO {dpo:.1f}: above KL {reach:.1f} "
                     "there is no point of it to compare with")
    return "; ".join(notes)


# Past this many series one panel is unreadable: one panel per method family, DPO's curve in each.
MOST_SERIES_IN_ONE_PANEL = 8


def plot_frontier(rows: list[dict], path: Path, title: str) -> None:
    """Reward (`frontier_metric`) against KL: one line per trained run through its checkpoints (in step order, large
    point = final model), best-of-N as a dashed black curve, SFT as a star at KL 0. A setting trained with several
    seeds (`seed_groups`) is drawn as its runs' faint lines and their final models' mean, with error bars of one
    standard error over the seeds in KL and in the metric. Label-noise runs have a plot of their own. With more than
    `MOST_SERIES_IN_ONE_PANEL` series, one panel per method family (`methods.Method.family`), on shared axes, each
    with DPO's seed means as a grey line to compare with."""
    plt = _pyplot()
    metric, metric_label = frontier_metric(rows)
    rows = [row for row in rows if row.get(metric) is not None or row["run"] == "sft"]
    trained = [row for row in rows if row["run"] not in ("sft", "best-of-n") and not row.get("label_noise")]
    families = list(dict.fromkeys(get_method(row["method"]).family for row in sorted(
        trained, key=lambda row: get_method(row["method"]).order)))
    if len({series_of(row) for row in trained}) <= MOST_SERIES_IN_ONE_PANEL or len(families) < 2:
        figure, axes = plt.subplots(figsize=(8, 5), dpi=120)
        draw_frontier(axes, rows, trained, metric, metric_label, title)
        _save(figure, path)
        return
    columns = min(3, len(families))
    panels = (len(families) + columns - 1) // columns
    figure, grid = plt.subplots(panels, columns, figsize=(5.2 * columns, 4.2 * panels), dpi=110, sharex=True,
                                sharey=True, squeeze=False)
    dpo = [group for group in seed_groups([row for row in trained if row["is_final"]])
           if get_method(group["method"]).on_the_dpo_curve(group) and group.get(f"{metric}_mean") is not None]
    sft = next((row for row in rows if row["run"] == "sft" and row.get(metric) is not None), None)
    for axes, family in zip(grid.flat, families):
        if dpo and family != "reference":
            curve = sorted(dpo, key=lambda group: group["kl_mean"])
            axes.plot([0.0, *(g["kl_mean"] for g in curve)],
                      [sft[metric] if sft else curve[0][f"{metric}_mean"], *(g[f"{metric}_mean"] for g in curve)],
                      color="gray", linewidth=2.5, alpha=0.5, label="DPO (seed means)")
        members = [row for row in trained if get_method(row["method"]).family == family]
        draw_frontier(axes, [row for row in rows if row["run"] in ("sft", "best-of-n") or row in members], members,
                      metric, metric_label, f"{family}", legend_size=6)
    for axes in list(grid.flat)[len(families):]:
        axes.axis("off")
    figure.suptitle(title)
    _save(figure, path)


def draw_frontier(axes, rows: list[dict], trained: list[dict], metric: str, metric_label: str, title: str,
                  legend_size: float = 7) -> None:
    """One panel of `plot_frontier`: the `trained` runs, best-of-N and SFT among `rows`."""
    groups = {group["setting"]: group for group in seed_groups([row for row in trained if row["is_final"]])}
    colours = {}
    for run in dict.fromkeys(row["run"] for row in trained):
        points = sorted((row for row in trained if row["run"] == run), key=lambda row: row["step"])
        marker, style = plot_style(points[0])
        group = groups.get(points[0].get("setting"))
        if group is not None:
            colour = colours.get(group["setting"])
            line, = axes.plot([p["kl"] for p in points], [p[metric] for p in points], marker=marker, markersize=3,
                              linestyle=style, alpha=0.3, color=colour)
            if colour is None:  # the setting's first run: its colour, and the seed mean drawn once
                colours[group["setting"]] = line.get_color()
                mean_kl, mean_metric = group.get("kl_mean"), group.get(f"{metric}_mean")
                if mean_kl is not None and mean_metric is not None:
                    axes.errorbar([mean_kl], [mean_metric], xerr=[group["kl_se"]],
                                  yerr=[group.get(f"{metric}_se") or 0.0], marker=marker, markersize=9,
                                  color=line.get_color(), capsize=3,
                                  label=f"{group['label']} (mean of {group['num_seeds']} seeds ± s.e.)")
            continue
        line, = axes.plot([p["kl"] for p in points], [p[metric] for p in points], marker=marker, markersize=4,
                          linestyle=style, label=series_label(points[0]))
        final = [p for p in points if p["is_final"]]
        axes.plot([p["kl"] for p in final], [p[metric] for p in final], marker=marker, markersize=9,
                  linestyle="none", color=line.get_color())
        if metric == "reward":
            axes.errorbar([p["kl"] for p in points], [p["reward"] for p in points],
                          yerr=[p["reward_sem"] for p in points], fmt="none", ecolor="gray", alpha=0.4)
    best_of_n = sorted((row for row in rows if row["run"] == "best-of-n"), key=lambda row: row["step"])
    if best_of_n:
        axes.plot([r["kl"] for r in best_of_n], [r["reward"] for r in best_of_n], color="black", linestyle="--",
                  marker="x", label=f"best-of-N from SFT (analytic KL{best_of_n_prompts_note(rows)})")
        for r in best_of_n:
            axes.annotate(f"N={r['step']}", (r["kl"], r["reward"]), textcoords="offset points", xytext=(4, -10),
                          fontsize=7)
    sft_level = {"reward": None, "judge_win_rate": 0.5, "heldout_accuracy": None}[metric]
    for row in rows:
        if row["run"] == "sft" and (row.get(metric) is not None or sft_level is not None):
            axes.plot([0.0], [row.get(metric, sft_level) if row.get(metric) is not None else sft_level], marker="*",
                      markersize=14, color="black", linestyle="none", label="SFT (reference)")
    axes.set_xlabel("KL(π || π_SFT), nats per sequence")
    axes.set_ylabel(metric_label)
    axes.set_title(title)
    note = "points: checkpoints in training order; large point: final model"
    if best_of_n:
        note += f"; {BEST_OF_N_KL_NOTE}"
    if kl_reach_note(rows):
        note += "\n" + kl_reach_note(rows)
    axes.text(0.99, 0.02, note, ha="right", va="bottom", fontsize=6.5, color="gray", transform=axes.transAxes)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=legend_size, loc="center right")


def best_of_n_prompts_note(rows: list[dict]) -> str:
    """"; first 32 of the 128 prompts" when best-of-N was measured on fewer prompts than the models beside it."""
    measured = [row.get("num_prompts") for row in rows if row["run"] == "best-of-n"]
    others = [row.get("num_prompts") for row in rows if row["run"] != "best-of-n"]
    if measured and others and measured[0] and max(others) and measured[0] < max(others):
        return f"; first {measured[0]} of the {max(others)} prompts"
    return ""


def read_training_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


_CURVES = [("loss", "train loss"), ("rewards/margins", "implicit reward margin (chosen − rejected)"),
           ("rewards/accuracies", "implicit reward accuracy (train batches)")]


def plot_training_curves(final_rows: list[dict], path: Path) -> bool:
    """Loss, reward margin and reward accuracy against step for each preference-trained run (from its logged
    metrics). Returns False when no run logged them."""
    runs = [(series_label(row), read_training_metrics(row["path"])) for row in final_rows
            if get_method(row["method"]).family in ("reference", "reference-free") and not row.get("label_noise")]
    runs = [(label, [m for m in metrics if "rewards/margins" in m]) for label, metrics in runs]
    runs = [(label, metrics) for label, metrics in runs if metrics]
    if not runs:
        return False
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(_CURVES), figsize=(13, 3.8), dpi=110)
    for ax, (key, title) in zip(axes, _CURVES):
        for label, metrics in runs:
            ax.plot([m["step"] for m in metrics if key in m], [m[key] for m in metrics if key in m], label=label)
        ax.set_title(title, fontsize=9)
        if key == "loss":
            ax.set_yscale("log")  # IPO's squared loss is on another scale than the logistic losses
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    _save(figure, path)
    return True


def noise_study(final_rows: list[dict]) -> list[dict]:
    """The final models of a label-noise study: for each run setting that was trained with flipped labels, its
    clean run (noise 0) and its noisy runs, ordered by setting and noise level."""
    noisy = [row for row in final_rows if row.get("label_noise")]
    settings = {(row["method"], row["loss_type"], row["beta"], row["label_smoothing"]) for row in noisy}
    study = [row for row in final_rows
             if (row["method"], row["loss_type"], row["beta"], row["label_smoothing"]) in settings]
    return sorted(study, key=lambda row: (row["loss_type"], row["beta"] or 0.0, row["label_noise"]))


def plot_label_noise(study: list[dict], path: Path) -> None:
    """Final reward and held-out accuracy against the share of flipped training labels, one line per setting."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    for setting in dict.fromkeys(series_label({**row, "label_noise": 0}) for row in study):
        points = [row for row in study if series_label({**row, "label_noise": 0}) == setting]
        axes[0].plot([p["label_noise"] for p in points], [p["reward"] for p in points], marker="o", label=setting)
        accuracy = [(p["label_noise"], p.get("heldout_accuracy")) for p in points]
        accuracy = [(x, y) for x, y in accuracy if y is not None]
        if accuracy:
            axes[1].plot(*zip(*accuracy), marker="o", label=setting)
    axes[0].set_ylabel("reward: mean P(POSITIVE)")
    axes[1].set_ylabel("held-out implicit-reward accuracy")
    for ax in axes:
        ax.set_xlabel("share of training pairs with flipped labels")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    _save(figure, path)


def _number(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _cell(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _plus_minus(value, error, digits: int = 3) -> str:
    """"0.677 ± 0.031"; the value alone where it has no error (a row measured before errors were kept)."""
    if value is None:
        return "—"
    return f"{value:.{digits}f}" + ("" if error is None else f" ± {error:.{digits}f}")


def _win_cell(row: dict) -> str:
    if row.get("win_rate") is None:
        return "—"
    return f"{_plus_minus(row['win_rate'], row.get('win_rate_se'))} ({row['wins']}/{row['losses']}/{row['ties']})"


def _judge_cell(row: dict) -> str:
    if row.get("judge_wins") is None:
        return "—"
    return (f"{_plus_minus(row['judge_win_rate'], row.get('judge_win_rate_se'))} / "
            f"{_plus_minus(row.get('judge_win_rate_strict'), row.get('judge_win_rate_strict_se'))} "
            f"({row['judge_wins']}/{row['judge_losses']}/{row.get('judge_ties', 0)}; "
            f"consistency {_plus_minus(row.get('judge_consistency'), row.get('judge_consistency_se'), 2)}; "
            f"{row['judge_unparsable_share']:.0%} unparsable)")


def _reward_cell(row: dict) -> str:
    return "—" if row.get("reward") is None else f"{row['reward']:.3f} ± {row['reward_sem']:.3f}"


def final_models_table(final_rows: list[dict], with_judge: bool) -> str:
    """One row per final model. Every win rate sits beside the mean response length: judges favour longer answers."""
    header = ["model", "run", "reward ± s.e.", "KL ± s.e.", "held-out accuracy ± s.e.", "held-out margin (β·Δ) ± s.e.",
              "win rate vs SFT (W/L/T)"] + (["judge win rate vs SFT, ties ½ / ties 0 (W/L/T; consistency)"]
                                            if with_judge else []) \
        + ["mean response tokens"]
    body = []
    for row in final_rows:
        cells = [series_label(row), f"`{row['name']}`", _reward_cell(row), f"{row['kl']:.2f} ± {row['kl_sem']:.2f}",
                 _plus_minus(row.get("heldout_accuracy"), row.get("heldout_accuracy_se")),
                 _plus_minus(row.get("heldout_reward_margin"), row.get("heldout_reward_margin_se")), _win_cell(row)]
        length = row.get("mean_response_tokens")
        body.append(cells + ([_judge_cell(row)] if with_judge else []) + ["—" if length is None else f"{length:.1f}"])
    return _table(header, body)


def paired_accuracy_difference(better: list[dict], worse: list[dict]) -> dict | None:
    """The held-out accuracy of one model minus another's, on the same pairs, with its 95% interval from a paired
    bootstrap over prompts (`estimators.cluster_bootstrap` of the per-pair differences of correctness, 1 where the
    log-ratio margin is > 0); None when the two were not measured on the same pairs."""
    if [r["prompt"] for r in better] != [r["prompt"] for r in worse]:
        return None
    differences = [float(a["logratio_margin"] > 0) - float(b["logratio_margin"] > 0) for a, b in zip(better, worse)]
    return cluster_bootstrap(differences, [r["prompt"] for r in better])


def ranking_table(final_rows: list[dict], store: EvalStore | None = None) -> str:
    """The final models by held-out accuracy, each against the next below it: the difference with its 95% interval
    from a paired bootstrap over prompts (`paired_accuracy_difference`), "≈ within noise" where it holds 0."""
    ranked = sorted((row for row in final_rows if row.get("heldout_accuracy") is not None),
                    key=lambda row: (-row["heldout_accuracy"], -row["heldout_logratio_margin"]))
    pairs = {row["name"]: store.read_heldout(row["name"]) if store else None for row in ranked}
    body = []
    for rank, row in enumerate(ranked, start=1):
        versus = "—"
        below = ranked[rank] if rank < len(ranked) else None
        if below is not None and pairs[row["name"]] and pairs[below["name"]]:
            difference = paired_accuracy_difference(pairs[row["name"]], pairs[below["name"]])
            if difference is not None:
                noise = " ≈ within noise" if difference["low"] <= 0 <= difference["high"] else ""
                versus = (f"{difference['mean']:+.3f} [{difference['low']:+.3f}, {difference['high']:+.3f}]"
                          f"{noise}")
        body.append([str(rank), series_label(row), _plus_minus(row["heldout_accuracy"], row.get("heldout_accuracy_se")),
                     _plus_minus(row["heldout_logratio_margin"], row.get("heldout_logratio_margin_se"), 2),
                     _number(row.get("heldout_reward_margin")), versus])
    return _table(["rank", "model", "accuracy ± s.e.", "log-ratio margin Δ (nats) ± s.e.", "reward margin β·Δ",
                   "accuracy minus the next's [95% interval]"], body)


def seeds_table(groups: list[dict]) -> str:
    """Each setting trained with several seeds: the mean ± sd over its seeds of each figure, and n."""
    def cell(group, figure, digits=3):
        mean = group.get(f"{figure}_mean")
        return "—" if mean is None else f"{mean:.{digits}f} ± {group[f'{figure}_sd']:.{digits}f}"

    return _table(["setting", "seeds (n)", "reward mean ± sd", "KL mean ± sd", "held-out accuracy mean ± sd",
                   "win rate mean ± sd", "runs"],
                  [[g["label"], f"{g['seeds']} ({g['num_seeds']})", cell(g, "reward"), cell(g, "kl", 2),
                    cell(g, "heldout_accuracy"), cell(g, "win_rate"), " ".join(f"`{r}`" for r in g["runs"].split())]
                   for g in groups])


def sample_generations(final_rows: list[dict], store: EvalStore, num_prompts: int) -> list[dict]:
    """Sample 0 of the first `num_prompts` prompts for the SFT model and each final model, with rewards."""
    models = [row for row in final_rows if row["run"] != "best-of-n" and not row.get("label_noise")]
    samples = {row["name"]: store.read_samples(row["name"]) for row in models}
    prompt_keys = sorted(key for key in samples["sft"] if key[1] == 0)[:num_prompts]
    records = []
    for key in prompt_keys:
        for row in models:
            sample = samples[row["name"]].get(key)
            if sample:
                records.append({"prompt_index": key[0], "prompt": sample["prompt"], "model": series_label(row),
                                "completion": sample["completion"], "reward": sample.get("reward")})
    return records


def write_report(rows: list[dict], store: EvalStore, args, task, num_prompts: int, heldout) -> Path:
    """frontier.csv, frontier.png, training_curves.png, label_noise.png (if a noise study ran) and report.md, from
    the stored results (`rows`, and the samples in `store`); `task` says how its prompts and reward are described."""
    out = store.out
    final_rows = [row for row in rows if row["is_final"] and row["run"] != "best-of-n"]
    best_of_n = [row for row in rows if row["run"] == "best-of-n"]
    write_frontier_csv(rows, out / FRONTIER_CSV)
    groups = seed_groups(final_rows)
    if groups:
        write_frontier_csv(groups, out / FRONTIER_SEEDS_CSV, frontier_seeds_columns())
    what = task.prompt_noun
    plot_frontier(rows, out / FRONTIER_PNG, f"{frontier_metric(rows)[1].split(':')[0].capitalize()} vs KL on "
                                            f"{num_prompts} held-out {what}")
    has_curves = plot_training_curves(final_rows, out / CURVES_PNG)
    study = noise_study(final_rows)
    if study:
        plot_label_noise(study, out / NOISE_PNG)
    samples = sample_generations(final_rows, store, args.report_prompts)
    with_judge = any(row.get("judge_wins") is not None for row in final_rows)

    command = " ".join([Path(sys.argv[0]).name or "eval.py", *sys.argv[1:]])
    lines = [
        "# DPO evaluation report", "",
        f"Written by `python {command}` on {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} "
        f"(git commit {git_commit() or 'unknown'}).", "",
        f"- Prompts: {task.describe_prompts(args, num_prompts)}; "
        f"{args.samples_per_prompt} samples per prompt and model, at most {args.max_new_tokens} new tokens, "
        f"temperature {args.temperature:g}, no top-k/top-p.",
        (f"- Reward: {task.describe_reward(args)}. " if task.has_reward(args) else
         "- Reward: none (no classifier); models are compared by held-out accuracy and the judge. ")
        + f"KL: exact sequence-level KL(π || π_SFT) of each sample, averaged; π_SFT = `{args.sft_model_path}`.",
        "- Held-out pairs: "
        + (f"{len(heldout)} pairs of `{heldout.path}`, made like the training pairs from prompts no model trained on."
           if heldout else "none (set heldout_pairs_file)."),
        "", f"## {frontier_metric(rows)[1].split(':')[0].capitalize()} vs KL frontier", "",
        f"![frontier]({FRONTIER_PNG})", "",
        "Each line is one training run through its saved checkpoints; the large point is its final model. "
        + (f"The black dashed curve is best-of-N sampling from the SFT model; {BEST_OF_N_KL_NOTE}"
           f"{best_of_n_prompts_note(rows).replace('; first', ', measured on the first')}."
           if best_of_n else "")
        + " ± is a standard error clustered by prompt (the samples of one prompt are not independent); a setting "
          "trained with several seeds is drawn as the mean of its final models, ± one standard error over seeds."
        + (f" Note: {kl_reach_note(rows)}." if kl_reach_note(rows) else ""), "",
        "## Final models", "", final_models_table(final_rows, with_judge), "",
        "Held-out accuracy: share of held-out pairs whose chosen completion gets the higher implicit reward "
        "β·log(π/π_SFT) (ties count as wrong). Margin: mean β·Δ, Δ the chosen-minus-rejected log-ratio. "
        f"Win rate: each sample against an SFT sample of the same prompt drawn independently of it (random numbers "
        f"of its own), judged by the classifier; wins + ties/2 over all (a tie: rewards within "
        f"{args.win_rate_tie_tolerance:g}); the SFT row's own, against those independent samples, is 0.5 within its "
        "error. "
        "± beside reward and KL: the analytic standard error clustered by prompt; beside accuracy, margin and win "
        f"rates: the standard error of a bootstrap over prompts ({BOOTSTRAP_RESAMPLES} resamples, seed "
        f"{BOOTSTRAP_SEED}).", "",
    ]
    if groups:
        lines += ["## Across training seeds", "", seeds_table(groups), "",
                  "Settings trained with several seeds (runs whose sweep_run.json differ only by the seed): the mean "
                  "and the sample standard deviation over seeds of their final models' figures; standard errors over "
                  f"seeds in [{FRONTIER_SEEDS_CSV}]({FRONTIER_SEEDS_CSV}). A difference between settings smaller "
                  "than their spread over seeds is not a finding.", ""]
    if with_judge:
        lines += [f"LLM judge: `{args.judge_model_path}`, greedy decoding, every comparison judged twice, the "
                  "policy's completion shown as A and then as B; two verdicts that disagree count as a tie, so a "
                  "judge's preference for a position gives ties, not wins. Consistency: the share of comparisons "
                  "whose two verdicts agree. Over the parsable comparisons two win rates, ties counted as half a win "
                  "and as no win (wins / (wins + losses + ties), the formula of published reproductions); a "
                  "comparison with an unparsable verdict in either order is unparsable (raw verdicts of both "
                  "orders in judge/). The mean response length stands beside every win rate: judges favour longer "
                  "answers.", ""]
    if heldout:
        lines += ["## Ranked by held-out implicit-reward accuracy", "", ranking_table(final_rows, store), "",
                  "Each model against the next below it, on the same held-out pairs: the difference of accuracy with "
                  f"the 95% interval of a paired bootstrap over prompts ({BOOTSTRAP_RESAMPLES} resamples); "
                  "\"≈ within noise\" where the interval holds 0, so the order of the two is not established.", ""]
    if best_of_n:
        lines += ["## Best-of-N from the SFT model", "",
                  _table(["N", "reward ± s.e.", "KL (analytic log N − (N−1)/N)"],
                         [[str(r["step"]), f"{r['reward']:.3f} ± {r['reward_sem']:.3f}", f"{r['kl']:.3f}"]
                          for r in best_of_n]), "",
                  f"Reward: unbiased estimate of the expected best of N among {max(r['step'] for r in best_of_n)} "
                  f"samples per prompt, over {best_of_n[0]['num_samples'] // max(r['step'] for r in best_of_n)} "
                  "prompts (± over prompts).", ""]
    if study:
        lines += ["## Label noise", "", f"![label noise]({NOISE_PNG})", "",
                  _table(["run", "flipped labels", "reward ± s.e.", "KL", "held-out accuracy", "win rate vs SFT"],
                         [[series_label({**r, "label_noise": 0}), f"{r['label_noise']:.0%}",
                           f"{r['reward']:.3f} ± {r['reward_sem']:.3f}", f"{r['kl']:.2f}",
                           _plus_minus(r.get("heldout_accuracy"), r.get("heldout_accuracy_se")), _win_cell(r)]
                          for r in study]), ""]
    if has_curves:
        lines += ["## Training curves", "", f"![training curves]({CURVES_PNG})", "",
                  "From each run's metrics.jsonl (TRL's logged loss and implicit rewards on its training batches).", ""]
    if samples:
        lines += ["## Sample generations", "",
                  "Sample 0 of the first held-out prompts for every model (label-noise runs left out).", ""]
        for prompt_index in dict.fromkeys(s["prompt_index"] for s in samples):
            group = [s for s in samples if s["prompt_index"] == prompt_index]
            lines += [f"**Prompt {prompt_index}:** {_cell(group[0]['prompt'])}", "",
                      _table(["model", "completion", "reward"],
                             [[s["model"], _cell(s["completion"]), _number(s["reward"])] for s in group]), ""]
    lines += ["## Every evaluated model", "", f"All checkpoints are in [{FRONTIER_CSV}]({FRONTIER_CSV}); "
              "per-sample completions, rewards and KL in samples/.", ""]
    atomic_write_text(out / REPORT_MD, "\n".join(lines))
    if args.report_to == "wandb":
        _log_report_to_wandb(rows, final_rows, study, samples, out, args, groups)
    return out / REPORT_MD


def _log_report_to_wandb(rows, final_rows, study, samples, out: Path, args, groups=()) -> None:
    """Everything the report shows, as wandb tables and images, plus the report itself as an artifact."""
    import wandb

    if wandb.run is None:  # eval.py starts the run before it evaluates (its figures are logged live)
        return

    def table(records: list[dict], columns: list[str]):
        return wandb.Table(columns=columns, data=[[record.get(c) for c in columns] for record in records])

    logged = {"frontier/table": table(rows, frontier_columns()),
              "frontier/final_models": table([{**r, "label": series_label(r)} for r in final_rows],
                                             ["label", *frontier_columns()]),
              "frontier/plot": wandb.Image(str(out / FRONTIER_PNG))}
    if (out / CURVES_PNG).is_file():
        logged["training/curves"] = wandb.Image(str(out / CURVES_PNG))
    if study:
        logged["label_noise/table"] = table(study, frontier_columns())
        logged["label_noise/plot"] = wandb.Image(str(out / NOISE_PNG))
    if groups:
        logged["frontier/seeds"] = table(list(groups), frontier_seeds_columns())
    if samples:
        logged["samples/table"] = table(samples, ["prompt_index", "prompt", "model", "completion", "reward"])
    wandb.log(logged)
    for row in final_rows:
        for key in summary_keys():
            if row.get(key) is not None:
                wandb.run.summary[f"{row['run']}/{key}"] = row[key]
    artifact = wandb.Artifact("eval-report", type="report")
    for name in (REPORT_MD, FRONTIER_CSV, FRONTIER_SEEDS_CSV, FRONTIER_PNG, CURVES_PNG, NOISE_PNG):
        if (out / name).is_file():
            artifact.add_file(str(out / name))
    wandb.log_artifact(artifact)
