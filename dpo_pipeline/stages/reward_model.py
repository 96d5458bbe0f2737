"""The paper's "PPO" baseline, first half (reward_model.py): a reward model learned from the preference pairs with
TRL's `RewardTrainer`, on the sampled token ids (EOS where it was sampled), the checkpoint kept by its accuracy on
a validation split carved from the training pairs by prompt; its pairwise accuracy is measured on the held-out
pairs, and its scores standardised on SFT samples (the pairs' completions); rl.py then trains against it. One run,
in the output folder itself, through the sweep engine."""

from __future__ import annotations

import logging
import random
import statistics
from pathlib import Path

from ..arguments import RewardModelScriptArguments
from ..errors import PipelineError
from ..hub import require_source
from ..models import (
    LearnedRewardModel,
    check_model_flags,
    fit_embeddings_to_tokenizer,
    load_tokenizer,
    model_init_kwargs,
    reward_model_tokenizer,
)
from ..preference_data import check_pairs_match_tokenizer, is_tokenized, load_preferences
from ..sweep import StageRecipe, SweepRun, file_sha256, keep_hub_token_out_of_checkpoints, run_sweep

logger = logging.getLogger(__name__)


def reward_model_pairs(pairs, tokenizer):
    """The pairs as TRL's RewardTrainer takes them processed: `chosen_ids` / `rejected_ids` the whole sequences
    prompt + completion. Sampled pairs (token ids) are taken as sampled: prompt_ids + chosen_ids, EOS only where it
    was sampled, the sequences RL's samples are scored as (`LearnedRewardModel`); text pairs are tokenized."""
    from datasets import Dataset

    if is_tokenized(pairs):
        chosen = [p + c for p, c in zip(pairs["prompt_ids"], pairs["chosen_ids"])]
        rejected = [p + r for p, r in zip(pairs["prompt_ids"], pairs["rejected_ids"])]
        return Dataset.from_dict({"chosen_ids": chosen, "rejected_ids": rejected})
    if not all(column in pairs.column_names for column in ("prompt", "chosen", "rejected")):
        raise PipelineError("pairs_file: the reward model learns from pairs with a prompt (prompt, chosen, rejected)")
    if not isinstance(pairs[0]["chosen"], str):
        raise PipelineError("pairs_file: conversational pairs are not supported by reward_model.py yet: use text")

    def ids(texts):
        return tokenizer(texts, add_special_tokens=False)["input_ids"]

    chosen = ids([p + c for p, c in zip(pairs["prompt"], pairs["chosen"])])
    rejected = ids([p + r for p, r in zip(pairs["prompt"], pairs["rejected"])])
    return Dataset.from_dict({"chosen_ids": chosen, "rejected_ids": rejected})


def split_by_prompt(pairs, fraction: float, seed: int):
    """(train, validation): the pairs of a seeded random `fraction` of the distinct prompts (at least one prompt
    when fraction > 0) go to validation, the rest to train, so that no prompt is on both sides."""
    column = "prompt_ids" if is_tokenized(pairs) else "prompt"
    keys = [tuple(value) if isinstance(value, list) else value for value in pairs[column]]
    prompts = list(dict.fromkeys(keys))
    if fraction <= 0:
        return pairs, None
    count = max(1, round(fraction * len(prompts)))
    if count >= len(prompts):
        raise PipelineError(f"validation_fraction {fraction} leaves no training prompt of the {len(prompts)}")
    held = set(random.Random(seed).sample(prompts, count))
    validation = [index for index, key in enumerate(keys) if key in held]
    train = [index for index, key in enumerate(keys) if key not in held]
    return pairs.select(train), pairs.select(validation)


def distinct_sequences(dataset) -> list[list[int]]:
    """The distinct sequences (prompt + completion) of RewardTrainer pairs, in their order: each SFT sample once."""
    sequences = dict.fromkeys(tuple(ids) for column in ("chosen_ids", "rejected_ids") for ids in dataset[column])
    return [list(ids) for ids in sequences]


def standardisation(scores: list[float]) -> tuple[float, float]:
    """(mean, sd) of raw reward-model scores, sd the population standard deviation:
    mean = sum(s) / n, sd = sqrt(sum((s - mean)^2) / n); (s - mean) / sd then has mean 0 and sd 1 on them."""
    return statistics.fmean(scores), statistics.pstdev(scores)


