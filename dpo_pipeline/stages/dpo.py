"""DPO with TRL's `DPOTrainer` (dpo.py): one run per sweep entry (beta, loss type, label noise) through the sweep
engine, on the pairs preference_pairs.py wrote or any preference dataset in TRL's layouts. The reference model is the
SFT model the policy starts from (with LoRA, the same model with its adapters disabled).

A sweep entry `method=unlikelihood,alpha=<a>` trains the unlikelihood baseline instead (`losses.unlikelihood_loss`
on TRL's trainer, `trainers.UnlikelihoodTrainer`): the same pairs, tokens and training settings, no reference model."""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

from ..arguments import DPOScriptArguments
from ..errors import PipelineError
from ..hub import require_source
from ..models import check_causal_lm, check_model_flags, load_tokenizer, model_init_kwargs
from ..pair_building import noisy_pairs_file
from ..runs import run_info
from ..preference_data import (
    check_pairs_match_tokenizer,
    check_prompt_lengths,
    load_preferences,
    source_fingerprint,
    warn_of_truncation,
)
from ..sweep import (
    StageRecipe,
    SweepRun,
    check_beta,
    keep_hub_token_out_of_checkpoints,
    plan_sweep,
    replace_config,
    run_sweep,
)
from ..trainers import DPOTrainer, UnlikelihoodTrainer

logger = logging.getLogger(__name__)

# The sweep folder's cache of precomputed reference log-probs (`trainers.DPOTrainer._precompute_ref_logps`): one
# reference pass over the pairs per sweep, read back by every other run and by a resumed one.
REFERENCE_CACHE = ".reference_logps"
# Sweep keys that choose the run's data rather than a DPOConfig field.
DATA_SWEEP_KEYS = ("label_noise",)
# Sweep keys that choose the run's loss rather than a DPOConfig field: `method=unlikelihood,alpha=0.1`.
METHOD_SWEEP_KEYS = ("method", "alpha")
METHODS = ("dpo", "unlikelihood")

# The losses TRL 1.16's DPOTrainer computes (`DPOTrainer.dpo_loss`); any other name fails only after the first
# batch, with a traceback.
TRL_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                  "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")
# Losses TRL's f-divergence variants apply to (`DPOTrainer.__init__`).
F_DIVERGENCE_LOSS_TYPES = ("sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop", "sft")


def sweep_pairs_file(pairs_file: str, overrides: dict[str, str], field_name: str = "pairs_file") -> str:
    """The pairs a sweep run trains on: `pairs_file`, or with `label_noise=q` its noisy copy pairs_noise-<q>.jsonl
    (written by preference_pairs.py when its `label_noise` lists q)."""
    raw = overrides.get("label_noise")
    if raw is None:
        return pairs_file
    if field_name != "pairs_file":
        raise PipelineError(f"sweep: label_noise={raw} trains on the noisy copies preference_pairs.py writes beside "
                            "its pairs.jsonl: it needs pairs_file, not dataset_name")
    try:
        level = float(raw)
    except ValueError:
        raise PipelineError(f"sweep: label_noise={raw!r} is not a number") from None
    if not 0 <= level < 1:
        raise PipelineError(f"sweep: label_noise={raw!r} must be in [0, 1)")
    path = noisy_pairs_file(pairs_file, level)
    if not path.is_file():
        raise PipelineError(f"sweep: label_noise={raw}: {path} does not exist; list {level:g} in label_noise of "
                            "preference_pairs.py to make it")
    return str(path)


# DPOConfig options that only some of TRL's losses read (TRL 1.16's DPOTrainer): under any other loss a value away
# from the default would train a plain run under another run's name.
LOSS_SPECIFIC_OPTIONS = {
    "label_smoothing": ("robust", "exo_pair", "aot", "aot_unpaired"),
    "discopop_tau": ("discopop",),
}


