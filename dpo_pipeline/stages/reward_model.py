"""The paper's "PPO" baseline, first half (reward_model.py): a reward model learned from the preference pairs with
TRL's `RewardTrainer`, its pairwise accuracy measured on the held-out pairs; rl.py then trains against it. One run,
in the output folder itself, through the sweep engine."""

from __future__ import annotations

import logging
from pathlib import Path

from ..configs import RewardModelScriptArguments
from ..errors import PipelineError
from ..hub import require_source
from ..models import check_model_flags, load_tokenizer, model_init_kwargs
from ..preferences import check_pairs_match_tokenizer, load_preferences
from ..sweep import StageRecipe, SweepRun, file_sha256, keep_hub_token_out_of_checkpoints, run_sweep

logger = logging.getLogger(__name__)


def reward_model_pairs(pairs, tokenizer):
    """The pairs as TRL's RewardTrainer takes them processed: `chosen_ids` / `rejected_ids` the whole sequences
    prompt + completion, tokenized from their text as the RL trainers present samples to a reward model (decoded
    text, special tokens dropped, tokenized again), so that the reward model is trained on what it will score."""
    from datasets import Dataset

    if not all(column in pairs.column_names for column in ("prompt", "chosen", "rejected")):
        raise PipelineError("pairs_file: the reward model learns from text pairs (prompt, chosen, rejected)")
    if not isinstance(pairs[0]["chosen"], str):
        raise PipelineError("pairs_file: conversational pairs are not supported by reward_model.py yet: use text")

    def ids(texts):
        return tokenizer(texts, add_special_tokens=False)["input_ids"]

    chosen = ids([p + c for p, c in zip(pairs["prompt"], pairs["chosen"])])
    rejected = ids([p + r for p, r in zip(pairs["prompt"], pairs["rejected"])])
    return Dataset.from_dict({"chosen_ids": chosen, "rejected_ids": rejected})


def run_reward_model(script_args: RewardModelScriptArguments, training_args, model_args) -> Path:
    """Train a reward model (a sequence classifier with one output, from `model_name_or_path`: the SFT model by
    default) on the pairs with TRL's `RewardTrainer`; its accuracy on the held-out pairs goes to the summary."""
    from trl import RewardTrainer, get_peft_config

    require_source(model_args.model_name_or_path, "model", "model_name_or_path")
    check_model_flags(model_args)
    if model_args.use_peft:
        raise PipelineError("use_peft: reward_model.py trains every weight of the reward model (LoRA is not supported "
                            "for reward models yet)")
    if not script_args.pairs_file:
        raise PipelineError("pairs_file is not set: give the pairs to learn from (pairs.jsonl of preference_pairs.py)")
    keep_hub_token_out_of_checkpoints(training_args)
    sources = [script_args.pairs_file] + ([script_args.eval_pairs_file] if script_args.eval_pairs_file else [])
    for name, path in zip(("pairs_file", "eval_pairs_file"), sources):
        if not Path(path).is_file():
            raise PipelineError(f"{name}: {path} does not exist")
    run = SweepRun("", training_args, fingerprint_extra={"pairs": [file_sha256(path) for path in sources]})
    trust = training_args.trust_remote_code

    def load_inputs():
        tokenizer = load_tokenizer(model_args.model_name_or_path, "model_name_or_path", trust,
                                   model_args.model_revision)
        pairs = load_preferences(script_args.pairs_file, max_pairs=script_args.max_train_pairs,
                                 seed=training_args.seed)
        check_pairs_match_tokenizer(pairs, tokenizer, script_args.pairs_file)
        train = reward_model_pairs(pairs, tokenizer)
        heldout = None
        if script_args.eval_pairs_file:
            heldout_pairs = load_preferences(script_args.eval_pairs_file, field_name="eval_pairs_file")
            check_pairs_match_tokenizer(heldout_pairs, tokenizer, script_args.eval_pairs_file, "eval_pairs_file")
            heldout = reward_model_pairs(heldout_pairs, tokenizer)
        training_args.model_init_kwargs = model_init_kwargs(model_args, trust)
        return tokenizer, train, heldout

    def trainer(run, inputs, callbacks):
        tokenizer, train, heldout = inputs
        return RewardTrainer(model=model_args.model_name_or_path, args=training_args, train_dataset=train,
                             eval_dataset=heldout, processing_class=tokenizer, peft_config=peft_config,
                             callbacks=callbacks)

    def summary(run, trainer, result):
        summary = {"global_step": trainer.state.global_step, "train_loss": result.training_loss}
        heldout = trainer.eval_dataset
        if heldout is not None:
            metrics = trainer.evaluate(heldout)
            summary.update(heldout_accuracy=metrics["eval_accuracy"], heldout_pairs=len(heldout))
            logger.info("Reward model: pairwise accuracy %.3f on the %d held-out pairs of %s",
                        metrics["eval_accuracy"], len(heldout), script_args.eval_pairs_file)
        return summary

    peft_config = get_peft_config(model_args)
    recipe = StageRecipe(kind="reward_model", title="the reward model",
                         load_inputs=load_inputs, examples=lambda run, inputs: len(inputs[1]),
                         trainer=trainer, summary=summary, progress=lambda run: "reward model",
                         describe=lambda run, inputs: f"Reward model: {len(inputs[1])} pairs of "
                                                      f"{script_args.pairs_file}")
    run_sweep(recipe, [run], script_args, model_args, peft_config)
    return Path(training_args.output_dir)
