"""SFT and the DPO sweep on top of TRL's `SFTTrainer` and `DPOTrainer`: resumable, tracked, one folder per run."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import re
from pathlib import Path

from .cli import PipelineError, require_source
from .configs import DPOScriptArguments, SFTScriptArguments
from .data import load_reviews
from .models import load_causal_lm, load_tokenizer, resolve_dtype
from .runs import RunFolder, atomic_write_json, config_fingerprint, read_jsonl
from .tracking import MetricsFileCallback, finish_wandb_run, start_wandb_run, wants_wandb

logger = logging.getLogger(__name__)

SWEEP_RUN_FILE = "sweep_run.json"


def _model_dtype(model_args):
    import torch

    if model_args.dtype in (None, "auto"):
        return resolve_dtype("auto", torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    return getattr(torch, model_args.dtype)


def _resume_checkpoint(output_dir: str | Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    checkpoint = get_last_checkpoint(str(output_dir)) if Path(output_dir).is_dir() else None
    if checkpoint:
        logger.info("Resuming from %s", checkpoint)
    return checkpoint


def _save_full_model(trainer, output_dir: str | Path) -> None:
    """Save weights a later stage can load on its own: LoRA adapters are merged into the base model first."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
        model.save_pretrained(output_dir, safe_serialization=True)
        trainer.processing_class.save_pretrained(output_dir)
    else:
        trainer.save_model(str(output_dir))


def run_sft(script_args: SFTScriptArguments, training_args, model_args) -> Path:
    """Fine-tune (or, with `from_scratch`, train) a causal LM on review texts with TRL's `SFTTrainer`."""
    from transformers import AutoConfig, AutoModelForCausalLM, set_seed
    from trl import SFTTrainer, get_peft_config

    require_source(script_args.dataset_name, "dataset", "dataset_name")
    require_source(model_args.model_name_or_path, "model", "model_name_or_path")
    output_dir = Path(training_args.output_dir)
    folder = RunFolder(output_dir, config_fingerprint(script_args, training_args, model_args), "sft")
    if folder.claim({"script": script_args, "training": training_args, "model": model_args},
                    overwrite=script_args.overwrite):
        logger.info("SFT already finished in %s with this config; nothing to do", output_dir)
        return output_dir

    trust = training_args.trust_remote_code
    tokenizer = load_tokenizer(model_args.model_name_or_path, "model_name_or_path", trust)
    if script_args.from_scratch:
        set_seed(training_args.seed)
        config = AutoConfig.from_pretrained(model_args.model_name_or_path, trust_remote_code=trust)
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust)
        logger.info("Training %s from scratch (%.1fM parameters)", config.model_type, model.num_parameters() / 1e6)
    else:
        model = load_causal_lm(model_args.model_name_or_path, "model_name_or_path", _model_dtype(model_args),
                               trust_remote_code=trust).train()
    model.generation_config.pad_token_id = tokenizer.pad_token_id

    train = load_reviews(script_args.dataset_name, script_args.dataset_train_split, script_args.dataset_config,
                         script_args.text_column, label_column=None)
    if script_args.max_train_samples:
        train = train.shuffle(seed=training_args.seed).select(range(min(script_args.max_train_samples, len(train))))
    evaluation = None
    if training_args.eval_strategy != "no":
        evaluation = load_reviews(script_args.dataset_name, script_args.dataset_test_split,
                                  script_args.dataset_config, script_args.text_column, label_column=None)
    logger.info("SFT on %d reviews of %s", len(train), script_args.dataset_name)

    if wants_wandb(training_args.report_to):
        start_wandb_run(output_dir, script_args.wandb_project, training_args.run_name or "sft", None, "sft")
    trainer = SFTTrainer(
        model=model, args=training_args, train_dataset=train, eval_dataset=evaluation, processing_class=tokenizer,
        peft_config=get_peft_config(model_args), callbacks=[MetricsFileCallback(output_dir)],
    )
    result = trainer.train(resume_from_checkpoint=_resume_checkpoint(output_dir))
    summary = {"global_step": trainer.state.global_step, "train_loss": result.training_loss}
    if evaluation is not None:
        summary.update(trainer.evaluate())
    _save_full_model(trainer, output_dir)
    folder.complete(summary)
    finish_wandb_run()
    logger.info("SFT model saved to %s (%s)", output_dir, summary)
    return output_dir


# --- DPO sweep -------------------------------------------------------------------------------------------------


