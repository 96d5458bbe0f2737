"""Preference data (preference_pairs.py): sample N completions per prompt from the SFT model, score them with the
task's reward, pair them. The prompts and the reward come from the task (`tasks.Task.pair_prompts`, `load_reward`)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ..errors import PipelineError
from ..hub import require_source
from ..arguments import PairsArguments
from ..data import decode_tokens
from ..distributed import gather_lists, on_main, process_state
from ..generation import iter_samples, stop_token_ids
from ..estimators import clustered_mean_and_standard_error
from ..models import load_causal_lm, load_tokenizer, resolve_dtype
from ..pair_building import flip_labels, max_pairs_per_prompt, noisy_pairs_file, pair_records
from ..progress import progress
from ..runs import RunFolder, atomic_write_text, config_dict, config_fingerprint, write_jsonl
from ..tracking import finish_wandb_run, start_wandb_run
from ..tasks import Reward, get_task

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


def sample_and_score(model, tokenizer, reward: Reward, prompts, args) -> list[dict]:
    """Scored prompt records: N completions of each prompt (token ids as sampled, and their text) and their rewards
    (the task's: P(POSITIVE) for the sentiment task)."""
    n = args.completions_per_prompt
    completion_ids: list[list[list[int]]] = [[] for _ in prompts]
    item_offset = prompts[0].prompt_index * n
    stops = stop_token_ids(tokenizer, model)
    for batch in iter_samples(model, [p.prompt_token_ids for p in prompts], n, args.max_new_tokens,
                              args.temperature, args.generation_batch_size, args.seed, tokenizer.pad_token_id,
                              stops, item_offset=item_offset,
                              cache_implementation=args.cache_implementation):
        for item, token_ids in zip(batch.item_indices, batch.completion_token_ids()):
            completion_ids[item // n].append(token_ids)
    completions = [[decode_tokens(tokenizer, ids) for ids in per_prompt] for per_prompt in completion_ids]
    texts = [(p.prompt if args.score_prompt else "") + c for p, cs in zip(prompts, completions) for c in cs]
    rewards = reward.score(texts)
    return [
        {**prompt.to_record(), "completions": completions[i], "completion_token_ids": completion_ids[i],
         "rewards": rewards[i * n : (i + 1) * n],
         "ended_with_eos": [bool(ids) and ids[-1] in stops for ids in completion_ids[i]]}
        for i, prompt in enumerate(prompts)
    ]


def make_preference_pairs(args: PairsArguments) -> Path:
    """Write `completions.jsonl` (scored samples), `pairs.jsonl` (chosen/rejected) and, when asked for,
    `heldout_pairs.jsonl` and the label-noise files `pairs_noise-<q>.jsonl` under `args.output_dir`.

    Prompts are processed in slices whose records are appended as they finish, so an interrupted run continues
    with the prompts it had not finished and ends with the same files as an uninterrupted one.
    """
    task = get_task(args.task)
    if task.pair_prompts is None:
        raise PipelineError(f"task: the {task.name} task has no prompts to sample pairs from (its pairs come with its "
                            "data): train dpo.py on them directly")
    require_source(args.dataset_name, "dataset", "dataset_name")
    task.check_reward(args)
    if not task.has_reward(args):
        raise PipelineError("the pairs are ranked by the task's reward, and there is none with these settings: set "
                            "classifier_name_or_path")
    require_source(args.model_name_or_path, "SFT model", "model_name_or_path")
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
    model = load_causal_lm(args.model_name_or_path, "model_name_or_path", resolve_dtype(args.dtype, device), device,
                           args.trust_remote_code, float32_logits=True)
    reward = task.load_reward(args, device, resolve_dtype(args.measure_dtype, device))
    prompts, num_train_prompts = task.pair_prompts(args, tokenizer)
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
                  reward, args, state)
    if state.is_main_process:
        write_pairs(finished_records(completions_path, slices), prompts, num_train_prompts, folder, args)
    state.wait_for_everyone()
    return out / PAIRS_FILE


def sample_slices(todo: list[list], completions_path: Path, model, tokenizer, reward: Reward, args, state) -> None:
    """Sample and score the slices of prompts not done yet, a slice per process at a time, and append them to the
    completions log in prompt order, on the main process. Each batch is seeded from its first item, so the samples
    are those of a one-process run whatever the number of processes."""
    processes, rank = state.num_processes, state.process_index
    rounds = [todo[start : start + processes] for start in range(0, len(todo), processes)]
    sampled, reward_sum = 0, 0.0
    for round_slices in progress(rounds, total=sum(map(len, todo)), desc="Sampling and scoring", unit="prompts",
                                 weight=lambda slices: sum(map(len, slices))):
        mine = sample_and_score(model, tokenizer, reward, round_slices[rank], args) if rank < len(round_slices) \
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
