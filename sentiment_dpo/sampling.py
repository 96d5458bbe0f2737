"""Preference data: sample N completions per train prefix from the SFT model, score them, pair them."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .cli import PipelineError, require_source
from .configs import PairsArguments
from .data import build_prompts, load_reviews
from .generation import iter_samples
from .metrics import mean_and_standard_error
from .models import SentimentClassifier, default_device, load_causal_lm, load_tokenizer, resolve_dtype
from .pairs import flip_labels, max_pairs_per_prompt, noisy_pairs_file, pair_records
from .runs import RunFolder, atomic_write_text, config_fingerprint, write_jsonl
from .tracking import finish_wandb_run, start_wandb_run

logger = logging.getLogger(__name__)

COMPLETIONS_FILE = "completions.jsonl"
PAIRS_FILE = "pairs.jsonl"
HELDOUT_PAIRS_FILE = "heldout_pairs.jsonl"


def _finished_records(path: Path) -> dict[int, dict]:
    """Prompt records already written by an interrupted run; a torn last line (killed mid-write) is dropped."""
    records = {}
    if not path.is_file():
        return records
    good_lines = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break
        records[record["prompt_index"]] = record
        good_lines.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in good_lines))
    return records


def sample_and_score(model, tokenizer, classifier: SentimentClassifier, prompts, args) -> list[dict]:
    """Scored prompt records: N completions of each prompt and their rewards P(POSITIVE)."""
    n = args.completions_per_prompt
    completions: list[list[str]] = [[] for _ in prompts]
    finished: list[list[bool]] = [[] for _ in prompts]
    item_offset = prompts[0].prompt_index * n
    for batch in iter_samples(model, tokenizer, [p.prompt for p in prompts], n, args.max_new_tokens,
                              args.temperature, args.generation_batch_size, args.seed, item_offset=item_offset,
                              cache_implementation=args.cache_implementation):
        for item, token_ids in zip(batch.item_indices, batch.completion_token_ids()):
            ended = bool(token_ids) and token_ids[-1] == tokenizer.eos_token_id
            completions[item // n].append(tokenizer.decode(token_ids, skip_special_tokens=True))
            finished[item // n].append(ended)
    texts = [(p.prompt if args.score_prompt else "") + c for p, cs in zip(prompts, completions) for c in cs]
    rewards = classifier.score(texts)
    return [
        {**prompt.to_record(), "completions": completions[i], "rewards": rewards[i * n : (i + 1) * n],
         "ended_with_eos": finished[i]}
        for i, prompt in enumerate(prompts)
    ]


def make_preference_pairs(args: PairsArguments) -> Path:
    """Write `completions.jsonl` (scored samples), `pairs.jsonl` (chosen/rejected) and, when asked for,
    `heldout_pairs.jsonl` and the label-noise files `pairs_noise-<q>.jsonl` under `args.output_dir`.

    Prompts are processed in slices whose records are appended as they finish, so an interrupted run continues
    with the prompts it had not finished and ends with the same files as an uninterrupted one.
    """
    require_source(args.dataset_name, "dataset", "dataset_name")
    require_source(args.classifier_name_or_path, "classifier", "classifier_name_or_path")
    require_source(args.model_name_or_path, "SFT model", "model_name_or_path")
    out = Path(args.output_dir)
    folder = RunFolder(out, config_fingerprint(args), "preference_pairs")
    if folder.check(overwrite=args.overwrite):
        logger.info("Pairs already made in %s with this config; nothing to do", out)
        return out / PAIRS_FILE

    device = default_device()
    dtype = resolve_dtype(args.dtype, device)
    tokenizer = load_tokenizer(args.model_name_or_path, "model_name_or_path", args.trust_remote_code)
    reviews = load_reviews(args.dataset_name, args.dataset_split, args.dataset_config, args.text_column,
                           args.label_column)
    model = load_causal_lm(args.model_name_or_path, "model_name_or_path", dtype, device, args.trust_remote_code)
    classifier = SentimentClassifier.load(args.classifier_name_or_path, dtype, device, args.classifier_batch_size,
                                          args.classifier_max_length, args.trust_remote_code)
    prompts = build_prompts(reviews, tokenizer, args.num_prompts + args.heldout_prompts, args.min_prefix_tokens,
                            args.max_prefix_tokens, args.seed)
    if len(prompts) <= args.heldout_prompts:
        raise PipelineError(f"heldout_prompts: the dataset gives only {len(prompts)} prompts, not enough for "
                            f"{args.heldout_prompts} held-out ones and some to train on")
    num_train_prompts = len(prompts) - args.heldout_prompts
    folder.claim({"pairs": args}, overwrite=args.overwrite)  # every input is loaded and checked by now
    if args.report_to == "wandb":
        start_wandb_run(out, args.wandb_project, "preference_pairs", None, "preference_pairs", config=vars(args))

    completions_path = out / COMPLETIONS_FILE
    records = _finished_records(completions_path)
    if records:
        logger.info("Resuming: %d of %d prompts already sampled", len(records), len(prompts))
    slice_size = max(1, args.generation_batch_size // args.completions_per_prompt) * 4
    for start in range(0, len(prompts), slice_size):
        todo = [p for p in prompts[start : start + slice_size] if p.prompt_index not in records]
        if not todo:
            continue
        if len(todo) != len(prompts[start : start + slice_size]):  # a slice is written whole, never in part
            raise PipelineError(f"{completions_path} was not written by this config (it holds part of a slice of "
                                "prompts); move it away to start over")
        new_records = sample_and_score(model, tokenizer, classifier, todo, args)
        with completions_path.open("a") as handle:
            handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in new_records)
            handle.flush()
            os.fsync(handle.fileno())
        records.update((record["prompt_index"], record) for record in new_records)
        logger.info("Sampled and scored %d/%d prompts", len(records), len(prompts))

    ordered = [records[p.prompt_index] for p in prompts]
    pairs = [pair for record in ordered[:num_train_prompts] for pair in pair_records(record, args.pair_mode)]
    for level in args.label_noise:
        write_jsonl(noisy_pairs_file(out / PAIRS_FILE, level), flip_labels(pairs, level, args.seed))
    if args.heldout_prompts:
        heldout = [pair for record in ordered[num_train_prompts:] for pair in pair_records(record, args.pair_mode)]
        write_jsonl(out / HELDOUT_PAIRS_FILE, heldout)
    write_jsonl(out / PAIRS_FILE, pairs)
    summary = _summarize(ordered[:num_train_prompts], pairs, args)
    if args.heldout_prompts:
        summary.update(heldout_prompts=len(ordered) - num_train_prompts, heldout_pairs=len(heldout))
    folder.complete(summary)
    logger.info("%d pairs from %d train prompts in %s: %s", len(pairs), num_train_prompts, out, summary)
    if args.report_to == "wandb":
        import wandb

        wandb.log({f"pairs/{key}": value for key, value in summary.items()})
        table = wandb.Table(columns=["prompt", "chosen", "rejected", "chosen_reward", "rejected_reward"])
        for pair in pairs[:100]:
            table.add_data(pair["prompt"], pair["chosen"], pair["rejected"], pair["chosen_reward"],
                           pair["rejected_reward"])
        wandb.log({"pairs/examples": table})
        finish_wandb_run()
    return out / PAIRS_FILE


def _summarize(records: list[dict], pairs: list[dict], args: PairsArguments) -> dict:
    rewards = [r for record in records for r in record["rewards"]]
    reward_mean, reward_sem = mean_and_standard_error(rewards)
    gaps = [pair["chosen_reward"] - pair["rejected_reward"] for pair in pairs]
    by_label = {}
    for label in sorted({record["label"] for record in records}):
        label_rewards = [r for record in records if record["label"] == label for r in record["rewards"]]
        by_label[f"reward_mean_label_{label}"] = sum(label_rewards) / len(label_rewards)
    max_pairs = len(records) * max_pairs_per_prompt(args.completions_per_prompt, args.pair_mode)
    return {
        "prompts": len(records), "completions": len(rewards), "pairs": len(pairs), "pairs_possible": max_pairs,
        "reward_mean": reward_mean, "reward_sem": reward_sem,
        "chosen_minus_rejected_mean": sum(gaps) / len(gaps) if gaps else 0.0,
        "completions_ended_with_eos": sum(sum(r["ended_with_eos"]) for r in records) / len(rewards),
        **by_label,
    }
