"""The whole pipeline's time, stage by stage, estimated from the benchmark's stage throughputs."""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

from dpo_pipeline.cli import parse_config

from .arguments import BenchArguments
from .harness import config_label

logger = logging.getLogger(__name__)


@dataclass
class PipelineWorkload:
    """How much work each stage of a pipeline config does, in the units the benchmark measures."""

    sft_tokens: float  # training tokens of sft.py: examples x mean length x epochs
    pair_completions: int  # sampled and scored by preference_pairs.py (train and held-out prompts)
    dpo_runs: int
    dpo_pairs_per_run: float  # pairs x epochs (an upper bound: pairs with equal rewards are dropped)
    eval_models: int  # SFT + every final model and checkpoint of the sweep
    eval_samples_per_model: int
    heldout_sequences_per_model: int  # chosen and rejected of every held-out pair
    best_of_n_samples: int


def pipeline_workload(sft_args, pairs_args, dpo_script_args, dpo_args, eval_args, sft_examples: int,
                      sft_mean_tokens: float) -> PipelineWorkload:
    from dpo_pipeline.pair_building import max_pairs_per_prompt

    pairs_per_prompt = max_pairs_per_prompt(pairs_args.completions_per_prompt, pairs_args.pair_mode)
    train_pairs = pairs_args.num_prompts * pairs_per_prompt
    if dpo_script_args.max_train_pairs:
        train_pairs = min(train_pairs, dpo_script_args.max_train_pairs)
    pairs_per_run = train_pairs * dpo_args.num_train_epochs
    steps = math.ceil(pairs_per_run / (dpo_args.per_device_train_batch_size * dpo_args.gradient_accumulation_steps))
    checkpoints = steps // dpo_args.save_steps if eval_args.include_checkpoints and dpo_args.save_steps else 0
    runs = len(dpo_script_args.sweep)
    best_of_n = max(eval_args.best_of_n, default=0) * (eval_args.best_of_n_prompts or eval_args.num_prompts)
    return PipelineWorkload(
        sft_tokens=sft_examples * min(sft_mean_tokens, sft_args.max_length or sft_mean_tokens)
        * sft_args.num_train_epochs,
        pair_completions=(pairs_args.num_prompts + pairs_args.heldout_prompts) * pairs_args.completions_per_prompt,
        dpo_runs=runs, dpo_pairs_per_run=pairs_per_run,
        eval_models=1 + runs * (checkpoints + 1),
        eval_samples_per_model=eval_args.num_prompts * eval_args.samples_per_prompt,
        heldout_sequences_per_model=2 * pairs_args.heldout_prompts * pairs_per_prompt
        if eval_args.heldout_pairs_file else 0,
        best_of_n_samples=best_of_n,
    )


def pipeline_estimate(work: PipelineWorkload, sft_tokens_per_s: float, dpo_pairs_per_s: float,
                      completions_per_s: float, texts_per_s: float, kl_sequences_per_s: float) -> dict:
    """Seconds per stage of a whole pipeline run, from the stage throughputs (model loading not counted):

        sft   = sft_tokens / sft_tokens_per_s
        pairs = pair_completions (1/completions_per_s + 1/texts_per_s)        sample, then score
        dpo   = dpo_runs * dpo_pairs_per_run / dpo_pairs_per_s
        eval  = (eval_models * eval_samples + best_of_n_samples) (1/completions_per_s + 1/texts_per_s)
                + (eval_models - 1) * eval_samples / kl_sequences_per_s     policy and SFT forward, SFT's KL is 0
                + eval_models * heldout_sequences / (2 kl_sequences_per_s)  one model's forward per sequence
    """
    per_sample = 1 / completions_per_s + 1 / texts_per_s
    stages = {
        "sft": work.sft_tokens / sft_tokens_per_s,
        "pairs": work.pair_completions * per_sample,
        "dpo": work.dpo_runs * work.dpo_pairs_per_run / dpo_pairs_per_s,
        "eval": (work.eval_models * work.eval_samples_per_model + work.best_of_n_samples) * per_sample
        + (work.eval_models - 1) * work.eval_samples_per_model / kl_sequences_per_s
        + work.eval_models * work.heldout_sequences_per_model / (2 * kl_sequences_per_s),
    }
    return {"seconds": stages, "total_seconds": sum(stages.values()), "workload": dataclasses.asdict(work)}


@dataclass
class MethodsWorkload:
    """How much work the method leaderboard (methods.yaml beside methods_online.yaml) does."""

    offline_runs: int
    pairs_per_run: float  # pairs x epochs, as a DPO run (KTO trains on as many unpaired examples, 2 per pair)
    online_runs: int
    prompts_per_online_run: float  # prompts x epochs, each sampled twice and scored twice
    eval_models: int  # the new final models (make methods evaluates no checkpoint of them)
    eval_samples_per_model: int


