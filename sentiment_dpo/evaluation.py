"""The reward-vs-KL frontier (DPO paper, Figure 2 left): every model sampled on the same held-out prefixes.

For the SFT model and each saved DPO checkpoint: reward = mean P(POSITIVE) of its sampled completions, and
KL = mean over those samples of the exact sequence-level KL to the SFT model (`metrics.sequence_kl`).
Results per model are cached under `output_dir/models/`, so a later run evaluates only new checkpoints.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .cli import PipelineError, require_source
from .configs import EvalArguments
from .data import build_prompts, load_reviews
from .generation import completion_logits, iter_samples
from .metrics import mean_and_standard_error, sequence_kl
from .models import SentimentClassifier, default_device, load_causal_lm, load_tokenizer, resolve_dtype
from .runs import COMPLETE_FILE, RunFolder, atomic_write_json, atomic_write_text, config_fingerprint, write_jsonl
from .tracking import finish_wandb_run, start_wandb_run
from .training import SWEEP_RUN_FILE

logger = logging.getLogger(__name__)

FRONTIER_CSV = "frontier.csv"
FRONTIER_PNG = "frontier.png"
FRONTIER_COLUMNS = ["name", "run", "beta", "loss_type", "step", "is_final", "reward", "reward_sem", "kl", "kl_sem",
                    "num_samples"]


@dataclass(frozen=True)
class ModelToEvaluate:
    name: str
    path: str
    run: str
    beta: float | None
    loss_type: str
    step: int
    is_final: bool


def discover_models(sft_model_path: str, dpo_output_dir: str | None, include_checkpoints: bool) -> list[ModelToEvaluate]:
    """The SFT model, then every finished DPO run of the sweep folder: its checkpoints and its final model."""
    models = [ModelToEvaluate("sft", sft_model_path, "sft", None, "sft", 0, True)]
    if not dpo_output_dir:
        return models
    root = Path(dpo_output_dir)
    if not root.is_dir():
        raise PipelineError(f"dpo_output_dir: {root} does not exist")
    runs = []
    for run_dir in sorted(path for path in root.iterdir() if (path / SWEEP_RUN_FILE).is_file()):
        if not (run_dir / COMPLETE_FILE).is_file():
            logger.warning("Skipping %s: its training has not finished (rerun dpo.py to finish it)", run_dir)
            continue
        info = json.loads((run_dir / SWEEP_RUN_FILE).read_text())
        final_step = json.loads((run_dir / COMPLETE_FILE).read_text())["summary"]["global_step"]
        loss_type = ",".join(info.get("loss_type") or ["sigmoid"])
        entries = []
        if include_checkpoints:
            for checkpoint in run_dir.glob("checkpoint-*"):
                step = int(checkpoint.name.split("-")[-1])
                if step != final_step and (checkpoint / "config.json").is_file():
                    entries.append(ModelToEvaluate(f"{info['name']}/step-{step}", str(checkpoint), info["name"],
                                                   info["beta"], loss_type, step, False))
        entries.append(ModelToEvaluate(f"{info['name']}/step-{final_step}", str(run_dir), info["name"], info["beta"],
                                       loss_type, final_step, True))
        runs.append(sorted(entries, key=lambda entry: entry.step))
    if not runs:
        raise PipelineError(f"dpo_output_dir: {root} holds no finished DPO run")
    runs.sort(key=lambda entries: (entries[0].loss_type, entries[0].beta))
    return models + [entry for entries in runs for entry in entries]


def _model_signature(path: str) -> str:
    """Changes when the weights at `path` change (a retrained model at the same path is evaluated again)."""
    weights = sorted(Path(path).glob("*.safetensors")) + sorted(Path(path).glob("*.bin"))
    return ";".join(f"{w.name}:{w.stat().st_size}:{w.stat().st_mtime_ns}" for w in weights) or path


@torch.no_grad()
def evaluate_policy(policy, reference, tokenizer, classifier: SentimentClassifier, prompts, args: EvalArguments,
                    is_reference: bool) -> tuple[dict, list[dict]]:
    """Sample from `policy`, score the samples, and measure their sequence KL to `reference`.

    Returns (summary, samples): summary has reward, reward_sem, kl, kl_sem, num_samples; each sample record has
    the prompt, the completion (text and token ids), its reward and its KL.
    """
    samples = []
    for batch in iter_samples(policy, tokenizer, [p.prompt for p in prompts], args.samples_per_prompt,
                              args.max_new_tokens, args.temperature, args.generation_batch_size, args.seed):
        kls = []
        for start in range(0, len(batch.item_indices), args.kl_batch_size):
            rows = slice(start, start + args.kl_batch_size)
            if is_reference:
                kls.append(torch.zeros(len(batch.item_indices[rows])))
                continue
            kls.append(sequence_kl(completion_logits(policy, batch, rows), completion_logits(reference, batch, rows),
                                   batch.completion_mask[rows], args.temperature).cpu())
        for item, token_ids, kl in zip(batch.item_indices, batch.completion_token_ids(), torch.cat(kls).tolist()):
            prompt = prompts[item // args.samples_per_prompt]
            samples.append({"prompt_index": prompt.prompt_index, "prompt": prompt.prompt,
                            "completion": tokenizer.decode(token_ids, skip_special_tokens=True),
                            "completion_token_ids": token_ids, "kl": kl})
    texts = [(s["prompt"] if args.score_prompt else "") + s["completion"] for s in samples]
    for sample, reward in zip(samples, classifier.score(texts)):
        sample["reward"] = reward
    reward, reward_sem = mean_and_standard_error([s["reward"] for s in samples])
    kl, kl_sem = mean_and_standard_error([s["kl"] for s in samples])
    summary = {"reward": reward, "reward_sem": reward_sem, "kl": kl, "kl_sem": kl_sem, "num_samples": len(samples)}
    return summary, samples


def write_frontier_csv(rows: list[dict], path: Path) -> None:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FRONTIER_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def plot_frontier(rows: list[dict], path: Path, title: str) -> None:
    """Reward against KL: one line per DPO run through its checkpoints (in step order), SFT as a star at KL 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    for run in dict.fromkeys(row["run"] for row in rows if row["run"] != "sft"):
        points = sorted((row for row in rows if row["run"] == run), key=lambda row: row["step"])
        label = f"DPO β={points[0]['beta']:g}"
        if points[0]["loss_type"] != "sigmoid":
            label += f" ({points[0]['loss_type']})"
        line, = axes.plot([p["kl"] for p in points], [p["reward"] for p in points], marker="o", markersize=4,
                          label=label)
        final = [p for p in points if p["is_final"]]
        axes.plot([p["kl"] for p in final], [p["reward"] for p in final], marker="o", markersize=9,
                  linestyle="none", color=line.get_color())
        axes.errorbar([p["kl"] for p in points], [p["reward"] for p in points],
                      yerr=[p["reward_sem"] for p in points], fmt="none", ecolor="gray", alpha=0.4)
    for row in rows:
        if row["run"] == "sft":
            axes.plot([0.0], [row["reward"]], marker="*", markersize=14, color="black", linestyle="none",
                      label="SFT (reference)")
    axes.set_xlabel("KL(π || π_SFT), nats per sequence")
    axes.set_ylabel("reward: mean P(POSITIVE)")
    axes.set_title(title)
    axes.text(0.99, 0.02, "points: checkpoints in training order; large point: final model", ha="right",
              va="bottom", fontsize=7, color="gray", transform=axes.transAxes)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(temporary)
    plt.close(figure)
    temporary.replace(path)


