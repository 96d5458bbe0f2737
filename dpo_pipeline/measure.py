"""Step 4's measurements (eval.py; `stages/evaluate.py` runs them): every trained policy on the same held-out prompts of
its task, each result stored (`samples.EvalStore`) for the report to read.

For the SFT model, each DPO checkpoint and each baseline (Preferred-FT, other preference losses, label-noise runs):
  - reward = the mean of the task's reward of its samples (P(POSITIVE) for sentiment), KL = the mean exact
    sequence-level KL to the SFT model (Figure 2, left);
  - implicit-reward accuracy and margin on held-out preference pairs that no model trained on;
  - win rate against the SFT model, judged by the classifier (and optionally by a local LLM): each sample against
    an SFT sample of the same prompt drawn independently of it (`measure_sft_comparison`), as the paper's win rate.
Best-of-N sampling from the SFT model gives a reference curve with the analytic KL log N - (N - 1) / N.

Results are cached per model (`models/<name>.json`), keyed by the settings and the model's weights, so a later
run evaluates only what is new; best-of-N and judge results are cached the same way.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .checkpoints import is_complete_checkpoint
from .arguments import EvalArguments
from .data import decode_tokens
from .errors import PipelineError
from .generation import completion_logits, completion_logps, iter_samples, stop_token_ids
from .hub import require_source
from .inputs import read_json
from .judge import JudgeItem, greedy_generate_fn, judge
from .methods import get_method, methods
from .metric_registry import live_keys, measure_samples, missing_sample_metrics
from .estimators import (
    best_of_n_expected_reward,
    best_of_n_kl,
    margin_accuracy,
    mean_and_standard_error,
    sequence_kl,
    win_counts,
)
from .models import check_weight_files, default_device, load_causal_lm, load_tokenizer, resolve_dtype
from .pair_building import TOKENIZED_COLUMNS
from .preference_data import check_pairs_match_tokenizer, load_preferences, source_fingerprint
from .progress import progress
from .runs import COMPLETE_FILE, SWEEP_RUN_FILE, sweep_run_name
from .samples import EvalStore, model_signature, short_hash
from .tasks import Reward, Task
from .trainers import tokenize_preference_pairs

logger = logging.getLogger(__name__)

SFT_RUN = "sft"
BEST_OF_N_RUN = "best-of-n"
# Samples of the SFT model drawn on random numbers of their own, that the win rates compare every model's samples with.
# Every model samples from the same random stream (the config's seed; a batch is seeded by its position): sample k of a
# policy and sample k of the SFT model would share their random numbers, hence often their first tokens, and a win
# rate over such coupled pairs is not the win rate against an SFT sample. Best-of-N draws from seed + 1, these from
# seed + 2.
SFT_COMPARISON_RUN = "sft-comparison"
SFT_COMPARISON_SEED_OFFSET = 2


@dataclass(frozen=True)
class ModelToEvaluate:
    """One policy to evaluate: a run's checkpoint or final model, and what the plots need to know of its run."""

    name: str
    path: str
    run: str
    method: str  # sft, dpo, preferred_ft, unlikelihood, rloo, grpo
    beta: float | None
    loss_type: str
    label_smoothing: float | None
    label_noise: float
    step: int
    is_final: bool
    seed: int | None = None  # the sweep entry's seed override (None: the config's seed)
    setting: str = ""  # the run's sweep_run.json without its name and seed: runs that differ only by seed share it
    # the method's own settings from its sweep_run.json (`methods.Method.sweep_keys`: unlikelihood's alpha, SimPO's
    # gamma), which its label and the frontier's columns show
    method_settings: tuple = ()

    def row(self) -> dict:
        """The model as the start of its frontier row: its fields, the method's own settings each a column."""
        fields = asdict(self)
        return {**{key: value for key, value in fields.items() if key != "method_settings"},
                **dict(self.method_settings)}


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
        info = read_json(run_dir / SWEEP_RUN_FILE, "dpo_output_dir")
        final_step = read_json(run_dir / COMPLETE_FILE, "dpo_output_dir").get("summary", {}).get("global_step")
        if not isinstance(info, dict) or "name" not in info or not isinstance(final_step, int):
            raise PipelineError(f"dpo_output_dir: {run_dir} holds a {SWEEP_RUN_FILE} or {COMPLETE_FILE} that no "
                                "pipeline run wrote; move it out of the sweep folder")
        seed, setting = run_setting(info)
        method = get_method(info.get("method"))
        run = dict(run=info["name"], method=method.name, beta=info.get("beta"),
                   loss_type=",".join(info.get("loss_type") or ["sigmoid"]),
                   label_smoothing=info.get("label_smoothing"), label_noise=float(info.get("label_noise") or 0.0),
                   seed=seed, setting=setting,
                   method_settings=tuple((key, info.get(key)) for key in method.sweep_keys if key in info))
        entries = []
        if include_checkpoints:
            for checkpoint in run_dir.glob("checkpoint-*"):
                step = int(checkpoint.name.split("-")[-1])
                if step != final_step and is_complete_checkpoint(checkpoint):
                    entries.append(ModelToEvaluate(f"{info['name']}/step-{step}", str(checkpoint), step=step,
                                                   is_final=False, **run))
        entries.append(ModelToEvaluate(f"{info['name']}/step-{final_step}", str(run_dir), step=final_step,
                                       is_final=True, **run))
        runs.append(sorted(entries, key=lambda entry: entry.step))
    if not runs:
        raise PipelineError(f"dpo_output_dir: {root} holds no finished run")
    for entry in (entry for entries in runs for entry in entries):
        check_weight_files(entry.path, "dpo_output_dir")
    # the methods in the registry's order (DPO first, its sigmoid loss first), each by its loss and settings; the
    # label-noise runs last
    order = {method.name: position for position, method in enumerate(methods())}
    runs.sort(key=lambda entries: (entries[0].label_noise, order.get(entries[0].method, len(order)),
                                   not get_method(entries[0].method).on_the_dpo_curve(entries[0].row()),
                                   entries[0].loss_type, entries[0].beta or 0.0,
                                   [value or 0.0 for _, value in entries[0].method_settings], entries[0].run))
    return models + [entry for entries in runs for entry in entries]