def check_dpo_settings(args, where: str) -> None:
    """The checks of a DPO config, the same for the flags and for each sweep entry, before anything is loaded: the
    settings TRL's DPOTrainer would refuse with a traceback (an unknown loss, an f-divergence with a loss that
    has none, label smoothing out of range, loss weights of another length), and the ones it would silently ignore
    (a silent no-op is a mislabelled run)."""
    check_beta(args.beta)
    unknown = [loss for loss in args.loss_type if loss not in TRL_LOSS_TYPES]
    if unknown:
        raise PipelineError(f"{where}: loss_type {','.join(unknown)} is not a loss of TRL's DPOTrainer; choose from "
                            f"{', '.join(TRL_LOSS_TYPES)}")
    if args.loss_weights is not None and len(args.loss_weights) != len(args.loss_type):
        raise PipelineError(f"{where}: loss_weights has {len(args.loss_weights)} weights for {len(args.loss_type)} "
                            "loss types")
    if args.f_divergence_type != "reverse_kl" and not set(args.loss_type) <= set(F_DIVERGENCE_LOSS_TYPES):
        raise PipelineError(f"{where}: f_divergence_type {args.f_divergence_type} works with the losses "
                            f"{', '.join(F_DIVERGENCE_LOSS_TYPES)} only, not {','.join(args.loss_type)}")
    if "robust" in args.loss_type and not 0.0 <= args.label_smoothing < 0.5:
        raise PipelineError(f"{where}: the robust loss needs 0 <= label_smoothing < 0.5, got {args.label_smoothing}")
    if args.padding_free:
        raise PipelineError(f"{where}: padding_free: TRL {trl_version()}'s DPOTrainer turns it off and pads anyway (its "
                            "warning says it is disabled for now); drop it, or set padding_free false")
    if "exo_pair" in args.loss_type and args.label_smoothing == 0.0:
        raise PipelineError(f"{where}: the exo_pair loss needs label_smoothing above 0 (TRL suggests 1e-3)")
    from trl import DPOConfig

    defaults = {f.name: f.default for f in dataclasses.fields(DPOConfig)}
    for option, losses in LOSS_SPECIFIC_OPTIONS.items():
        value = getattr(args, option)
        if value != defaults[option] and not set(args.loss_type) & set(losses):
            raise PipelineError(f"{where}: {option}={value:g} has no effect with loss_type {','.join(args.loss_type)}; "
                                f"only {', '.join(losses)} use it (add loss_type=..., or drop {option})")
    if args.f_alpha_divergence_coef != defaults["f_alpha_divergence_coef"] and \
            args.f_divergence_type != "alpha_divergence":
        raise PipelineError(f"{where}: f_alpha_divergence_coef has no effect with f_divergence_type "
                            f"{args.f_divergence_type}; it needs f_divergence_type=alpha_divergence")
    for option in ("ref_model_mixup_alpha", "ref_model_sync_steps"):
        if getattr(args, option) != defaults[option] and not args.sync_ref_model:
            raise PipelineError(f"{where}: {option} has no effect without sync_ref_model true")


# DPOConfig options that only the DPO losses read: an unlikelihood run given one away from its default would train
# the same run under another name.
DPO_ONLY_OPTIONS = ("beta", "loss_type", "loss_weights", "label_smoothing", "f_divergence_type",
                    "f_alpha_divergence_coef", "discopop_tau", "ld_alpha", "use_weighting", "sync_ref_model",
                    "ref_model_mixup_alpha", "ref_model_sync_steps")


def trl_version() -> str:
    import trl

    return trl.__version__


def sweep_method(overrides: dict[str, str], where: str) -> tuple[str, float | None]:
    """(method, alpha) of a sweep entry: `dpo` and None unless it says `method=unlikelihood,alpha=<a >= 0>`."""
    method = overrides.get("method", "dpo")
    if method not in METHODS:
        raise PipelineError(f"{where}: method={method} is not one of {', '.join(METHODS)}")
    raw = overrides.get("alpha")
    if method == "dpo":
        if raw is not None:
            raise PipelineError(f"{where}: alpha is the unlikelihood weight; add method=unlikelihood (DPO's weight "
                                "is beta)")
        return method, None
    if raw is None:
        raise PipelineError(f"{where}: method=unlikelihood needs its weight alpha, e.g. alpha=0.1")
    try:
        alpha = float(raw)
    except ValueError:
        raise PipelineError(f"{where}: alpha={raw!r} is not a number") from None
    if not math.isfinite(alpha) or alpha < 0:
        raise PipelineError(f"{where}: alpha must be a finite number >= 0, got {raw!r}")
    return method, alpha


def check_unlikelihood_settings(args, where: str) -> None:
    """An unlikelihood run reads none of the DPO losses' options: one set away from DPOConfig's default (by the
    entry or the flags) is an error, not a silent no-op."""
    from trl import DPOConfig

    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(DPOConfig) if f.name in DPO_ONLY_OPTIONS}
    changed = [name for name in DPO_ONLY_OPTIONS if getattr(args, name) != defaults[name]]
    if changed:
        raise PipelineError(f"{where}: {', '.join(changed)} {'is a' if len(changed) == 1 else 'are'} DPO setting"
                            f"{'' if len(changed) == 1 else 's'} the unlikelihood loss does not read; drop "
                            f"{'it' if len(changed) == 1 else 'them'} for method=unlikelihood")