def methods_workload(methods_script_args, methods_args, online_script_args, online_args, pairs_args,
                     eval_args) -> MethodsWorkload:
    from dpo_pipeline.pair_building import max_pairs_per_prompt

    pairs = pairs_args.num_prompts * max_pairs_per_prompt(pairs_args.completions_per_prompt, pairs_args.pair_mode)
    if methods_script_args.max_train_pairs:
        pairs = min(pairs, methods_script_args.max_train_pairs)
    prompts = pairs_args.num_prompts  # online DPO samples on the pairs' prompts
    if online_script_args.max_prompts:
        prompts = min(prompts, online_script_args.max_prompts)
    offline, online = len(methods_script_args.sweep), len(online_script_args.sweep)
    return MethodsWorkload(offline_runs=offline, pairs_per_run=pairs * methods_args.num_train_epochs,
                           online_runs=online, prompts_per_online_run=prompts * online_args.num_train_epochs,
                           eval_models=offline + online,
                           eval_samples_per_model=eval_args.num_prompts * eval_args.samples_per_prompt)


def methods_estimate(work: MethodsWorkload, dpo_pairs_per_s: float, completions_per_s: float, texts_per_s: float,
                     kl_sequences_per_s: float) -> dict:
    """Seconds of the method leaderboard on the benchmark's machine, from the stage throughputs (model loading not
    counted; every offline method at DPO's pairs per second: the reference-free ones skip a reference pass that the
    precomputed reference log-probs make small anyway):

        offline = offline_runs * pairs_per_run / dpo_pairs_per_s
        online  = online_runs * prompts_per_run * (2 (1/completions_per_s + 1/texts_per_s) + 1/dpo_pairs_per_s)
                  two completions sampled and scored per prompt, then one DPO step on the pair
        eval    = eval_models * eval_samples * (1/completions_per_s + 1/texts_per_s + 1/kl_sequences_per_s)
    """
    per_sample = 1 / completions_per_s + 1 / texts_per_s
    stages = {
        "offline": work.offline_runs * work.pairs_per_run / dpo_pairs_per_s,
        "online": work.online_runs * work.prompts_per_online_run * (2 * per_sample + 1 / dpo_pairs_per_s),
        "eval": work.eval_models * work.eval_samples_per_model * (per_sample + 1 / kl_sequences_per_s),
    }
    return {"seconds": stages, "total_seconds": sum(stages.values()), "workload": dataclasses.asdict(work)}


def methods_workload_of(methods_path: str, online_path: str, pairs_path: str, eval_path: str) -> MethodsWorkload:
    """`methods_workload` of the config files (the leaderboard's dpo.py and rl.py configs, its pairs and eval)."""
    import dpo as dpo_script
    import eval as eval_script
    import preference_pairs as pairs_script
    import rl as rl_script

    methods_script_args, methods_args, _ = parse_config(dpo_script.dataclass_types(), ["--config", methods_path])
    online_script_args, online_args, _ = parse_config(rl_script.dataclass_types(), ["--config", online_path])
    (pairs_args,) = parse_config(pairs_script.dataclass_types(), ["--config", pairs_path])
    (eval_args,) = parse_config(eval_script.dataclass_types(), ["--config", eval_path])
    return methods_workload(methods_script_args, methods_args, online_script_args, online_args, pairs_args, eval_args)


def estimate_from_results(args: BenchArguments, results: dict) -> dict | None:
    """`pipeline_estimate` for `args.pipeline_configs` from this run's figures, or None where a stage it needs was
    not timed (the SFT and DPO configs of the pipeline, at the DPO config's own batch, and its sampling cache)."""
    import dpo as dpo_script
    import eval as eval_script
    import preference_pairs as pairs_script
    import sft as sft_script

    sft_path, pairs_path, dpo_path, eval_path = args.pipeline_configs
    _, sft_args, _ = parse_config(sft_script.dataclass_types(), ["--config", sft_path])
    (pairs_args,) = parse_config(pairs_script.dataclass_types(), ["--config", pairs_path])
    dpo_script_args, dpo_args, _ = parse_config(dpo_script.dataclass_types(), ["--config", dpo_path])
    (eval_args,) = parse_config(eval_script.dataclass_types(), ["--config", eval_path])
    stages = results["stages"]
    dpo_batch = dpo_args.per_device_train_batch_size * dpo_args.gradient_accumulation_steps
    dpo_key = f"{config_label(dpo_path)} @ {dpo_batch}"
    try:
        rates = dict(
            sft_tokens_per_s=stages["sft"][config_label(sft_path)]["tokens_per_s"],
            dpo_pairs_per_s=stages["dpo"][dpo_key]["pairs_per_s"],
            completions_per_s=stages["sample"][f"{eval_args.cache_implementation} cache"]["completions_per_s"],
            texts_per_s=stages["score"]["texts_per_s"], kl_sequences_per_s=stages["kl"]["sequences_per_s"])
    except KeyError as missing:
        logger.info("No end-to-end estimate: this run did not time %s", missing)
        return None
    work = pipeline_workload(sft_args, pairs_args, dpo_script_args, dpo_args, eval_args, args.sft_examples,
                             args.sft_mean_tokens)
    estimate = {"configs": list(args.pipeline_configs), "rates": rates, **pipeline_estimate(work, **rates)}
    if args.methods_configs:
        methods_work = methods_workload_of(*args.methods_configs)
        estimate["methods"] = {"configs": list(args.methods_configs), **methods_estimate(
            methods_work, **{key: rates[key] for key in ("dpo_pairs_per_s", "completions_per_s", "texts_per_s",
                                                           "kl_sequences_per_s")})}
    return estimate