def _safe_name(name: str) -> str:
    return name.replace("/", "__")


def evaluate_frontier(args: EvalArguments) -> Path:
    """Evaluate every model not yet evaluated with these settings, then write frontier.csv and frontier.png."""
    require_source(args.dataset_name, "dataset", "dataset_name")
    require_source(args.classifier_name_or_path, "classifier", "classifier_name_or_path")
    require_source(args.sft_model_path, "SFT model", "sft_model_path")
    out = Path(args.output_dir)
    settings_hash = config_fingerprint(args)
    folder = RunFolder(out, settings_hash, "eval")
    folder.claim({"eval": args}, overwrite=args.overwrite)  # never "complete": new checkpoints may come
    models = discover_models(args.sft_model_path, args.dpo_output_dir, args.include_checkpoints)

    device = default_device()
    dtype = resolve_dtype(args.dtype, device)
    tokenizer = load_tokenizer(args.sft_model_path, "sft_model_path", args.trust_remote_code)
    reviews = load_reviews(args.dataset_name, args.dataset_split, args.dataset_config, args.text_column,
                           args.label_column)
    prompts = build_prompts(reviews, tokenizer, args.num_prompts, args.min_prefix_tokens, args.max_prefix_tokens,
                            args.seed)
    logger.info("Evaluating %d models on %d held-out prompts x %d samples", len(models), len(prompts),
                args.samples_per_prompt)
    reference = classifier = None
    rows = []
    for model in models:
        result_path = out / "models" / f"{_safe_name(model.name)}.json"
        signature = _model_signature(model.path)
        if result_path.is_file() and not args.overwrite:
            cached = json.loads(result_path.read_text())
            if cached.get("settings_hash") == settings_hash and cached.get("model_signature") == signature:
                logger.info("[%s] evaluated already: reward %.3f, KL %.2f", model.name, cached["reward"],
                            cached["kl"])
                rows.append(cached)
                continue
        if reference is None:
            reference = load_causal_lm(args.sft_model_path, "sft_model_path", dtype, device, args.trust_remote_code)
            classifier = SentimentClassifier.load(args.classifier_name_or_path, dtype, device,
                                                  args.classifier_batch_size, args.classifier_max_length,
                                                  args.trust_remote_code)
        is_reference = model.run == "sft"
        policy = reference if is_reference else load_causal_lm(model.path, "dpo_output_dir", dtype, device,
                                                               args.trust_remote_code)
        summary, samples = evaluate_policy(policy, reference, tokenizer, classifier, prompts, args, is_reference)
        write_jsonl(out / "samples" / f"{_safe_name(model.name)}.jsonl", samples)
        row = {**asdict(model), **summary, "settings_hash": settings_hash, "model_signature": signature}
        atomic_write_json(result_path, row)
        logger.info("[%s] reward %.3f ± %.3f, KL %.2f ± %.2f", model.name, summary["reward"], summary["reward_sem"],
                    summary["kl"], summary["kl_sem"])
        rows.append(row)
        if not is_reference:
            del policy

    write_frontier_csv(rows, out / FRONTIER_CSV)
    plot_frontier(rows, out / FRONTIER_PNG, f"Reward vs KL on {len(prompts)} held-out prefixes")
    logger.info("Frontier: %s and %s", out / FRONTIER_CSV, out / FRONTIER_PNG)
    if args.report_to == "wandb":
        _log_frontier_to_wandb(rows, out, args)
    return out / FRONTIER_CSV


def _log_frontier_to_wandb(rows: list[dict], out: Path, args: EvalArguments) -> None:
    import wandb

    group = Path(args.dpo_output_dir).name if args.dpo_output_dir else None
    start_wandb_run(out, args.wandb_project, f"{group or 'sft'}/eval", group, "eval", config=vars(args))
    table = wandb.Table(columns=FRONTIER_COLUMNS, data=[[row.get(c) for c in FRONTIER_COLUMNS] for row in rows])
    wandb.log({"frontier/table": table, "frontier/plot": wandb.Image(str(out / FRONTIER_PNG))})
    for row in rows:
        if row["is_final"]:
            wandb.run.summary[f"{row['run']}/reward"] = row["reward"]
            wandb.run.summary[f"{row['run']}/kl"] = row["kl"]
    finish_wandb_run()