def run_reward_model(script_args: RewardModelScriptArguments, training_args, model_args) -> Path:
    """Train a reward model (a sequence classifier with one output, from `model_name_or_path`) on the pairs with
    TRL's `RewardTrainer`; its accuracy on the validation split and on the held-out pairs, and the mean and sd of
    its scores on SFT samples, go to the summary."""
    from transformers import AutoModelForSequenceClassification, set_seed
    from trl import RewardTrainer, get_peft_config
    from trl.trainer.utils import create_model_from_path

    require_source(model_args.model_name_or_path, "model", "model_name_or_path")
    check_model_flags(model_args)
    if model_args.use_peft:
        raise PipelineError("use_peft: reward_model.py trains every weight of the reward model (LoRA is not supported "
                            "for reward models yet)")
    if not script_args.pairs_file:
        raise PipelineError("pairs_file is not set: give the pairs to learn from (pairs.jsonl of preference_pairs.py)")
    if training_args.load_best_model_at_end and not script_args.validation_fraction:
        raise PipelineError("load_best_model_at_end needs a validation split of the training pairs: set "
                            "validation_fraction (the held-out pairs are never used to choose a checkpoint)")
    keep_hub_token_out_of_checkpoints(training_args)
    sources = [script_args.pairs_file] + ([script_args.eval_pairs_file] if script_args.eval_pairs_file else [])
    for name, path in zip(("pairs_file", "eval_pairs_file"), sources):
        if not Path(path).is_file():
            raise PipelineError(f"{name}: {path} does not exist")
    run = SweepRun("", training_args, fingerprint_extra={"pairs": [file_sha256(path) for path in sources]})
    trust = training_args.trust_remote_code
    given_init_kwargs = training_args.model_init_kwargs  # the user's own, merged with the model settings

    def load_inputs():
        tokenizer = load_tokenizer(model_args.model_name_or_path, "model_name_or_path", trust,
                                   model_args.model_revision)
        pairs = load_preferences(script_args.pairs_file, max_pairs=script_args.max_train_pairs,
                                 seed=training_args.seed)
        check_pairs_match_tokenizer(pairs, tokenizer, script_args.pairs_file)
        train, validation = split_by_prompt(pairs, script_args.validation_fraction, training_args.seed)
        train = reward_model_pairs(train, tokenizer)
        validation = reward_model_pairs(validation, tokenizer) if validation is not None else None
        heldout = None
        if script_args.eval_pairs_file:
            heldout_pairs = load_preferences(script_args.eval_pairs_file, field_name="eval_pairs_file")
            check_pairs_match_tokenizer(heldout_pairs, tokenizer, script_args.eval_pairs_file, "eval_pairs_file")
            heldout = reward_model_pairs(heldout_pairs, tokenizer)
        return reward_model_tokenizer(tokenizer), train, validation, heldout

    def trainer(run, inputs, callbacks):
        tokenizer, train, validation, heldout = inputs
        kwargs = {**model_init_kwargs(model_args, trust, given_init_kwargs), "num_labels": 1}
        if training_args.distributed_state.distributed_type in ("MULTI_GPU", "DEEPSPEED"):
            kwargs["device_map"] = None  # as TRL loads it: data-parallel training places the model itself
        # the one-output head and the pad token's embedding row are new weights: seeded here, as the Trainer seeds
        # only after the model exists (unseeded, the same command gave another reward model on every run)
        set_seed(run.args.seed)
        model = create_model_from_path(model_args.model_name_or_path, AutoModelForSequenceClassification, **kwargs)
        return RewardTrainer(model=fit_embeddings_to_tokenizer(model, tokenizer), args=run.args,
                             train_dataset=train, eval_dataset=validation, processing_class=tokenizer,
                             peft_config=peft_config, callbacks=callbacks)

    def summary(run, trainer, result):
        _, _, validation, heldout = trainer_inputs
        summary = {"global_step": trainer.state.global_step, "train_loss": result.training_loss,
                   "best_checkpoint": Path(trainer.state.best_model_checkpoint).name
                   if trainer.state.best_model_checkpoint else None}
        for name, pairs in (("validation", validation), ("heldout", heldout)):
            if pairs is not None:
                metrics = trainer.evaluate(pairs)
                summary.update({f"{name}_accuracy": metrics["eval_accuracy"], f"{name}_pairs": len(pairs)})
                logger.info("Reward model: pairwise accuracy %.3f on the %d %s pairs", metrics["eval_accuracy"],
                            len(pairs), name)
        # SFT samples: every completion of the pairs (training and validation), each once
        sequences = distinct_sequences(trainer.train_dataset)
        if validation is not None:
            sequences = distinct_sequences({column: [*trainer.train_dataset[column], *validation[column]]
                                            for column in ("chosen_ids", "rejected_ids")})
        scorer = LearnedRewardModel(trainer.model, trainer.processing_class,
                                    batch_size=training_args.per_device_eval_batch_size)
        mean, sd = standardisation(scorer.raw_scores(sequences))
        trainer.model.train()
        summary.update(reward_mean=mean, reward_sd=sd, reward_scale_samples=len(sequences))
        logger.info("Reward model: scores on %d SFT samples have mean %.4f and sd %.4f; rl.py standardises by them",
                    len(sequences), mean, sd)
        return summary

    trainer_inputs = None

    def load_and_keep():
        nonlocal trainer_inputs
        trainer_inputs = load_inputs()
        return trainer_inputs

    peft_config = get_peft_config(model_args)
    recipe = StageRecipe(kind="reward_model", title="the reward model",
                         load_inputs=load_and_keep, examples=lambda run, inputs: len(inputs[1]),
                         trainer=trainer, summary=summary, progress=lambda run: "reward model",
                         describe=lambda run, inputs: f"Reward model: {len(inputs[1])} pairs of "
                                                      f"{script_args.pairs_file}"
                                                      + (f" (and {len(inputs[2])} for validation)"
                                                         if inputs[2] is not None else ""))
    run_sweep(recipe, [run], script_args, model_args, peft_config)
    return Path(training_args.output_dir)
