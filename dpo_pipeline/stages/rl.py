"""The DPO paper's on-policy RL baselines (Figure 2, left), with TRL's own trainers (rl.py; the reward model comes
from stages/reward_model.py):

    reward_model.py   a reward model learned from pairs.jsonl with TRL's `RewardTrainer` (the paper's "PPO" setting
                      scores its samples with it); its pairwise accuracy on the held-out pairs is reported
    rl.py             RLOO or GRPO from the SFT model on the prompts of the pairs, KL-regularised to the SFT model
                      (`beta`), rewarded by the learned reward model or by the true reward, P(POSITIVE) of the
                      classifier (the paper's "PPO-GT"); or online DPO (Guo et al. 2024): DPO's loss, against the SFT
                      model, on pairs the policy samples at every step and either reward ranks; one run per sweep
                      entry, into the folder eval.py reads

TRL 1.16 no longer has PPO; RLOO is its REINFORCE-style successor for this setting: each prompt's completions
share a leave-one-out baseline, and beta x (the sampled sequence's log-ratio to the reference) is subtracted from
its reward, the KL-regularised objective PPO optimises in the paper.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path

from ..arguments import RL_METHODS, RL_REWARDS, RLScriptArguments
from ..distributed import process_state
from ..errors import PipelineError
from ..hub import require_source
from ..inputs import read_json, read_jsonl
from ..methods import get_method
from ..models import (
    LearnedRewardModel,
    SentimentClassifier,
    check_causal_lm,
    check_classifier_labels,
    check_model_flags,
    load_tokenizer,
    model_init_kwargs,
)
from ..preference_data import check_pairs_match_tokenizer, is_tokenized, load_preferences
from ..runs import COMPLETE_FILE, run_info
from ..sweep import (
    StageRecipe,
    SweepRun,
    check_beta,
    file_sha256,
    keep_hub_token_out_of_checkpoints,
    plan_sweep,
    run_sweep,
    shard_of,
)

logger = logging.getLogger(__name__)

# Sweep keys of rl.py that choose the run's trainer and reward rather than a training setting.
RL_SWEEP_KEYS = ("method", "reward")
# Settings of GRPOConfig that TRL's RLOO trainer does not read: set with method rloo they would do nothing.
GRPO_ONLY = ("loss_type", "scale_rewards", "importance_sampling_level", "delta", "entropy_coef", "top_entropy_quantile",
             "use_bias_correction_kl", "cast_lm_head_to_fp32")
# Online DPO samples this many completions per prompt (TRL's OnlineDPOTrainer: a pair), whatever num_generations says.
ONLINE_DPO_COMPLETIONS = 2
# What each trainer logs as the reward of its samples and their KL to the reference, kept in the run's summary.
LOGGED_REWARD_AND_KL = {"online_dpo": ("objective/scores", "objective/kl")}
COMPLETIONS_PER_BATCH_ROW = {"online_dpo": ONLINE_DPO_COMPLETIONS}


class ClassifierReward:
    """The true reward as a TRL reward function, on the learned reward's scale: P(POSITIVE) of prompt + completion
    (the label found by name; the reward the pairs were ranked by and eval.py measures), standardised on the SFT
    samples of the pairs as the learned reward is (`models.LearnedRewardModel`):

        r(x, y) = (P(POSITIVE | x, y) - mean) / sd

    mean, sd: of P(POSITIVE) over the distinct completions of the pairs (`classifier_reward_scale`). RLOO subtracts
    beta x the sequence's log-ratio from r: with both rewards in sd units of the SFT samples, one beta is one
    strength of KL regularisation for both (raw P(POSITIVE) has sd ~0.23 there: the same beta would be ~4x stronger
    for it). eval.py still reports raw P(POSITIVE)."""

    __name__ = "classifier"  # TRL names the logged reward column after it

    def __init__(self, classifier: SentimentClassifier, mean: float, sd: float):
        if not sd > 0:
            raise PipelineError(f"the classifier's P(POSITIVE) has sd {sd} on the pairs' SFT samples: it cannot be "
                                "standardised (are all completions scored alike?)")
        self.classifier, self.mean, self.sd = classifier, mean, sd

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        scores = self.classifier.score([prompt + completion for prompt, completion in zip(prompts, completions)])
        return [(score - self.mean) / self.sd for score in scores]


def classifier_reward_scale(pairs: list[dict], classifier: SentimentClassifier | None = None) -> dict:
    """{"mean", "sd", "samples"} of the classifier's P(POSITIVE) over the distinct SFT completions of `pairs` (pair
    records; each (prompt, completion) counted once, as the reward model's standardisation counts them), sd the
    population standard deviation. The scores are the ones preference_pairs.py recorded (`chosen_reward`,
    `rejected_reward`: the same classifier on prompt + completion); pairs without them are scored by `classifier`."""
    import statistics

    tokenized = "prompt_ids" in pairs[0]
    keys = ("prompt_ids", "chosen_ids", "rejected_ids") if tokenized else ("prompt", "chosen", "rejected")
    recorded = all("chosen_reward" in pair and "rejected_reward" in pair for pair in pairs)
    scores = {}
    for pair in pairs:
        for side in ("chosen", "rejected"):
            sample = (json_key(pair[keys[0]]), json_key(pair[keys[1] if side == "chosen" else keys[2]]))
            scores.setdefault(sample, pair[f"{side}_reward"] if recorded else pair["prompt"] + pair[side])
    values = list(scores.values())
    if not recorded:
        if classifier is None:
            raise PipelineError("pairs_file: no chosen_reward / rejected_reward to standardise the classifier on")
        values = classifier.score(values)
    return {"mean": statistics.fmean(values), "sd": statistics.pstdev(values), "samples": len(values)}


def json_key(value):
    return tuple(value) if isinstance(value, list) else value


class LearnedReward:
    """The learned reward as a TRL reward function over token ids: the reward model of reward_model.py scores
    prompt ids + `completion_ids` as sampled (EOS where the policy sampled it), the sequences it was trained on,
    standardised on SFT samples (`models.LearnedRewardModel`). The prompt ids are those the trainer sampled from where
    it gives them (`prompt_ids`: `trainers.OnlineDPOTrainer`), else the prompt's text tokenized as TRL's RLOO and GRPO
    trainers tokenize it for sampling (`processing_class(text=prompts)`)."""

    __name__ = "reward_model"  # TRL names the logged reward column after it

    def __init__(self, reward_model: LearnedRewardModel, tokenizer):
        self.reward_model, self.tokenizer = reward_model, tokenizer

    def __call__(self, prompts, completions, completion_ids, prompt_ids=None, **kwargs) -> list[float]:
        if prompt_ids is None:
            prompt_ids = self.tokenizer(text=list(prompts))["input_ids"]
        return self.reward_model.score([list(p) + list(c) for p, c in zip(prompt_ids, completion_ids)])


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
    where a GRPO-only setting was changed: RLOO would not read it); for online_dpo an OnlineDPOConfig
    (`online_dpo_config`)."""
    from trl import GRPOConfig, RLOOConfig

    if args.cast_lm_head_to_fp32:
        raise PipelineError("cast_lm_head_to_fp32: the pipeline's RL trainers compute every log-prob in float32 "
                            "already (trainers.fused_heads_in_float32), and TRL's own cast fails on GPT-2; drop it")
    if method == "grpo":
        return args
    if method == "online_dpo":
        return online_dpo_config(args)
    defaults = {field.name: field.default for field in dataclasses.fields(GRPOConfig)}
    changed = [name for name in GRPO_ONLY if getattr(args, name) != defaults[name]]
    if changed:
        raise PipelineError(f"{', '.join(changed)} has no effect with method rloo (a GRPO setting): drop it or use "
                            "method=grpo")
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(RLOOConfig)
              if field.init and hasattr(args, field.name)}
    values.update(args.given_generation_settings)
    return RLOOConfig(**values)  # converted again as dataclasses.replace converts a DPO sweep entry's config