def run_setting(info: dict) -> tuple[int | None, str]:
    """(seed, setting) of a run from its sweep_run.json: the `seed` of its sweep overrides (None without one), and a
    label of everything else it holds (its name and seed left out), the same for runs that differ only by seed:
    `beta-0.1_seed-1` and `beta-0.1` share `beta-0.1` and the rest of their info. The report averages over it."""
    overrides = dict(info.get("overrides") or {})
    seed = overrides.pop("seed", None)
    rest = {key: value for key, value in info.items() if key not in ("name", "overrides")}
    readable = sweep_run_name(overrides) if overrides else info["name"]
    return (None if seed is None else int(seed)), f"{readable}#{short_hash(rest, overrides)[:8]}"


@dataclass
class Policy:
    """One policy in the two precisions eval.py uses: `sampler` (weights in `dtype`) samples, `measurer` (weights in
    `measure_dtype`, float32 by default) gives the logits of the KL and log-probability passes; one model when the
    two agree. Both compute their logits in float32 (`models.Float32Head`)."""

    sampler: torch.nn.Module
    measurer: torch.nn.Module


@torch.no_grad()
def evaluate_policy(policy: Policy, reference: Policy, tokenizer, reward: Reward | None, prompts,
                    args: EvalArguments, is_reference: bool, name: str = "policy") -> tuple[dict, list[dict]]:
    """Sample from `policy`, score the samples, and measure their sequence KL to `reference`.

    Returns (summary, samples): summary has every figure of the samples the metric registry declares
    (`metric_registry.measure_samples`: reward and reward_sem (None where the task has no reward), kl and kl_sem,
    their standard errors clustered by prompt, num_samples, num_prompts, mean_response_tokens, ...) and the
    stop_token_ids that ended the completions; each sample record has the prompt (text and
    token ids), the sample's index among the prompt's samples, the completion (text and token ids, EOS included
    where sampled), its KL and its reward.
    """
    samples = []
    stops = stop_token_ids(tokenizer, policy.sampler)
    batches = iter_samples(policy.sampler, [p.prompt_token_ids for p in prompts], args.samples_per_prompt,
                           args.max_new_tokens, args.temperature, args.generation_batch_size, args.seed,
                           tokenizer.pad_token_id, stops,
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
    if reward is not None:
        for sample, value in zip(samples, reward.score(_scored_texts(samples, args), desc=f"[{name}] scoring")):
            sample["reward"] = value
    # every registered figure of the samples (`metric_registry`), and what ends a completion, for figures to come
    return {**measure_samples(samples, {"stop_token_ids": stops}), "stop_token_ids": stops}, samples


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
        self.sha = short_hash(source_fingerprint(path, split, config_name), max_pairs)
        self.pad_token_id = tokenizer.pad_token_id
        self.prompt_ids, self.chosen_ids, self.rejected_ids = (pairs[column] for column in TOKENIZED_COLUMNS)
        self.chosen_lengths = torch.tensor([max(1, len(ids)) for ids in self.chosen_ids])
        self.rejected_lengths = torch.tensor([max(1, len(ids)) for ids in self.rejected_ids])
        # The bootstrap's clusters: the pairs of one prompt (several per prompt in the sentiment task) go together.
        self.clusters = [short_hash(ids) for ids in self.prompt_ids]
        self._reference = None

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def logps(self, model) -> tuple[torch.Tensor, torch.Tensor]:
        """[P] log pi(chosen | prompt) and [P] log pi(rejected | prompt)."""
        chosen = completion_logps(model, self.prompt_ids, self.chosen_ids, self.pad_token_id, self.batch_size)
        rejected = completion_logps(model, self.prompt_ids, self.rejected_ids, self.pad_token_id, self.batch_size)
        return chosen, rejected

    def measure(self, policy: Policy, reference: Policy, beta: float | None,
                method: str | None = None) -> tuple[dict, list[dict]]:
        """(the row's heldout_* figures with their standard errors over prompts, one record per pair: pair_index,
        prompt (its cluster), logratio_margin), the records for `EvalStore.write_heldout`. The margins are the
        implicit reward's of the model's method (`methods.Method.held_out_margin`: DPO's log-ratio to the reference
        by default), without beta; the reward margin is beta times them where the run has a beta."""
        if self._reference is None:
            self._reference = self.logps(reference.measurer)
        policy_chosen, policy_rejected = self.logps(policy.measurer)
        margins = get_method(method).held_out_margin(policy_chosen, policy_rejected, *self._reference,
                                                     self.chosen_lengths, self.rejected_lengths)
        result = margin_accuracy(margins, beta, clusters=self.clusters)
        records = [{"pair_index": i, "prompt": cluster, "logratio_margin": margin}
                   for i, (cluster, margin) in enumerate(zip(self.clusters, margins.tolist()))]
        return {f"heldout_{key}": value for key, value in result.items()} | {"heldout_pairs": len(self)}, records

    def metrics(self, policy: Policy, reference: Policy, beta: float | None, method: str | None = None) -> dict:
        return self.measure(policy, reference, beta, method)[0]


class Evaluator:
    """Lazily loaded reference model and task reward, shared by every measurement of one eval.py run."""

    def __init__(self, args: EvalArguments, task: Task, device=None):
        self.args, self.task = args, task
        self.device = device or default_device()
        self.dtype = resolve_dtype(args.dtype, self.device)
        self.measure_dtype = resolve_dtype(args.measure_dtype, self.device)
        self.tokenizer = load_tokenizer(args.sft_model_path, "sft_model_path", args.trust_remote_code)
        self._reference = self._reward = None
        self._reward_loaded = False

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
    def reward(self) -> Reward | None:
        if not self._reward_loaded:
            self._reward = self.task.load_reward(self.args, self.device, self.measure_dtype)
            self._reward_loaded = True
        return self._reward

    def load_policy(self, model: ModelToEvaluate) -> Policy:
        return self.reference if model.run == SFT_RUN else self.load(model.path, "dpo_output_dir")


def stale_results(model: ModelToEvaluate, store: EvalStore, settings_hash: str, heldout, overwrite: bool):
    """What of a model's result must be measured: (the stored row or None, whether its held-out metrics must be).
    A stored row is kept where the settings and the weights are unchanged; one that lacks the held-out metrics of
    the current held-out file gets just those measured."""
    row = None if overwrite else store.read_result(model.name)
    if row is not None and (row.get("settings_hash") != settings_hash
                            or row.get("model_signature") != model_signature(model.path)):
        row = None
    wants_heldout = heldout is not None and model.run != SFT_RUN
    # a row measured before the per-pair margins were stored gets them (and its standard errors) measured
    return row, wants_heldout and (row is None or row.get("heldout_pairs_sha") != heldout.sha
                                   or not store.heldout_file(model.name).is_file())


def measured_already(model: ModelToEvaluate, store: EvalStore, settings_hash: str, heldout, overwrite: bool) -> bool:
    """Whether the model's stored result is complete and current (`stale_results` finds nothing to measure)."""
    row, heldout_missing = stale_results(model, store, settings_hash, heldout, overwrite)
    return row is not None and not heldout_missing


def measure_models(models, evaluator: Evaluator, prompts, heldout: HeldoutPairs | None, store: EvalStore,
                   settings_hash: str) -> None:
    """Measure every model whose stored result is missing or stale, and store its samples and result row."""
    args = evaluator.args
    for model in models:
        row, heldout_missing = stale_results(model, store, settings_hash, heldout, args.overwrite)
        if row is not None and missing_sample_metrics(row):  # figures registered since: from the stored samples
            added = [metric.key for metric in missing_sample_metrics(row)]
            stops = row.get("stop_token_ids") or stop_token_ids(evaluator.tokenizer)
            samples = list(store.read_samples(model.name).values())
            for metric in missing_sample_metrics(row):
                row.update(metric.from_samples(samples, {"stop_token_ids": stops}))
            store.write_result(model.name, row)
            logger.info("[%s] %s measured from its stored samples", model.name, ", ".join(added))
        if row is not None and not heldout_missing:
            logger.info("[%s] evaluated already: KL %.2f", model.name, row["kl"])
            continue
        policy = evaluator.load_policy(model)
        if row is None:
            summary, samples = evaluate_policy(policy, evaluator.reference, evaluator.tokenizer, evaluator.reward,
                                               prompts, args, is_reference=model.run == SFT_RUN, name=model.name)
            store.write_samples(model.name, samples)
            row = {**model.row(), **summary, "settings_hash": settings_hash,
                   "model_signature": model_signature(model.path)}
            logger.info("[%s] %sKL %.2f ± %.2f, %.1f response tokens", model.name,
                        "" if row["reward"] is None else f"reward {row['reward']:.3f} ± {row['reward_sem']:.3f}, ",
                        row["kl"], row["kl_sem"], row["mean_response_tokens"])
        if heldout_missing:
            figures, per_pair = heldout.measure(policy, evaluator.reference, model.beta, model.method)
            store.write_heldout(model.name, per_pair)
            row.update(figures, heldout_pairs_sha=heldout.sha)
            logger.info("[%s] held-out implicit-reward accuracy %.3f ± %.3f on %d pairs", model.name,
                        row["heldout_accuracy"], row["heldout_accuracy_se"], row["heldout_pairs"])
        store.write_result(model.name, row)
        log_live(row)
        del policy


def read_rows(models, store: EvalStore) -> list[dict]:
    """Every model's stored result row (measured by now), with what the plots need to know of its run."""
    return [{**store.read_result(model.name), **model.row()} for model in models]


def log_live(row: dict) -> None:
    """One model's figures to the eval's wandb run as soon as they are measured (main process, when tracking)."""
    import wandb

    if wandb.run is not None:
        wandb.log({f"eval/{key}": row[key] for key in live_keys() if row.get(key) is not None}
                  | {"eval/model": row["name"]})


def sft_comparison_key(evaluator: Evaluator, settings_hash: str) -> str:
    return short_hash(settings_hash, model_signature(evaluator.args.sft_model_path), SFT_COMPARISON_SEED_OFFSET)


def measure_sft_comparison(evaluator: Evaluator, prompts, store: EvalStore, settings_hash: str) -> None:
    """The SFT samples the win rates compare with: samples_per_prompt more samples of every evaluation prompt from
    the SFT model, from a random stream no model samples from (seed + `SFT_COMPARISON_SEED_OFFSET`), scored by the
    task's reward. Sample k of a model is compared with comparison sample k of its prompt: two independent draws."""
    args = evaluator.args
    key = sft_comparison_key(evaluator, settings_hash)
    if store.read_cache("comparison", SFT_COMPARISON_RUN, key, args.overwrite) is not None:
        logger.info("Independent SFT samples for the win rates drawn already")
        return
    independent = dataclasses.replace(args, seed=args.seed + SFT_COMPARISON_SEED_OFFSET)
    reference = evaluator.reference
    _, samples = evaluate_policy(reference, reference, evaluator.tokenizer, evaluator.reward, prompts, independent,
                                 is_reference=True, name=SFT_COMPARISON_RUN)
    store.write_samples(SFT_COMPARISON_RUN, samples)
    store.write_cache("comparison", SFT_COMPARISON_RUN, key, {"samples": len(samples)})


def add_win_rates(rows: list[dict], store: EvalStore, tie_tolerance: float) -> None:
    """Each model's classifier win rate against the SFT model (where there is a classifier): its sample k of a prompt
    against the independently drawn SFT sample k of that prompt (`measure_sft_comparison`), with its standard error
    from a bootstrap over prompts (win_rate_se). The SFT model's own row compares its samples with the independent
    ones: 0.5 within its error, the check that the comparison is fair."""
    if all(row.get("reward") is None for row in rows):
        return
    baseline = store.read_samples(SFT_COMPARISON_RUN)
    for row in rows:
        if row["run"] == BEST_OF_N_RUN:
            continue
        samples = store.read_samples(row["name"])
        keys = sorted(samples.keys() & baseline.keys())
        row.update(win_counts([samples[k]["reward"] for k in keys], [baseline[k]["reward"] for k in keys],
                              tie_tolerance, clusters=[k[0] for k in keys]))


def best_of_n_key(evaluator: Evaluator, prompts, settings_hash: str) -> str:
    args = evaluator.args
    return short_hash(settings_hash, model_signature(args.sft_model_path), max(args.best_of_n),
                      len(best_of_n_prompts(args, prompts)))


def best_of_n_prompts(args, prompts) -> list:
    return prompts[: args.best_of_n_prompts] if args.best_of_n_prompts else prompts


def measure_best_of_n(evaluator: Evaluator, prompts, store: EvalStore, settings_hash: str) -> None:
    """Best-of-N from the SFT model: M = max(N) samples per prompt, scored by the task's reward, their rewards stored
    per prompt (`best_of_n_rows` turns them into each N's figure)."""
    args = evaluator.args
    prompts = best_of_n_prompts(args, prompts)
    samples_per_prompt = max(args.best_of_n)
    key = best_of_n_key(evaluator, prompts, settings_hash)
    if store.read_cache("best-of-n", BEST_OF_N_RUN, key, args.overwrite) is not None:
        logger.info("Best-of-N evaluated already (%d prompts x %d samples)", len(prompts), samples_per_prompt)
        return
    logger.info("Best-of-N: sampling %d completions for each of %d prompts from the SFT model",
                samples_per_prompt, len(prompts))
    records = []
    tokenizer = evaluator.tokenizer
    batches = iter_samples(evaluator.reference.sampler, [p.prompt_token_ids for p in prompts], samples_per_prompt,
                           args.max_new_tokens, args.temperature, args.generation_batch_size, args.seed + 1,
                           tokenizer.pad_token_id, stop_token_ids(tokenizer, evaluator.reference.sampler),
                           cache_implementation=args.cache_implementation)
    for batch in progress(batches, total=len(prompts) * samples_per_prompt, desc="best-of-N sampling",
                          unit="samples", weight=lambda batch: len(batch.item_indices)):
        for item, token_ids in zip(batch.item_indices, batch.completion_token_ids()):
            prompt = prompts[item // samples_per_prompt]
            records.append({"prompt_index": prompt.prompt_index, "prompt": prompt.prompt,
                            "completion": decode_tokens(tokenizer, token_ids)})
    for record, reward in zip(records, evaluator.reward.score(_scored_texts(records, args), desc="best-of-N scoring")):
        record["reward"] = reward
    store.write_samples(BEST_OF_N_RUN, records)
    per_prompt = [[r["reward"] for r in records[i * samples_per_prompt : (i + 1) * samples_per_prompt]]
                  for i in range(len(prompts))]
    store.write_cache("best-of-n", BEST_OF_N_RUN, key, {"rewards_per_prompt": per_prompt})


def best_of_n_rows(evaluator: Evaluator, prompts, store: EvalStore, settings_hash: str) -> list[dict]:
    """Each N's row from the stored rewards: the unbiased estimate of the expected best reward among N samples
    (`estimators.best_of_n_expected_reward`) and the analytic KL."""
    args = evaluator.args
    if not args.best_of_n:
        return []
    samples_per_prompt = max(args.best_of_n)
    per_prompt = store.read_cache("best-of-n", BEST_OF_N_RUN, best_of_n_key(evaluator, prompts, settings_hash))[
        "rewards_per_prompt"]
    rows = []
    for n in sorted(set(args.best_of_n)):
        reward, reward_sem = mean_and_standard_error([best_of_n_expected_reward(r, n) for r in per_prompt])
        rows.append({"name": f"best-of-{n}", "run": BEST_OF_N_RUN, "method": "best_of_n", "beta": None,
                     "loss_type": "best_of_n", "label_smoothing": None, "label_noise": 0.0, "step": n,
                     "is_final": True, "reward": reward, "reward_sem": reward_sem, "kl": best_of_n_kl(n),
                     "kl_sem": 0.0, "num_samples": len(per_prompt) * samples_per_prompt,
                     "num_prompts": len(per_prompt)})
    return rows


def add_judge_verdicts(rows: list[dict], evaluator: Evaluator, store: EvalStore, template: str) -> None:
    """LLM-as-judge win rate of each final model against the SFT model (its sample 0 of each prompt against the
    independent SFT sample 0 of that prompt, `measure_sft_comparison`), each comparison judged in both orders
    (`judge.judge`)."""
    args = evaluator.args
    require_source(args.judge_model_path, "judge model", "judge_model_path")
    # "both orders" keeps a cache of the former one-order judge from being read as this one's, and "independent SFT"
    # one of the judge that compared coupled samples
    judge_settings = short_hash(template, args.judge_max_new_tokens, args.judge_prompts, "both orders",
                                 "independent SFT", model_signature(args.judge_model_path))
    baseline = store.read_samples(SFT_COMPARISON_RUN)
    generate = None
    for row in rows:
        if row["run"] in (SFT_RUN, BEST_OF_N_RUN) or not row["is_final"]:
            continue
        key = short_hash(judge_settings, row["settings_hash"], row["model_signature"])
        cached = store.read_cache("judge", row["name"], key, args.overwrite)
        if cached is not None:
            row.update(cached["tally"])
            continue
        if generate is None:
            judge_tokenizer = load_tokenizer(args.judge_model_path, "judge_model_path", args.trust_remote_code)
            judge_model = load_causal_lm(args.judge_model_path, "judge_model_path", evaluator.dtype, evaluator.device,
                                         args.trust_remote_code)
            generate = greedy_generate_fn(judge_model, judge_tokenizer, args.judge_max_new_tokens,
                                          args.judge_batch_size)
        samples = store.read_samples(row["name"])
        keys = sorted(key for key in samples.keys() & baseline.keys() if key[1] == 0)[: args.judge_prompts]
        items = [JudgeItem(k[0], samples[k]["prompt"], samples[k]["completion"], baseline[k]["completion"])
                 for k in keys]
        tally, records = judge(items, generate, template)
        store.write_records("judge", row["name"], records)
        store.write_cache("judge", row["name"], key, {"tally": tally})
        logger.info("[%s] judge (both orders): %d wins, %d losses, %d ties (%d of them disagreements), %d unparsable",
                    row["name"], tally["judge_wins"], tally["judge_losses"], tally["judge_ties"],
                    tally["judge_disagreements"], tally["judge_unparsable"])
        row.update(tally)
