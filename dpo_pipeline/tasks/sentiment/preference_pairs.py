"""Preference data: sample N completions per train prefix from the SFT model, score them, pair them."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ...cli import PipelineError, require_source
from ...configs import PairsArguments
from ...data import decode_tokens
from ...distributed import gather_lists, on_main, process_state
from ...generation import iter_samples
from ...metrics import clustered_mean_and_standard_error
from ...models import SentimentClassifier, check_classifier_labels, load_causal_lm, load_tokenizer, resolve_dtype
from ...pairs import flip_labels, max_pairs_per_prompt, noisy_pairs_file, pair_records
from ...progress import progress
from ...runs import RunFolder, atomic_write_text, config_dict, config_fingerprint, write_jsonl
from ...tracking import finish_wandb_run, start_wandb_run
from .reviews import build_prompts, load_reviews

logger = logging.getLogger(__name__)

COMPLETIONS_FILE = "completions.jsonl"
PAIRS_FILE = "pairs.jsonl"
HELDOUT_PAIRS_FILE = "heldout_pairs.jsonl"


def prompt_slices(prompts: list, args: PairsArguments) -> list[list]:
    """The prompts in the slices whose records are appended to completions.jsonl together: a few sampling batches'
    worth each, so that little is redone after an interruption."""
    size = max(1, args.generation_batch_size // args.completions_per_prompt) * 4
    return [prompts[start : start + size] for start in range(0, len(prompts), size)]


def finished_records(path: Path, slices: list[list]) -> dict[int, dict]:
    """Prompt records of the slices an interrupted run wrote whole. Whatever a kill left of the slice being
    written (some of its lines, a line cut at any byte) is dropped, and the file is cut back to the whole slices,
    which the run then continues after: they hold exactly the bytes an uninterrupted run writes."""
    if not path.is_file():
        return {}
    written = {}
    for line in path.read_bytes().split(b"\n"):
        try:
            record = json.loads(line.decode())
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and "prompt_index" in record:
            written[record["prompt_index"]] = record
    kept = {}
    for prompt_slice in slices:
        if not all(prompt.prompt_index in written for prompt in prompt_slice):
            break
        kept.update((prompt.prompt_index, written[prompt.prompt_index]) for prompt in prompt_slice)
    atomic_write_text(path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in kept.values()))
    return kept


def sample_and_score(model, tokenizer, classifier: SentimentClassifier, prompts, args) -> list[dict]:
    """Scored prompt records: N completions of each prompt (token ids as sampled, and their text) and their rewards
    P(POSITIVE)."""
    n = args.completions_per_prompt
    completion_ids: list[list[list[int]]] = [[] for _ in prompts]
    item_offset = prompts[0].prompt_index * n
    for batch in iter_samples(model, [p.prompt_token_ids for p in prompts], n, args.max_new_tokens,
                              args.temperature, args.generation_batch_size, args.seed, tokenizer.pad_token_id,
                              tokenizer.eos_token_id, item_offset=item_offset,
                              cache_implementation=args.cache_implementation):
        for item, token_ids in zip(batch.item_indices, batch.completion_token_ids()):
            completion_ids[item // n].append(token_ids)
    completions = [[decode_tokens(tokenizer, ids) for ids in per_prompt] for per_prompt in completion_ids]
    texts = [(p.prompt if args.score_prompt else "") + c for p, cs in zip(prompts, completions) for c in cs]
    rewards = classifier.score(texts)
    return [
        {**prompt.to_record(), "completions": completions[i], "completion_token_ids": completion_ids[i],
         "rewards": rewards[i * n : (i + 1) * n],
         "ended_with_eos": [bool(ids) and ids[-1] == tokenizer.eos_token_id for ids in completion_ids[i]]}
        for i, prompt in enumerate(prompts)
    ]


def pair_prompts(reviews, heldout_reviews, tokenizer, args: PairsArguments) -> tuple[list, int]:
    """The train prompts, then the held-out ones, and how many are train prompts. Held-out prompts come from
    `heldout_split` when it is set (IMDb's `unsupervised` split, say, so that every train review gives a train
    prompt), else from the same split as the train prompts, after them."""
    if heldout_reviews is None:
        prompts = build_prompts(reviews, tokenizer, args.num_prompts + args.heldout_prompts, args.min_prefix_tokens,
                                args.max_prefix_tokens, args.seed, split=args.dataset_split)
        if len(prompts) <= args.heldout_prompts:
            raise PipelineError(f"heldout_prompts: the dataset gives only {len(prompts)} prompts, not enough for "
                                f"{args.heldout_prompts} held-out ones and some to train on")
        return prompts, len(prompts) - args.heldout_prompts
    train = build_prompts(reviews, tokenizer, args.num_prompts, args.min_prefix_tokens, args.max_prefix_tokens,
                          args.seed, split=args.dataset_split)
    heldout = build_prompts(heldout_reviews, tokenizer, args.heldout_prompts, args.min_prefix_tokens,
                            args.max_prefix_tokens, args.seed + 1, split=args.heldout_split, first_index=len(train))
    return train + heldout, len(train)


def make_preference_pairs(args: PairsArguments) -> Path:
    """Write `completions.jsonl` (scored samples), `pairs.jsonl` (chosen/rejected) and, when asked for,
    `heldout_pairs.jsonl` and the label-noise files `pairs_noise-<q>.jsonl` under `args.output_dir`.

    Prompts are processed in slices whose records are appended as they finish, so an interrupted run continues
    with the prompts it had not finished and ends with the same files as an uninterrupted one.
    """
    require_source(args.dataset_name, "dataset", "dataset_name")
    require_source(args.classifier_name_or_path, "classifier", "classifier_name_or_path")
    require_source(args.model_name_or_path, "SFT model", "model_name_or_path")
    check_classifier_labels(args.classifier_name_or_path, args.trust_remote_code)  # before any weights load
    out = Path(args.output_dir)
    folder = RunFolder(out, config_fingerprint(args), "preference_pairs")
    state = process_state()
    finished = folder.check(overwrite=args.overwrite)
    state.wait_for_everyone()
    if finished:
        logger.info("Pairs already made in %s with this config; nothing to do", out)
        return out / PAIRS_FILE

    device = state.device
    tokenizer = load_tokenizer(args.model_name_or_path, "model_name_or_path", args.trust_remote_code)
    reviews = load_reviews(args.dataset_name, args.dataset_split, args.dataset_config, args.text_column,
                           args.label_column)
    heldout_reviews = None
    if args.heldout_prompts and args.heldout_split not in (None, args.dataset_split):
        heldout_reviews = load_reviews(args.dataset_name, args.heldout_split, args.dataset_config, args.text_column,
                                       args.label_column)
    model = load_causal_lm(args.model_name_or_path, "model_name_or_path", resolve_dtype(args.dtype, device), device,
                           args.trust_remote_code, float32_logits=True)
    classifier = SentimentClassifier.load(args.classifier_name_or_path, resolve_dtype(args.measure_dtype, device),
                                          device, args.classifier_batch_size, args.classifier_max_length,
                                          args.trust_remote_code)
    prompts, num_train_prompts = pair_prompts(reviews, heldout_reviews, tokenizer, args)
    completions_path = out / COMPLETIONS_FILE
    slices = prompt_slices(prompts, args)

    def claim_and_resume() -> set[int]:  # every input is loaded and checked by now
        folder.claim({"pairs": args}, overwrite=args.overwrite)
        if args.report_to == "wandb":
            start_wandb_run(out, args.wandb_project, "preference_pairs", config={"pairs": config_dict(args)})
        return set(finished_records(completions_path, slices))

    done = on_main(claim_and_resume)
    if done:
        logger.info("Resuming: %d of %d prompts already sampled", len(done), len(prompts))
    sample_slices([s for s in slices if s[0].prompt_index not in done], completions_path, model, tokenizer,
                  classifier, args, state)
    if state.is_main_process:
        write_pairs(finished_records(completions_path, slices), prompts, num_train_prompts, folder, args)
    state.wait_for_everyone()
    return out / PAIRS_FILE


def sample_slices(todo: list[list], completions_path: Path, model, tokenizer, classifier, args, state) -> None:
    """Sample and score the slices of prompts not done yet, a slice per process at a time, and append them to the
    completions log in prompt order, on the main process. Each batch is seeded from its first item, so the samples
    are those of a one-process run whatever the number of processes."""
    processes, rank = state.num_processes, state.process_index
    rounds = [todo[start : start + processes] for start in range(0, len(todo), processes)]
    sampled, reward_sum = 0, 0.0
    for round_slices in progress(rounds, total=sum(map(len, todo)), desc="Sampling and scoring", unit="prompts",
                                 weight=lambda slices: sum(map(len, slices))):
        mine = sample_and_score(model, tokenizer, classifier, round_slices[rank], args) if rank < len(round_slices) \
            else []
        records = [record for per_process in gather_lists([mine]) for record in per_process]
        if not state.is_main_process:
            continue
        with completions_path.open("a") as handle:
            handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
            handle.flush()
            os.fsync(handle.fileno())
        sampled += len(records)
        reward_sum += sum(sum(record["rewards"]) for record in records)
        if args.report_to == "wandb":
            import wandb

            wandb.log({"pairs/prompts_sampled": sampled,
                       "pairs/reward_mean_so_far": reward_sum / (sampled * args.completions_per_prompt)})


def write_pairs(records: dict[int, dict], prompts: list, num_train_prompts: int, folder: RunFolder,
                args: PairsArguments) -> None:
    """pairs.jsonl, heldout_pairs.jsonl and the label-noise files from every prompt's scored completions, the folder
    marked complete, the summary logged (and to wandb)."""
    out = folder.path
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


def _summarize(records: list[dict], pairs: list[dict], args: PairsArguments) -> dict:
    rewards = [r for record in records for r in record["rewards"]]
    reward_mean, reward_sem = clustered_mean_and_standard_error(
        rewards, [record["prompt_index"] for record in records for _ in record["rewards"]])
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