def online_dpo_config(args):
    """TRL's OnlineDPOConfig from rl.py's config: every field the two share, but `loss_type` (GRPO's loss there;
    online DPO's is DPO's sigmoid loss), with `max_completion_length` as its `max_new_tokens`, and the policy loaded
    without a `device_map` unless one is given, as RLOO loads it under a launcher (TRL's online DPO asks for "auto",
    which fails under distributed training; the Trainer places the model). Refused, in one line, where a setting that
    online DPO would not read was changed: a GRPO or RLOO setting (`loss_type`, `num_iterations`, ...), the generation
    batch, or `num_generations` other than 2 (it samples a pair per prompt)."""
    from trl import GRPOConfig
    from trl.experimental.online_dpo import OnlineDPOConfig

    online = {field.name for field in dataclasses.fields(OnlineDPOConfig) if field.init}
    defaults = {field.name: field.default if field.default is not dataclasses.MISSING else field.default_factory()
                for field in dataclasses.fields(GRPOConfig) if field.init}
    read_otherwise = {"max_completion_length", "num_generations", *args.GENERATION_SETTINGS}
    ignored = ["loss_type", *(name for name in defaults if name not in online and name not in read_otherwise)]
    # GRPOConfig resolves its default pad_to_multiple_of, "auto", to None (128 on Neuron)
    unchanged = {name: (value,) for name, value in defaults.items()} | {"pad_to_multiple_of": ("auto", None, 128)}
    changed = [name for name in ignored if getattr(args, name) not in unchanged[name]]
    changed += [name for name, value in args.given_generation_settings.items() if value is not None]
    if args.num_generations not in (ONLINE_DPO_COMPLETIONS, defaults["num_generations"]):
        changed.append(f"num_generations={args.num_generations}")
    if args.normalize_advantages:
        changed.append("normalize_advantages")
    if changed:
        raise PipelineError(f"{', '.join(changed)} {'has' if len(changed) == 1 else 'have'} no effect with method "
                            f"online_dpo (DPO's loss on {ONLINE_DPO_COMPLETIONS} completions per prompt): drop it, or "
                            "set it in the entries of the methods that read it")
    values = {name: getattr(args, name) for name in online if hasattr(args, name) and name != "loss_type"}
    values["max_new_tokens"] = args.max_completion_length
    values["model_init_kwargs"] = {"device_map": None, **(args.model_init_kwargs or {})}
    return OnlineDPOConfig(**values, loss_type="sigmoid")