def preference_source(script_args: DPOScriptArguments) -> tuple[str, str, str | None, str]:
    """Where dpo.py's pairs come from: (source, split, config, field). `dataset_name` (a hub id or a local folder or
    file of preference data in any of TRL's layouts) wins over `pairs_file`, so that `--dataset_name` on the command
    line trains on that dataset even where the config names a pairs file."""
    if script_args.dataset_name:
        if script_args.pairs_file:
            logger.info("dataset_name is set: training on %s, not on pairs_file %s", script_args.dataset_name,
                        script_args.pairs_file)
        return (script_args.dataset_name, script_args.dataset_train_split, script_args.dataset_config,
                "dataset_name")
    if script_args.pairs_file:
        return script_args.pairs_file, "train", None, "pairs_file"
    raise PipelineError("no preference data: set pairs_file (preference_pairs.py's pairs.jsonl) or dataset_name "
                        "(a hub id, or a local folder or file of prompt/chosen/rejected pairs)")


def held_out_pairs_for_training(script_args: DPOScriptArguments, training_args, tokenizer, field_name: str):
    """The pairs DPOTrainer evaluates every eval_steps: eval_pairs_file, else (for a dataset) its
    dataset_test_split, as TRL's own script does; None when eval_strategy is no."""
    if training_args.eval_strategy == "no":
        if script_args.eval_pairs_file:
            raise PipelineError("eval_pairs_file is set but eval_strategy is no: set eval_strategy steps and "
                                "eval_steps to evaluate it during training")
        return None
    if script_args.eval_pairs_file:
        source, split, config_name, field_name = script_args.eval_pairs_file, "train", None, "eval_pairs_file"
    elif field_name == "dataset_name":
        source, config_name = script_args.dataset_name, script_args.dataset_config
        split = script_args.dataset_test_split
    else:
        raise PipelineError("eval_strategy is set, and there is nothing to evaluate: set eval_pairs_file (e.g. "
                            "heldout_pairs.jsonl of preference_pairs.py)")
    pairs = load_preferences(source, split, config_name, None, 0, field_name)
    if script_args.max_eval_pairs:
        pairs = pairs.select(range(min(script_args.max_eval_pairs, len(pairs))))
    check_pairs_match_tokenizer(pairs, tokenizer, source, field_name)
    check_prompt_lengths(pairs, tokenizer, training_args.max_length, field_name, source)
    return pairs


