"""The DPO paper's on-policy RL baselines (Figure 2, left), with TRL's own trainers:

    reward_model.py   a reward model learned from pairs.jsonl with TRL's `RewardTrainer` (the paper's "PPO" setting
                      scores its samples with it); its pairwise accuracy on the held-out pairs is reported
    rl.py             RLOO or GRPO from the SFT model on the prompts of the pairs, KL-regularised to the SFT model
                      (`beta`), rewarded by the learned reward model or by the true reward, P(POSITIVE) of the
                      classifier (the paper's "PPO-GT"); one run per sweep entry, into the folder eval.py reads

TRL 1.16 no longer has PPO; RLOO is its REINFORCE-style successor for this setting: each prompt's completions
share a leave-one-out baseline, and beta x (the sampled sequence's log-ratio to the reference) is subtracted from
its reward, the KL-regularised objective PPO optimises in the paper.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path

from .checkpoints import check_free_disk, training_steps
from .cli import PipelineError, require_source
from .configs import RewardModelScriptArguments, RLScriptArguments, require_the_gpu_asked_for
from .distributed import on_main, process_state
from .models import SentimentClassifier, check_classifier_labels, check_model_flags, load_tokenizer, model_init_kwargs
from .preferences import check_pairs_match_tokenizer, is_tokenized, load_preferences
from .runs import COMPLETE_FILE, RunFolder, config_fingerprint
from .tracking import start_wandb_run, wants_wandb
from .training import (
    TrainingRun,
    _model_dtype,
    apply_overrides,
    configs_for_tracking,
    disk_needed,
    file_sha256,
    parse_sweep_entry,
    sweep_run_name,
    write_run_info,
)

logger = logging.getLogger(__name__)

# Sweep keys of rl.py that choose the run's trainer and reward rather than a training setting.
RL_SWEEP_KEYS = ("method", "reward")
# Settings of GRPOConfig that TRL's RLOO trainer does not read: set with method rloo they would do nothing.
GRPO_ONLY = ("loss_type", "scale_rewards", "importance_sampling_level", "delta", "entropy_coef", "top_entropy_quantile",
             "use_bias_correction_kl", "cast_lm_head_to_fp32")


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
    output_dir = Path(training_args.output_dir)
    sources = [script_args.pairs_file] + ([script_args.eval_pairs_file] if script_args.eval_pairs_file else [])
    for name, path in zip(("pairs_file", "eval_pairs_file"), sources):
        if not Path(path).is_file():
            raise PipelineError(f"{name}: {path} does not exist")
    extra = {"pairs": [file_sha256(path) for path in sources]}
    folder = RunFolder(output_dir, config_fingerprint(script_args, training_args, model_args, extra=extra),
                       "reward_model")
    run = TrainingRun(folder, training_args, script_args.overwrite)
    if run.is_finished():
        logger.info("The reward model is already trained in %s with this config; nothing to do", output_dir)
        return output_dir
    trust = training_args.trust_remote_code
    tokenizer = load_tokenizer(model_args.model_name_or_path, "model_name_or_path", trust, model_args.model_revision)
    pairs = load_preferences(script_args.pairs_file, max_pairs=script_args.max_train_pairs, seed=training_args.seed)
    check_pairs_match_tokenizer(pairs, tokenizer, script_args.pairs_file)
    train = reward_model_pairs(pairs, tokenizer)
    heldout = None
    if script_args.eval_pairs_file:
        heldout_pairs = load_preferences(script_args.eval_pairs_file, field_name="eval_pairs_file")
        check_pairs_match_tokenizer(heldout_pairs, tokenizer, script_args.eval_pairs_file, "eval_pairs_file")
        heldout = reward_model_pairs(heldout_pairs, tokenizer)
    training_args.model_init_kwargs = model_init_kwargs(model_args, trust)
    require_the_gpu_asked_for(training_args)
    peft_config = get_peft_config(model_args)
    steps = training_steps(len(train), training_args)
    on_main(lambda: check_free_disk(output_dir, disk_needed(model_args, training_args, peft_config, steps).total,
                                    f"the reward model ({steps} steps)"))
    configs = {"script": script_args, "training": training_args, "model": model_args}
    run.claim(configs)
    if wants_wandb(training_args.report_to):
        run.on_main(start_wandb_run, output_dir, script_args.wandb_project, "reward_model",
                    config=configs_for_tracking(configs))
    logger.info("Reward model: %d pairs of %s", len(train), script_args.pairs_file)
    trainer = RewardTrainer(model=model_args.model_name_or_path, args=training_args, train_dataset=train,
                            eval_dataset=heldout, processing_class=tokenizer, peft_config=peft_config,
                            callbacks=run.callbacks("reward model"))
    result = trainer.train(resume_from_checkpoint=run.resume_from())
    summary = {"global_step": trainer.state.global_step, "train_loss": result.training_loss}
    if heldout is not None:
        metrics = trainer.evaluate(heldout)
        summary.update(heldout_accuracy=metrics["eval_accuracy"], heldout_pairs=len(heldout))
        logger.info("Reward model: pairwise accuracy %.3f on the %d held-out pairs of %s",
                    metrics["eval_accuracy"], len(heldout), script_args.eval_pairs_file)
    run.finish(trainer, summary, model_args.model_name_or_path, _model_dtype(model_args))
    return output_dir


class ClassifierReward:
    """The true reward as a TRL reward function: P(POSITIVE) of prompt + completion, the label found by name (the
    same reward the pairs were ranked by and eval.py measures)."""

    __name__ = "classifier"  # TRL names the logged reward column after it

    def __init__(self, classifier: SentimentClassifier):
        self.classifier = classifier

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        return self.classifier.score([prompt + completion for prompt, completion in zip(prompts, completions)])


def training_prompts(pairs_file: str, tokenizer, max_prompts: int | None):
    """The distinct prompts of the pairs, in their order: a `datasets.Dataset` with one `prompt` column of text."""
    from datasets import Dataset

    pairs = load_preferences(pairs_file)
    check_pairs_match_tokenizer(pairs, tokenizer, pairs_file)
    if "prompt" not in pairs.column_names or not isinstance(pairs[0]["prompt"], str):
        raise PipelineError(f"pairs_file: {pairs_file} has no text prompts to train on")
    prompts = list(dict.fromkeys(pairs["prompt"]))[:max_prompts]
    if is_tokenized(pairs):
        logger.info("RL samples its own completions: of the pairs only the %d distinct prompts are used", len(prompts))
    return Dataset.from_dict({"prompt": prompts})


def rl_config(args, method: str):
    """The trainer's config: GRPOConfig as parsed for grpo; for rloo an RLOOConfig with the same values (refused
    where a GRPO-only setting was changed: RLOO would not read it)."""
    from trl import GRPOConfig, RLOOConfig

    if method == "grpo":
        return args
    defaults = {field.name: field.default for field in dataclasses.fields(GRPOConfig)}
    changed = [name for name in GRPO_ONLY if getattr(args, name) != defaults[name]]
    if changed:
        raise PipelineError(f"{', '.join(changed)} has no effect with method rloo (a GRPO setting): drop it or use "
                            "method=grpo")
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(RLOOConfig)
              if field.init and hasattr(args, field.name)}
    values.update(args.given_generation_settings)
    return RLOOConfig(**values)  # converted again as dataclasses.replace converts a DPO sweep entry's config


def run_rl_sweep(script_args: RLScriptArguments, training_args, model_args) -> list[Path]:
    """One RL run per sweep entry into `<output_dir>/<entry>` (beside the DPO runs, where eval.py finds them);
    finished runs are skipped, interrupted ones resume from their last checkpoint."""
    from trl import GRPOTrainer, RLOOTrainer, get_peft_config

    require_source(model_args.model_name_or_path, "model", "model_name_or_path")
    check_model_flags(model_args)
    if not script_args.pairs_file or not Path(script_args.pairs_file).is_file():
        raise PipelineError(f"pairs_file: {script_args.pairs_file} does not exist: run preference_pairs.py first")
    root = Path(training_args.output_dir)
    sweep_name = script_args.sweep_name or root.name
    runs = []
    for entry in script_args.sweep:
        overrides = parse_sweep_entry(entry)
        choice = {key: overrides.get(key, getattr(script_args, key)) for key in RL_SWEEP_KEYS}
        for key, allowed in (("method", ("rloo", "grpo")), ("reward", ("classifier", "reward_model"))):
            if choice[key] not in allowed:
                raise PipelineError(f"sweep entry {entry!r}: {key}={choice[key]} is not one of {', '.join(allowed)}")
        base = copy.copy(training_args)  # its generation settings as given, for TRL to derive them again
        for name, value in training_args.given_generation_settings.items():
            setattr(base, name, value)
        args = apply_overrides(base, {k: v for k, v in overrides.items() if k not in RL_SWEEP_KEYS})
        rl_config(args, choice["method"])  # refuses settings the trainer would ignore, before anything is written
        runs.append((sweep_run_name(overrides), overrides, choice, args))
    names = [name for name, *_ in runs]
    if len(set(names)) != len(names):
        raise PipelineError(f"sweep has duplicate entries: {', '.join(names)}")

    trust = training_args.trust_remote_code
    tokenizer = load_tokenizer(model_args.model_name_or_path, "model_name_or_path", trust, model_args.model_revision)
    prompts = training_prompts(script_args.pairs_file, tokenizer, script_args.max_prompts)
    state = process_state(training_args)
    rewards = {}
    if any(choice["reward"] == "classifier" for _, _, choice, _ in runs):
        require_source(script_args.classifier_name_or_path, "classifier", "classifier_name_or_path")
        check_classifier_labels(script_args.classifier_name_or_path, trust)
        rewards["classifier"] = ClassifierReward(SentimentClassifier.load(
            script_args.classifier_name_or_path, device=state.device, batch_size=script_args.classifier_batch_size,
            max_length=script_args.classifier_max_length, trust_remote_code=trust))
    reward_model_accuracy = None
    if any(choice["reward"] == "reward_model" for _, _, choice, _ in runs):
        path = script_args.reward_model_path
        if not path or not (Path(path) / COMPLETE_FILE).is_file():
            raise PipelineError(f"reward_model_path: {path} holds no finished reward model: run reward_model.py first")
        rewards["reward_model"] = path
        import json

        reward_model_accuracy = json.loads((Path(path) / COMPLETE_FILE).read_text())["summary"].get("heldout_accuracy")
    require_the_gpu_asked_for(training_args)
    peft_config = get_peft_config(model_args)
    fingerprints = {"pairs": file_sha256(script_args.pairs_file)}
    if "reward_model" in rewards:
        fingerprints["reward_model"] = file_sha256(Path(rewards["reward_model"]) / COMPLETE_FILE)

    def check_disk():
        needed = sum(disk_needed(model_args, args, peft_config, training_steps(len(prompts), args)).total
                     for name, _, _, args in runs if not (root / name / COMPLETE_FILE).is_file())
        check_free_disk(root, needed, "the sweep's unfinished runs")

    on_main(check_disk)
    finished = []
    for name, overrides, choice, run_args in runs:
        run_dir = root / name
        args = dataclasses.replace(run_args, output_dir=str(run_dir), run_name=f"{sweep_name}/{name}",
                                   model_init_kwargs=model_init_kwargs(model_args, trust),
                                   **run_args.given_generation_settings)
        fingerprint = config_fingerprint(script_args, args, model_args, extra={**fingerprints, "choice": choice})
        run = TrainingRun(RunFolder(run_dir, fingerprint, "rl"), args, script_args.overwrite)
        if run.is_finished():
            logger.info("[%s] finished already; skipping", name)
            finished.append(run_dir)
            continue
        configs = {"script": script_args, "training": args, "model": model_args, "overrides": overrides}
        run.claim(configs)
        run.on_main(write_run_info, run_dir, method=choice["method"], beta=args.beta, loss_type=[choice["reward"]],
                    label_smoothing=None, label_noise=0.0, pairs_file=script_args.pairs_file,
                    reference_model=model_args.model_name_or_path, sweep=sweep_name, overrides=overrides,
                    reward=choice["reward"], reward_model_heldout_accuracy=reward_model_accuracy
                    if choice["reward"] == "reward_model" else None)
        if wants_wandb(args.report_to):
            run.on_main(start_wandb_run, run_dir, script_args.wandb_project, "rl",
                        config=configs_for_tracking(configs), group=script_args.sweep_name)
        callbacks = run.callbacks(f"[{name}] {choice['method'].upper()}")  # may turn the bar off: before the copy
        trainer_class = RLOOTrainer if choice["method"] == "rloo" else GRPOTrainer
        trainer = trainer_class(model=model_args.model_name_or_path, reward_funcs=rewards[choice["reward"]],
                                args=rl_config(args, choice["method"]), train_dataset=prompts,
                                processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks)
        logger.info("[%s] %s with the %s reward, KL coefficient %s, on %d prompts", name, choice["method"].upper(),
                    choice["reward"], args.beta, len(prompts))
        result = trainer.train(resume_from_checkpoint=run.resume_from())
        last = next((entry for entry in reversed(trainer.state.log_history) if "reward" in entry), {})
        run.finish(trainer, {"global_step": trainer.state.global_step, "train_loss": result.training_loss,
                             **{key: value for key, value in last.items() if key in ("reward", "kl")}},
                   model_args.model_name_or_path, _model_dtype(model_args))
        logger.info("[%s] saved to %s", name, run_dir)
        finished.append(run_dir)
        del trainer
    return finished
