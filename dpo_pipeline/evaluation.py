"""Step 4: every trained policy measured on the same held-out prefixes, then a report (`report.py`).

For the SFT model, each DPO checkpoint and each baseline (Preferred-FT, other preference losses, label-noise runs):
  - reward = mean P(POSITIVE) of its samples, KL = mean exact sequence-level KL to the SFT model (Figure 2, left);
  - implicit-reward accuracy and margin on held-out preference pairs that no model trained on;
  - win rate against the SFT model, sample by sample, judged by the classifier (and optionally by a local LLM).
Best-of-N sampling from the SFT model gives a reference curve with the analytic KL log N - (N - 1) / N.

Results are cached per model (`models/<name>.json`), keyed by the settings and the model's weights, so a later
run evaluates only what is new; best-of-N and judge results are cached the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .checkpoints import is_complete_checkpoint
from .cli import PipelineError, require_source
from .configs import EvalArguments
from .data import decode_tokens
from .distributed import on_main, process_state
from .generation import completion_logits, completion_logps, iter_samples
from .judge import JudgeItem, greedy_generate_fn, judge
from .metrics import (
    best_of_n_expected_reward,
    best_of_n_kl,
    clustered_mean_and_standard_error,
    implicit_reward_accuracy,
    mean_and_standard_error,
    sequence_kl,
    win_counts,
)
from .models import (
    SentimentClassifier,
    check_classifier_labels,
    default_device,
    load_causal_lm,
    load_tokenizer,
    resolve_dtype,
)
from .pairs import TOKENIZED_COLUMNS
from .preferences import check_pairs_match_tokenizer, load_preferences, source_fingerprint
from .progress import progress
from .runs import COMPLETE_FILE, RunFolder, atomic_write_json, config_dict, config_fingerprint, read_jsonl, write_jsonl
from .tasks.chat.prompts import chat_prompts
from .tasks.sentiment.reviews import build_prompts, load_reviews
from .tracking import finish_wandb_run, start_wandb_run
from .trainers import tokenize_preference_pairs
from .training import SWEEP_RUN_FILE

logger = logging.getLogger(__name__)

SFT_RUN = "sft"
BEST_OF_N_RUN = "best-of-n"


@dataclass(frozen=True)
class ModelToEvaluate:
    """One policy to evaluate: a run's checkpoint or final model, and what the plots need to know of its run."""

    name: str
    path: str
    run: str
    method: str  # sft, dpo or preferred_ft
    beta: float | None
    loss_type: str
    label_smoothing: float | None
    label_noise: float
    step: int
    is_final: bool


def discover_models(sft_model_path: str, dpo_output_dir: str | None,
                    include_checkpoints: bool) -> list[ModelToEvaluate]:
    """The SFT model, then every finished run of the sweep folder (DPO runs and baselines trained into it, each
    described by its sweep_run.json): its checkpoints and its final model."""
    models = [ModelToEvaluate(SFT_RUN, sft_model_path, SFT_RUN, "sft", None, "sft", None, 0.0, 0, True)]
    if not dpo_output_dir:
        return models
    root = Path(dpo_output_dir)
    if not root.is_dir():
        raise PipelineError(f"dpo_output_dir: {root} does not exist")
    runs = []
    for run_dir in sorted(path for path in root.iterdir() if (path / SWEEP_RUN_FILE).is_file()):
        if not (run_dir / COMPLETE_FILE).is_file():
            logger.warning("Skipping %s: its training has not finished (rerun its command to finish it)", run_dir)
            continue
        info = json.loads((run_dir / SWEEP_RUN_FILE).read_text())
        final_step = json.loads((run_dir / COMPLETE_FILE).read_text())["summary"]["global_step"]
        run = dict(run=info["name"], method=info.get("method", "dpo"), beta=info.get("beta"),
                   loss_type=",".join(info.get("loss_type") or ["sigmoid"]),
                   label_smoothing=info.get("label_smoothing"), label_noise=float(info.get("label_noise") or 0.0))
        entries = []
        if include_checkpoints:
            for checkpoint in run_dir.glob("checkpoint-*"):
                step = int(checkpoint.name.split("-")[-1])
                if step != final_step and is_complete_checkpoint(checkpoint):
                    entries.append(ModelToEvaluate(f"{info['name']}/step-{step}", str(checkpoint), **run, step=step,
                                                   is_final=False))
        entries.append(ModelToEvaluate(f"{info['name']}/step-{final_step}", str(run_dir), **run, step=final_step,
                                       is_final=True))
        runs.append(sorted(entries, key=lambda entry: entry.step))
    if not runs:
        raise PipelineError(f"dpo_output_dir: {root} holds no finished run")
    # DPO by beta first, then the other losses, then the baselines; label-noise runs last
    runs.sort(key=lambda entries: (entries[0].label_noise, entries[0].method != "dpo",
                                   entries[0].loss_type != "sigmoid", entries[0].loss_type, entries[0].beta or 0.0,
                                   entries[0].run))
    return models + [entry for entries in runs for entry in entries]