def rl_trainer(method: str, args, model_name_or_path: str, reward, prompts, tokenizer, peft_config=None,
               callbacks=None):
    """TRL's RLOO, GRPO or online DPO trainer of one run, as the stage builds it: dropout is off in the policy and
    the reference (the config refuses otherwise), so that rollouts and the KL penalty's log-probs are the policy's;
    its log-probs are taken at the positions the completions were sampled at, in float32 (`trainers.RLOOTrainer`,
    `trainers.OnlineDPOTrainer`)."""
    from ..trainers import GRPOTrainer, OnlineDPOTrainer, RLOOTrainer

    config = rl_config(args, method)
    if not config.disable_dropout:  # the config refuses it; a config built in code must not slip through either
        raise PipelineError("disable_dropout must be true for online RL")
    trainer_class = {"rloo": RLOOTrainer, "grpo": GRPOTrainer, "online_dpo": OnlineDPOTrainer}[method]
    return trainer_class(model=model_name_or_path, reward_funcs=reward, args=config, train_dataset=prompts,
                         processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks)


def run_rl_sweep(script_args: RLScriptArguments, training_args, model_args) -> list[Path]:
    """One RL run per sweep entry into `<output_dir>/<entry>` (beside the DPO runs, where eval.py finds them);
    finished runs are skipped, interrupted ones resume from their last checkpoint."""
    from trl import get_peft_config

    require_source(model_args.model_name_or_path, "model", "model_name_or_path")
    check_model_flags(model_args)
    if not script_args.pairs_file or not Path(script_args.pairs_file).is_file():
        raise PipelineError(f"pairs_file: {script_args.pairs_file} does not exist: run preference_pairs.py first")
    keep_hub_token_out_of_checkpoints(training_args)
    sweep_name = script_args.sweep_name or Path(training_args.output_dir).name
    trust = training_args.trust_remote_code
    base = copy.copy(training_args)  # its generation settings as given, for TRL to derive them again
    for name, value in training_args.given_generation_settings.items():
        setattr(base, name, value)
    planned = plan_sweep(training_args, script_args.sweep, sweep_name, data_keys=RL_SWEEP_KEYS, base_args=base,
                         check=lambda args, where: check_beta(args.beta),
                         run_fields={"model_init_kwargs": model_init_kwargs(model_args, trust,
                                                                            training_args.model_init_kwargs),
                                     **training_args.given_generation_settings})
    choices = []
    for (name, overrides, args), entry in zip(planned, script_args.sweep):
        choice = {key: overrides.get(key, getattr(script_args, key)) for key in RL_SWEEP_KEYS}
        for key, allowed in (("method", RL_METHODS), ("reward", RL_REWARDS)):
            if choice[key] not in allowed:
                raise PipelineError(f"sweep entry {entry!r}: {key}={choice[key]} is not one of {', '.join(allowed)}")
        rl_config(args, choice["method"])  # refuses settings the trainer would ignore, before anything is written
        choices.append(choice)
    fingerprints = {"pairs": file_sha256(script_args.pairs_file)}
    reward_model_accuracy = None
    if any(choice["reward"] == "reward_model" for choice in choices):
        path = script_args.reward_model_path
        if not path or not (Path(path) / COMPLETE_FILE).is_file():
            raise PipelineError(f"reward_model_path: {path} holds no finished reward model: run reward_model.py first")
        fingerprints["reward_model"] = file_sha256(Path(path) / COMPLETE_FILE)
        record = read_json(Path(path) / COMPLETE_FILE, "reward_model_path")
        reward_model_accuracy = (record.get("summary") or {}).get("heldout_accuracy")
    if any(choice["reward"] == "classifier" for choice in choices):
        require_source(script_args.classifier_name_or_path, "classifier", "classifier_name_or_path")
        check_classifier_labels(script_args.classifier_name_or_path, trust)
    runs = []
    for (name, overrides, args), choice in zip(planned, choices):
        info = run_info(method=choice["method"], beta=args.beta, loss_type=[choice["reward"]], label_smoothing=None,
                        label_noise=0.0, pairs_file=script_args.pairs_file,
                        reference_model=model_args.model_name_or_path, sweep=sweep_name, overrides=overrides,
                        reward=choice["reward"], reward_model_heldout_accuracy=reward_model_accuracy
                        if choice["reward"] == "reward_model" else None)
        # a classifier run trains on the standardised true reward: not the run an earlier version trained on P(POSITIVE)
        scale = {"reward_scale": "sd units of the pairs' SFT samples"} if choice["reward"] == "classifier" else {}
        # a run's inputs only: a reward model trained again leaves the true-reward runs finished
        inputs = {key: value for key, value in fingerprints.items()
                  if key != "reward_model" or choice["reward"] == "reward_model"}
        runs.append(SweepRun(name, args, overrides, {**inputs, "choice": choice, **scale}, info, data=choice))
    runs = shard_of(runs, script_args.sweep_shard)

    def load_inputs():
        tokenizer = load_tokenizer(model_args.model_name_or_path, "model_name_or_path", trust,
                                   model_args.model_revision)
        check_causal_lm(model_args.model_name_or_path, "model_name_or_path", trust, tokenizer)
        prompts = training_prompts(script_args.pairs_file, tokenizer, script_args.max_prompts)
        rewards = {}
        if any(choice["reward"] == "classifier" for choice in choices):
            classifier = SentimentClassifier.load(
                script_args.classifier_name_or_path, device=process_state(training_args).device,
                batch_size=script_args.classifier_batch_size, max_length=script_args.classifier_max_length,
                trust_remote_code=trust)
            scale = classifier_reward_scale(read_jsonl(script_args.pairs_file, "pairs_file"), classifier)
            logger.info("The true reward, P(POSITIVE), has mean %.4f and sd %.4f on the pairs' %d SFT samples: RL "
                        "trains on it standardised by them", scale["mean"], scale["sd"], scale["samples"])
            rewards["classifier"] = ClassifierReward(classifier, scale["mean"], scale["sd"])
        if any(choice["reward"] == "reward_model" for choice in choices):
            rewards["reward_model"] = LearnedReward(LearnedRewardModel.load(
                script_args.reward_model_path, device=process_state(training_args).device,
                batch_size=script_args.classifier_batch_size, trust_remote_code=trust), tokenizer)
        return tokenizer, prompts, rewards

    def trainer(run, inputs, callbacks):
        tokenizer, prompts, rewards = inputs
        return rl_trainer(run.data["method"], run.args, model_args.model_name_or_path, rewards[run.data["reward"]],
                          prompts, tokenizer, peft_config, callbacks)

    def summary(run, trainer, result):
        logged = LOGGED_REWARD_AND_KL.get(run.data["method"], ("reward", "kl"))
        last = next((entry for entry in reversed(trainer.state.log_history) if logged[0] in entry), {})
        reward = trainer.reward_funcs[0]
        scale = {"reward_mean": reward.mean, "reward_sd": reward.sd} if isinstance(reward, ClassifierReward) else {}
        # each optimizer step trains on global_batch_size batch rows sampled from the policy at that step (a row is a
        # completion for RLOO/GRPO, a prompt and its two completions for online DPO)
        sampled = trainer.state.global_step * run.args.per_device_train_batch_size * \
            run.args.gradient_accumulation_steps * run.args.world_size * \
            COMPLETIONS_PER_BATCH_ROW.get(run.data["method"], 1)
        return {"global_step": trainer.state.global_step, "train_loss": result.training_loss, **scale,
                "completions_sampled": sampled,
                **{key: last[name] for key, name in zip(("reward", "kl"), logged) if name in last}}

    def describe(run, inputs):
        return (f"[{run.name}] {get_method(run.data['method']).title} with the {run.data['reward']} reward, KL "
                f"coefficient {run.args.beta}, on {len(inputs[1])} prompts")

    peft_config = get_peft_config(model_args)
    recipe = StageRecipe(kind="rl", title="RL",
                         load_inputs=load_inputs, examples=lambda run, inputs: len(inputs[1]),
                         trainer=trainer, summary=summary, describe=describe,
                         progress=lambda run: f"[{run.name}] {get_method(run.data['method']).title}")
    return run_sweep(recipe, runs, script_args, model_args, peft_config, wandb_group=script_args.sweep_name)