def run_dpo_sweep(script_args: DPOScriptArguments, training_args, model_args) -> list[Path]:
    """Train one DPO model per sweep entry into `<output_dir>/<entry>`; finished runs are skipped, interrupted
    ones resume from their last checkpoint."""
    from trl import get_peft_config, get_quantization_config


    require_source(model_args.model_name_or_path, "model", "model_name_or_path")
    if script_args.ref_model_name_or_path:
        require_source(script_args.ref_model_name_or_path, "reference model", "ref_model_name_or_path")
    check_model_flags(model_args)
    keep_hub_token_out_of_checkpoints(training_args)
    check_beta(training_args.beta)  # every entry sets its own beta, but a base beta that cannot train is a mistake
    sweep_name = script_args.sweep_name or Path(training_args.output_dir).name
    trust = training_args.trust_remote_code
    source, split, config_name, field_name = preference_source(script_args)
    runs = []
    planned = plan_sweep(training_args, script_args.sweep, sweep_name, data_keys=DATA_SWEEP_KEYS + METHOD_SWEEP_KEYS,
                         check=check_dpo_settings,
                         run_fields={"model_init_kwargs": model_init_kwargs(model_args, trust,
                                                                            training_args.model_init_kwargs)})
    for name, overrides, args in planned:
        where = f"sweep entry {','.join(f'{key}={value}' for key, value in overrides.items())!r}"
        method, alpha = sweep_method(overrides, where)
        pairs_source = sweep_pairs_file(source, overrides, field_name)
        common = dict(label_noise=float(overrides.get("label_noise", 0)), pairs_file=str(pairs_source),
                      reference_model=script_args.ref_model_name_or_path or model_args.model_name_or_path,
                      sweep=sweep_name, overrides=overrides)
        if method == "unlikelihood":
            check_unlikelihood_settings(args, where)
            # No reference model (nothing precomputed either: `UnlikelihoodTrainer`), and no dropout.
            args = replace_config(args, precompute_ref_log_probs=True, disable_dropout=True)
            info = run_info(method=method, beta=None, loss_type=["unlikelihood"], label_smoothing=None,
                            alpha=alpha, **common)
        else:
            info = run_info(method=method, beta=args.beta, loss_type=args.loss_type,
                            label_smoothing=args.label_smoothing, **common)
        extra = {"pairs": source_fingerprint(pairs_source, split, config_name)}
        if script_args.ref_model_name_or_path:
            extra["reference_model"] = script_args.ref_model_name_or_path
        if method == "unlikelihood":  # its loss and weight are no DPOConfig field: they mark its result here
            extra.update(method=method, alpha=alpha)
        runs.append(SweepRun(name, args, overrides, extra, info, data=pairs_source))

    def load_inputs():
        pairs = {path: load_preferences(path, split, config_name, script_args.max_train_pairs, training_args.seed,
                                        field_name) for path in dict.fromkeys(run.data for run in runs)}
        tokenizer = load_tokenizer(model_args.model_name_or_path, "model_name_or_path", trust,
                                   model_args.model_revision)
        check_causal_lm(model_args.model_name_or_path, "model_name_or_path", trust, tokenizer)
        if script_args.ref_model_name_or_path:
            check_causal_lm(script_args.ref_model_name_or_path, "ref_model_name_or_path", trust, tokenizer)
        for path, dataset in pairs.items():
            check_pairs_match_tokenizer(dataset, tokenizer, path, field_name)
            check_prompt_lengths(dataset, tokenizer, training_args.max_length, field_name, path)
            warn_of_truncation(dataset, training_args.max_length, path)
        eval_pairs = held_out_pairs_for_training(script_args, training_args, tokenizer, field_name)
        logger.info("DPO sweep %s: %d runs (%s) on %s", sweep_name, len(runs), ", ".join(run.name for run in runs),
                    ", ".join(f"{len(dataset)} pairs of {path}" for path, dataset in pairs.items()))
        return tokenizer, pairs, eval_pairs

    def trainer(run, inputs, callbacks):
        tokenizer, pairs, eval_pairs = inputs
        kind, extra = ((UnlikelihoodTrainer, {"alpha": run.info["alpha"]}) if run.info["method"] == "unlikelihood"
                       else (DPOTrainer, {"reference_cache": Path(training_args.output_dir) / REFERENCE_CACHE}))
        return kind(model=model_args.model_name_or_path, ref_model=reference_model(run), args=run.args,
                    train_dataset=pairs[run.data], eval_dataset=eval_pairs, processing_class=tokenizer,
                    quantization_config=get_quantization_config(model_args), peft_config=peft_config,
                    callbacks=callbacks, **extra)

    def reference_model(run):
        """The reference of ref_model_name_or_path, loaded as TRL loads the policy; None: TRL's own (the starting
        policy, or with LoRA the policy with its adapters disabled)."""
        if not script_args.ref_model_name_or_path or run.info["method"] == "unlikelihood":
            return None
        from trl.trainer.utils import create_model_from_path

        return create_model_from_path(script_args.ref_model_name_or_path, **dict(run.args.model_init_kwargs or {}))

    def summary(run, trainer, result):
        # DPO logs its implicit rewards; the unlikelihood loss, which has none, its sequence log-probabilities.
        group = "logps" if run.info["method"] == "unlikelihood" else "rewards"
        last = {prefix: next((entry for entry in reversed(trainer.state.log_history)
                              if f"{prefix}{group}/margins" in entry), {}) for prefix in ("", "eval_")}
        return {"global_step": trainer.state.global_step, "train_loss": result.training_loss,
                **{key: value for prefix, logs in last.items() for key, value in logs.items()
                   if key.startswith(f"{prefix}{group}/")}}

    def describe(run, inputs):
        if run.info["method"] == "unlikelihood":
            return f"[{run.name}] training (unlikelihood, alpha={run.info['alpha']:g})"
        return f"[{run.name}] training (beta={run.args.beta}, loss={','.join(run.args.loss_type)})"

    peft_config = get_peft_config(model_args)
    recipe = StageRecipe(
        kind="dpo", title="DPO", load_inputs=load_inputs, examples=lambda run, inputs: len(inputs[1][run.data]),
        trainer=trainer, summary=summary, describe=describe,
        progress=lambda run: f"[{run.name}] {'Unlikelihood' if run.info['method'] == 'unlikelihood' else 'DPO'}")
    return run_sweep(recipe, runs, script_args, model_args, peft_config, wandb_group=script_args.sweep_name)