def parse_sweep_entry(entry: str) -> dict[str, str]:
    """`"beta=0.1,loss_type=ipo"` -> `{"beta": "0.1", "loss_type": "ipo"}` (values converted later, by field)."""
    overrides = {}
    for item in filter(None, (part.strip() for part in entry.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise PipelineError(f"sweep entry {entry!r}: expected key=value pairs separated by commas")
        overrides[key.strip()] = value.strip()
    if not overrides:
        raise PipelineError(f"sweep entry {entry!r} is empty")
    return overrides


def sweep_run_name(overrides: dict[str, str]) -> str:
    """Folder and wandb name of a sweep run: `beta-0.1`, `beta-0.1_loss_type-ipo`."""
    name = "_".join(f"{key}-{value}" for key, value in overrides.items())
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", name)


def apply_overrides(training_args, overrides: dict[str, str]):
    """A copy of `training_args` (a DPOConfig) with string overrides converted as the command line converts them."""
    from transformers import HfArgumentParser

    actions = {action.dest: action for action in HfArgumentParser(type(training_args))._actions}
    converted = {}
    for key, raw in overrides.items():
        action = actions.get(key)
        if action is None or key in ("output_dir", "help"):
            raise PipelineError(f"sweep: {key!r} is not a {type(training_args).__name__} field")
        values = raw.split() if action.nargs in ("+", "*") else [raw]
        try:
            values = [action.type(value) if action.type else value for value in values]
        except (TypeError, ValueError):
            raise PipelineError(f"sweep: {key}={raw!r} is not a valid value") from None
        if action.choices and any(value not in action.choices for value in values):
            raise PipelineError(f"sweep: {key}={raw!r} is not one of {', '.join(map(str, action.choices))}")
        converted[key] = values if action.nargs in ("+", "*") else values[0]
    try:
        run_args = dataclasses.replace(training_args, **converted)
    except (TypeError, ValueError) as error:
        raise PipelineError(f"sweep: {' '.join(str(error).split())}") from None
    check_beta(run_args.beta)
    return run_args


def check_beta(beta) -> None:
    if not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta <= 0:
        raise PipelineError(f"beta must be a positive number, got {beta!r}")


def load_pairs(pairs_file: str, max_pairs: int | None, seed: int):
    """The pairs file as a `datasets.Dataset` of prompt/chosen/rejected, checked line by line."""
    from datasets import Dataset

    records = read_jsonl(pairs_file, "pairs_file", required=("prompt", "chosen", "rejected"))
    for number, record in enumerate(records, start=1):
        for key in ("prompt", "chosen", "rejected"):
            if not isinstance(record[key], str):
                raise PipelineError(f"pairs_file: {pairs_file} record {number}: {key} is not a string")
        if not record["chosen"].strip() or not record["rejected"].strip():
            raise PipelineError(f"pairs_file: {pairs_file} record {number} has an empty completion")
        if record["chosen"] == record["rejected"]:
            raise PipelineError(f"pairs_file: {pairs_file} record {number}: chosen equals rejected")
    dataset = Dataset.from_list([{key: r[key] for key in ("prompt", "chosen", "rejected")} for r in records])
    if max_pairs:
        dataset = dataset.shuffle(seed=seed).select(range(min(max_pairs, len(dataset))))
    return dataset


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_dpo_sweep(script_args: DPOScriptArguments, training_args, model_args) -> list[Path]:
    """Train one DPO model per sweep entry into `<output_dir>/<entry>`; finished runs are skipped, interrupted
    ones resume from their last checkpoint. The reference model is the SFT model the policy starts from."""
    from trl import DPOTrainer, get_peft_config

    root = Path(training_args.output_dir)
    sweep_name = script_args.sweep_name or root.name
    runs = [(sweep_run_name(o), o) for o in map(parse_sweep_entry, script_args.sweep)]
    names = [name for name, _ in runs]
    if len(set(names)) != len(names):
        raise PipelineError(f"sweep has duplicate entries: {', '.join(names)}")
    run_args = {name: apply_overrides(training_args, {**overrides}) for name, overrides in runs}
    check_beta(training_args.beta)
    pairs = load_pairs(script_args.pairs_file, script_args.max_train_pairs, training_args.seed)
    pairs_sha = file_sha256(script_args.pairs_file)
    tokenizer = load_tokenizer(model_args.model_name_or_path, "model_name_or_path", training_args.trust_remote_code)
    logger.info("DPO sweep %s: %d runs (%s) on %d pairs", sweep_name, len(runs), ", ".join(names), len(pairs))

    finished = []
    for name, overrides in runs:
        run_dir = root / name
        args = dataclasses.replace(run_args[name], output_dir=str(run_dir), run_name=f"{sweep_name}/{name}")
        folder = RunFolder(run_dir, config_fingerprint(script_args, args, model_args, extra={"pairs": pairs_sha}),
                           "dpo")
        if folder.claim({"script": script_args, "training": args, "model": model_args, "overrides": overrides},
                        overwrite=script_args.overwrite):
            logger.info("[%s] finished already; skipping", name)
            finished.append(run_dir)
            continue
        atomic_write_json(run_dir / SWEEP_RUN_FILE, {
            "name": name, "sweep": sweep_name, "overrides": overrides, "beta": args.beta,
            "loss_type": args.loss_type, "label_smoothing": args.label_smoothing,
            "reference_model": model_args.model_name_or_path,
        })
        model = load_causal_lm(model_args.model_name_or_path, "model_name_or_path", _model_dtype(model_args),
                               trust_remote_code=args.trust_remote_code).train()
        if wants_wandb(args.report_to):
            start_wandb_run(run_dir, script_args.wandb_project, args.run_name, sweep_name, "dpo",
                            config={"sweep_overrides": overrides})
        trainer = DPOTrainer(
            model=model, ref_model=None, args=args, train_dataset=pairs, processing_class=tokenizer,
            peft_config=get_peft_config(model_args), callbacks=[MetricsFileCallback(run_dir)],
        )
        logger.info("[%s] training (beta=%s, loss=%s)", name, args.beta, ",".join(args.loss_type))
        result = trainer.train(resume_from_checkpoint=_resume_checkpoint(run_dir))
        _save_full_model(trainer, run_dir)
        last_logs = next((entry for entry in reversed(trainer.state.log_history) if "rewards/margins" in entry), {})
        folder.complete({"global_step": trainer.state.global_step, "train_loss": result.training_loss,
                         **{key: value for key, value in last_logs.items() if key.startswith("rewards/")}})
        finish_wandb_run()
        logger.info("[%s] saved to %s", name, run_dir)
        finished.append(run_dir)
        del trainer, model
    return finished
