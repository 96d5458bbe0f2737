"""dpo.py: one run per sweep entry through the sweep engine, on the pairs preference_pairs.py wrote or any preference
dataset in TRL's layouts. A sweep entry chooses its method (`method=<name>`, default DPO) from the method registry
(`dpo_pipeline/methods`): DPO with any of TRL's loss types (the reference model is the model the policy starts from,
with LoRA the same model with its adapters disabled, or `ref_model_name_or_path`), SimPO, ORPO, KTO, the unlikelihood
baseline, or a method of your own; this stage asks the method for its settings, checks, trainer and record and
tests no method's name."""

from __future__ import annotations

import logging
from pathlib import Path

from ..arguments import DPOScriptArguments
from ..errors import PipelineError
from ..hub import require_source
from ..models import check_causal_lm, check_model_flags, load_tokenizer, model_init_kwargs
from ..pair_building import noisy_pairs_file
from ..runs import run_info, sweep_run_name
from ..preference_data import (
    check_pairs_match_tokenizer,
    check_prompt_lengths,
    load_preferences,
    source_fingerprint,
    warn_of_truncation,
)
from ..methods import DEFAULT_METHOD, method_sweep_keys, series_label, sweep_entry_method
from ..sweep import (
    StageRecipe,
    SweepRun,
    check_beta,
    keep_hub_token_out_of_checkpoints,
    parse_sweep_entry,
    plan_sweep,
    run_sweep,
    shard_of,
)

logger = logging.getLogger(__name__)

# The sweep folder's cache of precomputed reference log-probs (`trainers.DPOTrainer._precompute_ref_logps`): one
# reference pass over the pairs per sweep, read back by every other run and by a resumed one.
REFERENCE_CACHE = ".reference_logps"
# Sweep keys that choose the run's data rather than a config field.
DATA_SWEEP_KEYS = ("label_noise",)


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
    methods = {}
    for entry in script_args.sweep:  # each entry's method, and its own settings, before the configs are made
        overrides = parse_sweep_entry(entry)
        methods[sweep_run_name(overrides)] = sweep_entry_method(overrides, f"sweep entry {entry!r}")
    planned = plan_sweep(training_args, script_args.sweep, sweep_name,
                         data_keys=DATA_SWEEP_KEYS + method_sweep_keys(),
                         run_fields={"model_init_kwargs": model_init_kwargs(model_args, trust,
                                                                            training_args.model_init_kwargs)})
    for name, overrides, args in planned:
        where = f"sweep entry {','.join(f'{key}={value}' for key, value in overrides.items())!r}"
        method, keys = methods[name]
        method.check(args, keys, where)
        args = method.prepare(args, keys)
        pairs_source = sweep_pairs_file(source, overrides, field_name)
        info = run_info(method=method.name, **method.settings(args, keys),
                        label_noise=float(overrides.get("label_noise", 0)), pairs_file=str(pairs_source),
                        reference_model=(script_args.ref_model_name_or_path or model_args.model_name_or_path)
                        if method.uses_reference else None, sweep=sweep_name, overrides=overrides)
        extra = {"pairs": source_fingerprint(pairs_source, split, config_name)}
        if script_args.ref_model_name_or_path and method.uses_reference:
            extra["reference_model"] = script_args.ref_model_name_or_path
        if method.name != DEFAULT_METHOD:  # a method's own loss and settings are no config field: they mark its result
            extra.update(method=method.name, **keys)
        runs.append(SweepRun(name, args, overrides, extra, info, data=(pairs_source, method, keys)))
    runs = shard_of(runs, script_args.sweep_shard)

    def load_inputs():
        pairs = {path: load_preferences(path, split, config_name, script_args.max_train_pairs, training_args.seed,
                                        field_name) for path in dict.fromkeys(run.data[0] for run in runs)}
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
        pairs_source, method, keys = run.data
        return method.trainer(model=model_args.model_name_or_path, ref_model=reference_model(run, method),
                              args=run.args, train_dataset=pairs[pairs_source], eval_dataset=eval_pairs,
                              processing_class=tokenizer, quantization_config=get_quantization_config(model_args),
                              peft_config=peft_config, callbacks=callbacks, keys=keys,
                              reference_cache=Path(training_args.output_dir) / REFERENCE_CACHE)

    def reference_model(run, method):
        """The reference of ref_model_name_or_path, loaded as TRL loads the policy; None: TRL's own (the starting
        policy, or with LoRA the policy with its adapters disabled), or none for a method that has no reference."""
        if not script_args.ref_model_name_or_path or not method.uses_reference:
            return None
        from trl.trainer.utils import create_model_from_path

        return create_model_from_path(script_args.ref_model_name_or_path, **dict(run.args.model_init_kwargs or {}))

    def summary(run, trainer, result):
        # what the method's trainer logs of its implicit rewards (DPO) or sequence log-probabilities (unlikelihood)
        logged = run.data[1].logged
        last = {prefix: next((entry for entry in reversed(trainer.state.log_history)
                              if f"{prefix}{logged}margins" in entry), {}) for prefix in ("", "eval_")}
        return {"global_step": trainer.state.global_step, "train_loss": result.training_loss,
                **{key: value for prefix, logs in last.items() for key, value in logs.items()
                   if key.startswith(f"{prefix}{logged}")}}

    def describe(run, inputs):
        settings = {**run.info, "method": run.data[1].name}
        return f"[{run.name}] training {series_label(settings)}"

    peft_config = get_peft_config(model_args)
    recipe = StageRecipe(
        kind="dpo", title="DPO", load_inputs=load_inputs,
        examples=lambda run, inputs: len(inputs[1][run.data[0]]), trainer=trainer, summary=summary,
        describe=describe, progress=lambda run: f"[{run.name}] {run.data[1].title}")
    return run_sweep(recipe, runs, script_args, model_args, peft_config, wandb_group=script_args.sweep_name)