def _model_signature(path: str) -> str:
    """Changes when the weights at `path` change (a retrained model at the same path is evaluated again)."""
    weights = sorted(Path(path).glob("*.safetensors")) + sorted(Path(path).glob("*.bin"))
    return ";".join(f"{w.name}:{w.stat().st_size}:{w.stat().st_mtime_ns}" for w in weights) or path


def _read_cache(path: Path, key: str, overwrite: bool) -> dict | None:
    """A cached result written with `cache_key` equal to `key`, or None (missing, stale, or --overwrite)."""
    if overwrite or not path.is_file():
        return None
    cached = json.loads(path.read_text())
    return cached if cached.get("cache_key") == key else None


def _short_hash(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Policy:
    """One policy in the two precisions eval.py uses: `sampler` (weights in `dtype`) samples, `measurer` (weights in
    `measure_dtype`, float32 by default) gives the logits of the KL and log-probability passes; one model when the
    two agree. Both compute their logits in float32 (`models.Float32Head`)."""

    sampler: torch.nn.Module
    measurer: torch.nn.Module


@torch.no_grad()
def evaluate_policy(policy: Policy, reference: Policy, tokenizer, classifier: SentimentClassifier, prompts,
                    args: EvalArguments, is_reference: bool, name: str = "policy") -> tuple[dict, list[dict]]:
    """Sample from `policy`, score the samples, and measure their sequence KL to `reference`.

    Returns (summary, samples): summary has reward, reward_sem (None without a classifier), kl, kl_sem (standard
    errors clustered by prompt), num_samples, mean_response_tokens; each sample record has the prompt (text and
    token ids), the sample's index among the prompt's samples, the completion (text and token ids, EOS included
    where sampled), its KL and its reward.
    """
    samples = []
    batches = iter_samples(policy.sampler, [p.prompt_token_ids for p in prompts], args.samples_per_prompt,
                           args.max_new_tokens, args.temperature, args.generation_batch_size, args.seed,
                           tokenizer.pad_token_id, tokenizer.eos_token_id,
                           cache_implementation=args.cache_implementation)
    for batch in progress(batches, total=len(prompts) * args.samples_per_prompt, unit="samples",
                          desc=f"[{name}] sampling{'' if is_reference else ' and KL'}",
                          weight=lambda batch: len(batch.item_indices)):
        kls = []
        for start in range(0, len(batch.item_indices), args.kl_batch_size):
            rows = slice(start, start + args.kl_batch_size)
            if is_reference:
                kls.append(torch.zeros(len(batch.item_indices[rows])))
                continue
            kls.append(sequence_kl(completion_logits(policy.measurer, batch, rows),
                                   completion_logits(reference.measurer, batch, rows), batch.completion_mask[rows],
                                   args.temperature).cpu())
        for item, token_ids, kl in zip(batch.item_indices, batch.completion_token_ids(), torch.cat(kls).tolist()):
            prompt = prompts[item // args.samples_per_prompt]
            samples.append({"prompt_index": prompt.prompt_index, "sample_index": item % args.samples_per_prompt,
                            "prompt": prompt.prompt, "completion": decode_tokens(tokenizer, token_ids),
                            "prompt_token_ids": list(prompt.prompt_token_ids), "completion_token_ids": token_ids,
                            "kl": kl})
    # The samples of one prompt are not independent of each other: standard errors are clustered by prompt.
    prompt_of = [s["prompt_index"] for s in samples]
    kl, kl_sem = clustered_mean_and_standard_error([s["kl"] for s in samples], prompt_of)
    summary = {"reward": None, "reward_sem": None, "kl": kl, "kl_sem": kl_sem, "num_samples": len(samples),
               "num_prompts": len(prompts),
               "mean_response_tokens": sum(len(s["completion_token_ids"]) for s in samples) / len(samples)}
    if classifier is not None:
        for sample, reward in zip(samples, classifier.score(_scored_texts(samples, args), desc=f"[{name}] scoring")):
            sample["reward"] = reward
        summary["reward"], summary["reward_sem"] = clustered_mean_and_standard_error(
            [s["reward"] for s in samples], prompt_of)
    return summary, samples


def _scored_texts(samples: list[dict], args: EvalArguments) -> list[str]:
    return [(s["prompt"] if args.score_prompt else "") + s["completion"] for s in samples]


class HeldoutPairs:
    """The held-out preference pairs as token ids (the sampled ids, or TRL's tokenization of text pairs), and
    log pi_ref of their completions (computed once, for every model)."""

    def __init__(self, path: str, tokenizer, batch_size: int, split: str = "train", config_name: str | None = None,
                 max_pairs: int | None = None, field_name: str = "heldout_pairs_file"):
        pairs = load_preferences(path, split, config_name, field_name=field_name)
        if max_pairs:
            pairs = pairs.select(range(min(max_pairs, len(pairs))))
        check_pairs_match_tokenizer(pairs, tokenizer, path, field_name)
        pairs = tokenize_preference_pairs(pairs, tokenizer)
        self.path, self.batch_size = path, batch_size
        self.sha = _short_hash(source_fingerprint(path, split, config_name), max_pairs)
        self.pad_token_id = tokenizer.pad_token_id
        self.prompt_ids, self.chosen_ids, self.rejected_ids = (pairs[column] for column in TOKENIZED_COLUMNS)
        self._reference = None

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def logps(self, model) -> tuple[torch.Tensor, torch.Tensor]:
        """[P] log pi(chosen | prompt) and [P] log pi(rejected | prompt)."""
        chosen = completion_logps(model, self.prompt_ids, self.chosen_ids, self.pad_token_id, self.batch_size)
        rejected = completion_logps(model, self.prompt_ids, self.rejected_ids, self.pad_token_id, self.batch_size)
        return chosen, rejected

    def metrics(self, policy: Policy, reference: Policy, beta: float | None) -> dict:
        if self._reference is None:
            self._reference = self.logps(reference.measurer)
        policy_chosen, policy_rejected = self.logps(policy.measurer)
        result = implicit_reward_accuracy(policy_chosen, policy_rejected, *self._reference, beta=beta)
        return {f"heldout_{key}": value for key, value in result.items()} | {"heldout_pairs": len(self)}


class Evaluator:
    """Lazily loaded reference model and classifier, shared by every measurement of one eval.py run."""

    def __init__(self, args: EvalArguments, device=None):
        self.args = args
        self.device = device or default_device()
        self.dtype = resolve_dtype(args.dtype, self.device)
        self.measure_dtype = resolve_dtype(args.measure_dtype, self.device)
        self.tokenizer = load_tokenizer(args.sft_model_path, "sft_model_path", args.trust_remote_code)
        self._reference = self._classifier = None

    def load(self, path: str, field_name: str) -> Policy:
        def load(dtype):
            return load_causal_lm(path, field_name, dtype, self.device, self.args.trust_remote_code,
                                  float32_logits=True)

        measurer = load(self.measure_dtype)
        return Policy(sampler=measurer if self.dtype == self.measure_dtype else load(self.dtype), measurer=measurer)

    @property
    def reference(self) -> Policy:
        if self._reference is None:
            self._reference = self.load(self.args.sft_model_path, "sft_model_path")
        return self._reference

    @property
    def classifier(self) -> SentimentClassifier | None:
        if self._classifier is None and self.args.classifier_name_or_path:
            self._classifier = SentimentClassifier.load(
                self.args.classifier_name_or_path, self.measure_dtype, self.device, self.args.classifier_batch_size,
                self.args.classifier_max_length, self.args.trust_remote_code)
        return self._classifier

    def load_policy(self, model: ModelToEvaluate) -> Policy:
        return self.reference if model.run == SFT_RUN else self.load(model.path, "dpo_output_dir")


def _safe_name(name: str) -> str:
    return name.replace("/", "__")


def evaluate_models(models, evaluator: Evaluator, prompts, heldout: HeldoutPairs | None, out: Path,
                    settings_hash: str) -> list[dict]:
    """One result row per model: from the cache where the settings and the weights are unchanged, else measured.
    A cached row that lacks the held-out metrics of the current held-out file gets just those measured."""
    args = evaluator.args
    rows = []
    for model in models:
        result_path = out / "models" / f"{_safe_name(model.name)}.json"
        signature = _model_signature(model.path)
        row = None
        if result_path.is_file() and not args.overwrite:
            cached = json.loads(result_path.read_text())
            if cached.get("settings_hash") == settings_hash and cached.get("model_signature") == signature:
                row = {**cached, **asdict(model)}
        wants_heldout = heldout is not None and model.run != SFT_RUN
        if row is not None and (not wants_heldout or row.get("heldout_pairs_sha") == heldout.sha):
            logger.info("[%s] evaluated already: KL %.2f", model.name, row["kl"])
            rows.append(row)
            continue
        policy = evaluator.load_policy(model)
        if row is None:
            summary, samples = evaluate_policy(policy, evaluator.reference, evaluator.tokenizer, evaluator.classifier,
                                               prompts, args, is_reference=model.run == SFT_RUN, name=model.name)
            write_jsonl(out / "samples" / f"{_safe_name(model.name)}.jsonl", samples)
            row = {**asdict(model), **summary, "settings_hash": settings_hash, "model_signature": signature}
            logger.info("[%s] %sKL %.2f ± %.2f, %.1f response tokens", model.name,
                        "" if row["reward"] is None else f"reward {row['reward']:.3f} ± {row['reward_sem']:.3f}, ",
                        row["kl"], row["kl_sem"], row["mean_response_tokens"])
        if wants_heldout:
            row.update(heldout.metrics(policy, evaluator.reference, model.beta),
                       heldout_pairs_sha=heldout.sha)
            logger.info("[%s] held-out implicit-reward accuracy %.3f on %d pairs", model.name,
                        row["heldout_accuracy"], row["heldout_pairs"])
        atomic_write_json(result_path, row)
        log_live(row)
        rows.append(row)
        del policy
    return rows


def log_live(row: dict) -> None:
    """One model's figures to the eval's wandb run as soon as they are measured (main process, when tracking)."""
    import wandb

    if wandb.run is not None:
        wandb.log({f"eval/{key}": row[key] for key in ("reward", "kl", "heldout_accuracy", "heldout_logratio_margin")
                   if row.get(key) is not None} | {"eval/model": row["name"]})


def read_samples(out: Path, name: str) -> dict[tuple[int, int], dict]:
    """A model's saved samples keyed by (prompt index, sample index)."""
    keyed, seen = {}, {}
    for sample in read_jsonl(out / "samples" / f"{_safe_name(name)}.jsonl", "samples"):
        prompt_index = sample["prompt_index"]
        sample_index = sample.get("sample_index", seen.get(prompt_index, 0))
        seen[prompt_index] = sample_index + 1
        keyed[(prompt_index, sample_index)] = sample
    return keyed


def add_win_rates(rows: list[dict], out: Path, tie_tolerance: float) -> None:
    """Each model's classifier win rate against the SFT model, sample by sample on the same prompts (where there is
    a classifier)."""
    if all(row.get("reward") is None for row in rows):
        return
    baseline = read_samples(out, SFT_RUN)
    for row in rows:
        if row["run"] in (SFT_RUN, BEST_OF_N_RUN):
            continue
        samples = read_samples(out, row["name"])
        keys = sorted(samples.keys() & baseline.keys())
        row.update(win_counts([samples[k]["reward"] for k in keys], [baseline[k]["reward"] for k in keys],
                              tie_tolerance))


def evaluate_best_of_n(evaluator: Evaluator, prompts, out: Path, settings_hash: str) -> list[dict]:
    """Best-of-N from the SFT model: M = max(N) samples per prompt, and for each N the unbiased estimate of the
    expected best reward among N of them (`metrics.best_of_n_expected_reward`); KL is the analytic value."""
    args = evaluator.args
    sizes = sorted(set(args.best_of_n))
    if not sizes:
        return []
    prompts = prompts[: args.best_of_n_prompts] if args.best_of_n_prompts else prompts
    samples_per_prompt = max(sizes)
    key = _short_hash(settings_hash, _model_signature(args.sft_model_path), samples_per_prompt, len(prompts))
    cache = out / "models" / "best-of-n.json"
    cached = _read_cache(cache, key, args.overwrite)
    if cached is not None:
        per_prompt = cached["rewards_per_prompt"]
        logger.info("Best-of-N evaluated already (%d prompts x %d samples)", len(per_prompt), samples_per_prompt)
    else:
        logger.info("Best-of-N: sampling %d completions for each of %d prompts from the SFT model",
                    samples_per_prompt, len(prompts))
        records = []
        tokenizer = evaluator.tokenizer
        batches = iter_samples(evaluator.reference.sampler, [p.prompt_token_ids for p in prompts], samples_per_prompt,
                               args.max_new_tokens, args.temperature, args.generation_batch_size, args.seed + 1,
                               tokenizer.pad_token_id, tokenizer.eos_token_id,
                               cache_implementation=args.cache_implementation)
        for batch in progress(batches, total=len(prompts) * samples_per_prompt, desc="best-of-N sampling",
                              unit="samples", weight=lambda batch: len(batch.item_indices)):
            for item, token_ids in zip(batch.item_indices, batch.completion_token_ids()):
                prompt = prompts[item // samples_per_prompt]
                records.append({"prompt_index": prompt.prompt_index, "prompt": prompt.prompt,
                                "completion": decode_tokens(tokenizer, token_ids)})
        for record, reward in zip(records, evaluator.classifier.score(_scored_texts(records, args),
                                                                      desc="best-of-N scoring")):
            record["reward"] = reward
        write_jsonl(out / "samples" / "best-of-n.jsonl", records)
        per_prompt = [[r["reward"] for r in records[i * samples_per_prompt : (i + 1) * samples_per_prompt]]
                      for i in range(len(prompts))]
        atomic_write_json(cache, {"cache_key": key, "rewards_per_prompt": per_prompt})
    rows = []
    for n in sizes:
        reward, reward_sem = mean_and_standard_error([best_of_n_expected_reward(r, n) for r in per_prompt])
        rows.append({"name": f"best-of-{n}", "run": BEST_OF_N_RUN, "method": "best_of_n", "beta": None,
                     "loss_type": "best_of_n", "label_smoothing": None, "label_noise": 0.0, "step": n,
                     "is_final": True, "reward": reward, "reward_sem": reward_sem, "kl": best_of_n_kl(n),
                     "kl_sem": 0.0, "num_samples": len(per_prompt) * samples_per_prompt,
                     "num_prompts": len(per_prompt)})
    return rows


def add_judge_verdicts(rows: list[dict], evaluator: Evaluator, out: Path) -> None:
    """LLM-as-judge win rate of each final model against the SFT model (sample 0 of each prompt)."""
    args = evaluator.args
    require_source(args.judge_model_path, "judge model", "judge_model_path")
    judge_settings = _short_hash(args.judge_template, args.judge_max_new_tokens, args.judge_prompts, args.seed,
                                 _model_signature(args.judge_model_path))
    baseline = read_samples(out, SFT_RUN)
    generate = None
    for row in rows:
        if row["run"] in (SFT_RUN, BEST_OF_N_RUN) or not row["is_final"]:
            continue
        cache = out / "judge" / f"{_safe_name(row['name'])}.json"
        key = _short_hash(judge_settings, row["settings_hash"], row["model_signature"])
        cached = _read_cache(cache, key, args.overwrite)
        if cached is not None:
            row.update(cached["tally"])
            continue
        if generate is None:
            judge_tokenizer = load_tokenizer(args.judge_model_path, "judge_model_path", args.trust_remote_code)
            judge_model = load_causal_lm(args.judge_model_path, "judge_model_path", evaluator.dtype, evaluator.device,
                                         args.trust_remote_code)
            generate = greedy_generate_fn(judge_model, judge_tokenizer, args.judge_max_new_tokens,
                                          args.judge_batch_size)
        samples = read_samples(out, row["name"])
        keys = sorted(key for key in samples.keys() & baseline.keys() if key[1] == 0)[: args.judge_prompts]
        items = [JudgeItem(k[0], samples[k]["prompt"], samples[k]["completion"], baseline[k]["completion"])
                 for k in keys]
        tally, records = judge(items, generate, args.judge_template, args.seed)
        write_jsonl(out / "judge" / f"{_safe_name(row['name'])}.jsonl", records)
        atomic_write_json(cache, {"cache_key": key, "tally": tally})
        logger.info("[%s] judge: %d wins, %d losses, %d unparsable", row["name"], tally["judge_wins"],
                    tally["judge_losses"], tally["judge_unparsable"])
        row.update(tally)


def evaluation_prompts(args: EvalArguments, tokenizer) -> list:
    """The task's held-out prompts: review prefixes (sentiment) or the conversations of a preference dataset (chat)."""
    if args.task == "chat":
        return chat_prompts(args.dataset_name, args.dataset_split, args.dataset_config, tokenizer, args.num_prompts,
                            args.seed)
    reviews = load_reviews(args.dataset_name, args.dataset_split, args.dataset_config, args.text_column,
                           args.label_column)
    return build_prompts(reviews, tokenizer, args.num_prompts, args.min_prefix_tokens, args.max_prefix_tokens,
                         args.seed, split=args.dataset_split)


def held_out_pairs(args: EvalArguments, tokenizer) -> HeldoutPairs | None:
    """The pairs each model's implicit-reward accuracy is measured on: heldout_pairs_file, or for the chat task the
    preference dataset's own held-out split; None when there are none."""
    if args.heldout_pairs_file:
        return HeldoutPairs(args.heldout_pairs_file, tokenizer, args.kl_batch_size, max_pairs=args.max_heldout_pairs)
    if args.task == "chat":
        return HeldoutPairs(args.dataset_name, tokenizer, args.kl_batch_size, split=args.dataset_split,
                            config_name=args.dataset_config, max_pairs=args.max_heldout_pairs,
                            field_name="dataset_name")
    return None


def evaluate_frontier(args: EvalArguments) -> Path:
    """Evaluate every model not yet evaluated with these settings, then write the report, frontier.csv and plots.

    Under a launcher with N processes the models (and best-of-N) are shared out between the processes, each model
    evaluated whole by one of them with the same prompts and seeds as in a one-process run; the main process then
    reads every result back (cached per model) and writes the report.
    """
    from .report import write_report

    require_source(args.dataset_name, "dataset", "dataset_name")
    if args.classifier_name_or_path:
        require_source(args.classifier_name_or_path, "classifier", "classifier_name_or_path")
    require_source(args.sft_model_path, "SFT model", "sft_model_path")
    if args.judge_model_path:
        require_source(args.judge_model_path, "judge model", "judge_model_path")
    out = Path(args.output_dir)
    settings_hash = config_fingerprint(args)
    folder = RunFolder(out, settings_hash, "eval")
    state = process_state()
    folder.check(overwrite=args.overwrite)  # never "complete": new checkpoints may come
    state.wait_for_everyone()
    models = discover_models(args.sft_model_path, args.dpo_output_dir, args.include_checkpoints)
    if args.classifier_name_or_path:
        check_classifier_labels(args.classifier_name_or_path, args.trust_remote_code)
    evaluator = Evaluator(args, state.device)
    heldout = held_out_pairs(args, evaluator.tokenizer)
    prompts = evaluation_prompts(args, evaluator.tokenizer)

    def claim():  # every input is loaded and checked by now
        folder.claim({"eval": args}, overwrite=args.overwrite)
        if args.report_to == "wandb":
            start_wandb_run(out, args.wandb_project, "eval", config={"eval": config_dict(args)})

    on_main(claim)
    logger.info("Evaluating %d models on %d held-out prompts x %d samples%s", len(models), len(prompts),
                args.samples_per_prompt, f" on {state.num_processes} processes" if state.num_processes > 1 else "")
    jobs = [*models, BEST_OF_N_RUN] if args.best_of_n else models
    with state.split_between_processes(jobs) as mine:
        evaluate_models([job for job in mine if job != BEST_OF_N_RUN], evaluator, prompts, heldout, out,
                        settings_hash)
        if BEST_OF_N_RUN in mine:
            evaluate_best_of_n(evaluator, prompts, out, settings_hash)
    state.wait_for_everyone()
    report = out / "report.md"
    if state.is_main_process:  # every result is cached now: this reads them back
        rows = evaluate_models(models, evaluator, prompts, heldout, out, settings_hash)
        add_win_rates(rows, out, args.win_rate_tie_tolerance)
        if args.judge_model_path:
            add_judge_verdicts(rows, evaluator, out)
        rows += evaluate_best_of_n(evaluator, prompts, out, settings_hash)
        report = write_report(rows, out, args, num_prompts=len(prompts), heldout=heldout)
        finish_wandb_run()
        logger.info("Report: %s", report)
    state.wait_for_everyone()
    return report
