"""The sweep engine every training stage runs on: sweep entries and their overrides, run names, run info, the disk
check and the per-entry loop.

A stage (`stages/sft.py`, `dpo.py`, `reward_model.py`, `rl.py`) plans its runs (`plan_sweep`: one `SweepRun` per
entry, or one run in the output folder itself), and gives `run_sweep` a `StageRecipe`: how to load and check its
inputs, how many examples a run trains on, a trainer factory and a summary. The engine does the rest, the same way for
every stage and on every process of a launch:

    1. every run's folder is checked (finished already with this config? a folder of another run is an error);
       when all are finished, nothing is loaded;
    2. the stage's inputs are loaded and checked, the GPU asked for is there, a launch of N processes trains
       data-parallel (`require_data_parallel`), FSDP asked for can shard (`require_the_sharding_asked_for`), and
       the disk the unfinished runs will write is free;
    3. each unfinished run: the folder claimed and its run info written (main process), the wandb run started, the
       trainer made and trained (resuming from the last complete checkpoint), the final weights put in place.
"""

from __future__ import annotations

import argparse

import dataclasses
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .arguments.common import check_beta, parse_sweep_shard, replace_config  # noqa: F401 (the stages' imports)
from .checkpoints import (
    check_free_disk,
    checkpoint_step,
    is_complete_checkpoint,
    last_complete_checkpoint,
    training_steps,
)
from .distributed import asks_for_fsdp, on_main, process_state
from .errors import PipelineError
from .hardware import launched_processes, require_the_gpu_asked_for, require_the_precision_asked_for, run_precision
from .publish import published_model_files, publish_run, require_the_hub_for_publishing, trainer_args
from .runs import SWEEP_RUN_FILE, RunFolder, atomic_write_json, config_dict, config_fingerprint, sweep_run_name
from .tracking import start_wandb_run, wants_wandb
from .training_run import TrainingRun, disk_needed, model_dtype

logger = logging.getLogger(__name__)



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


def apply_overrides(training_args, overrides: dict[str, str]):
    """A copy of `training_args` (a DPOConfig, or an SFTConfig) with string overrides converted as the command line
    converts them."""
    from transformers import HfArgumentParser

    # A bool field that defaults to true also has a `--no_<field>` action (no type) under the same dest: the field's
    # own action converts "false" to False, where the other would pass the string "false" on (truthy).
    actions = {action.dest: action for action in HfArgumentParser(type(training_args))._actions
               if not isinstance(action, argparse._StoreFalseAction)}
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
    if converted.get("torch_compile") is False:
        # TrainingArguments turns torch_compile back on when a compile backend is set, and its first __post_init__
        # set one: turning compilation off clears them too.
        converted.update(torch_compile_backend=None, torch_compile_mode=None)
    try:
        run_args = replace_config(training_args, **converted)
    except (TypeError, ValueError) as error:
        raise PipelineError(f"sweep: {' '.join(str(error).split())}") from None
    return run_args


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def configs_for_tracking(configs: dict) -> dict:
    """The whole config of a run (script, data, training, model, sweep overrides) as one dict for wandb."""
    return {name: config_dict(config) if dataclasses.is_dataclass(config) else config
            for name, config in configs.items()}


def keep_hub_token_out_of_checkpoints(training_args) -> None:
    """The Trainer pickles its arguments into every checkpoint (training_args.bin): a hub token given in a config
    or on the command line would be saved with the weights. It moves to the environment instead, where
    huggingface_hub finds it for push_to_hub."""
    if getattr(training_args, "hub_token", None):
        os.environ.setdefault("HF_TOKEN", training_args.hub_token)
        training_args.hub_token = None


def require_data_parallel(training_args) -> None:
    """A launch of N > 1 processes trains data-parallel, or stops: N processes each training the whole run alone
    would write into the same folders and train at 1/N of the global batch. (`PipelineTrainingArguments` sets
    `use_cpu` for such a launch on a machine without a GPU, so that the Trainer sets up gloo.)"""
    from transformers.training_args import ParallelMode

    processes = launched_processes()
    if processes > 1 and training_args.parallel_mode != ParallelMode.DISTRIBUTED:
        raise PipelineError(f"this launch started {processes} processes, but training would not be distributed "
                            f"(parallel mode {training_args.parallel_mode.value}): each would train alone. Launch "
                            "with torchrun or accelerate launch on a machine whose devices torch sees, or pass "
                            "--use_cpu true to train data-parallel on the CPU")


def require_the_sharding_asked_for(training_args) -> None:
    """FSDP asked for runs as FSDP, or stops before anything is written. accelerate applies FSDP only to processes on
    GPUs (and other accelerators): processes on the CPU (gloo) keep its plugin unused and train plain data-parallel,
    whole weights on each, with nothing said."""
    import accelerate
    from accelerate.utils import DistributedType

    if not asks_for_fsdp(training_args):
        return
    state = process_state(training_args)
    if state.distributed_type in (DistributedType.MULTI_CPU, DistributedType.NO):
        raise PipelineError(f"this launch asks for FSDP, but accelerate {accelerate.__version__} shards only "
                            "processes on GPUs: on the CPU each process would train the whole model unsharded "
                            "(plain data-parallel). On a CPU, launch with configs/accelerate/ddp.yaml (the same "
                            "training); FSDP needs GPUs that torch sees")


def resume_checkpoints(runs: list[SweepRun], trainings: list[TrainingRun], finished: list[bool]) -> dict[str, str]:
    """A `resume_from_checkpoint` the user gave, checked before anything is written: {run name: checkpoint}.

    Every run resumes from its own last complete checkpoint without being told (`TrainingRun.resume_from`); a user's
    `resume_from_checkpoint: true` says the same. A path names one checkpoint, so it is honoured for a sweep of one
    unfinished run (a complete checkpoint: its trainer state written last) and refused otherwise: in a sweep of
    several runs it would start each of them from the same weights."""
    given = runs[0].args.resume_from_checkpoint
    if given is None or str(given).lower() in ("true", "1", "yes"):
        return {}
    if str(given).lower() in ("false", "0", "no"):
        return {}
    unfinished = [run for run, done in zip(runs, finished) if not done]
    if len(runs) > 1:
        raise PipelineError(f"resume_from_checkpoint: {given} names one checkpoint, and this sweep has {len(runs)} "
                            "runs: each resumes from its own last checkpoint by itself (run the same command again); "
                            "drop resume_from_checkpoint, or give a sweep of one entry")
    if not unfinished:
        return {}
    if not is_complete_checkpoint(Path(given)):
        raise PipelineError(f"resume_from_checkpoint: {given} is not a complete checkpoint (a checkpoint-<step> folder "
                            "with its trainer_state.json)")
    return {unfinished[0].name: str(given)}


def ignore_bias_buffers(trainer, script_args) -> None:
    """TRL's `ignore_bias_buffers`: DDP skips the model's boolean buffers (a fix for some LM bias/mask buffers)."""
    if getattr(script_args, "ignore_bias_buffers", False):
        import torch

        trainer.model._ddp_params_and_buffers_to_ignore = [
            name for name, buffer in trainer.model.named_buffers() if buffer.dtype == torch.bool]


@dataclass
class SweepRun:
    """One run of a stage: its folder (the training config's output_dir), its config, and what the stage needs to
    know of it (`data`: the pairs it trains on, the reward it is trained with, ...)."""

    name: str
    args: object
    overrides: dict[str, str] = field(default_factory=dict)
    fingerprint_extra: dict = field(default_factory=dict)
    info: dict | None = None  # sweep_run.json, for a policy eval.py places on the frontier
    data: object = None

    @property
    def path(self) -> Path:
        return Path(self.args.output_dir)


def plan_sweep(training_args, entries: list[str], sweep_name: str, *, data_keys: tuple[str, ...] = (),
               check: Callable[[object, str], None] | None = None, base_args=None,
               run_fields: dict | None = None) -> list[tuple[str, dict, object]]:
    """(name, overrides, config) of each sweep entry, every config checked (by `check(config, where)`, the same
    checks a stage runs on the settings given as flags) before anything is loaded or written. `data_keys` choose a
    run's data or trainer rather than a training setting: they are left out of its config. The overrides apply to
    `base_args` (by default `training_args`); `run_fields` are set in every run's config as they are. Each run
    trains into <output_dir>/<name> under the wandb name <sweep_name>/<name>."""
    root = Path(training_args.output_dir)
    planned = []
    for entry in entries:
        overrides = parse_sweep_entry(entry)
        name = sweep_run_name(overrides)
        args = apply_overrides(base_args if base_args is not None else training_args,
                               {key: value for key, value in overrides.items() if key not in data_keys})
        if check is not None:
            check(args, f"sweep entry {entry!r}")
        args = replace_config(args, output_dir=str(root / name), run_name=f"{sweep_name}/{name}",
                              **(run_fields or {}))
        planned.append((name, overrides, args))
    names = [name for name, _, _ in planned]
    if len(set(names)) != len(names):
        raise PipelineError(f"sweep has duplicate entries: {', '.join(names)}")
    return planned


def shard_of(planned: list, shard: str | None) -> list:
    """The entries of `planned` that sweep_shard k/n gives this command: k, k + n, k + 2n, ... (all when unset).
    A stage checks every entry first, so that no shard starts a sweep another shard would find wrong."""
    if shard is None:
        return planned
    index, shards = parse_sweep_shard(shard)
    if not planned[index::shards]:
        entries = f"{len(planned)} entr{'y' if len(planned) == 1 else 'ies'}"
        raise PipelineError(f"sweep_shard {shard} leaves this command no run: the sweep has {entries}")
    return planned[index::shards]


@dataclass
class StageRecipe:
    """What a training stage gives the engine.

    - `kind`: the stage's name in run folders and wandb (sft, preferred_ft, dpo, reward_model, rl); `title`: how
      its lines name it ("SFT", "the reward model");
    - `load_inputs() -> inputs`: every input loaded and checked, before any folder is touched;
    - `examples(run, inputs) -> int`: the examples a run trains on (its steps, for the disk estimate);
    - `trainer(run, inputs, callbacks) -> Trainer`: the run's TRL trainer;
    - `summary(run, trainer, result) -> dict`: what its run_complete.json records;
    - `describe(run, inputs) -> str`: the line logged as it starts;
    - `progress(run) -> str`: how its progress lines are labelled.
    """

    kind: str
    title: str
    load_inputs: Callable[[], object]
    examples: Callable[[SweepRun, object], int]
    trainer: Callable[[SweepRun, object, list], object]
    summary: Callable[[SweepRun, object, object], dict]
    describe: Callable[[SweepRun, object], str] = lambda run, inputs: f"[{run.name}] training"
    progress: Callable[[SweepRun], str] = lambda run: run.name


def run_sweep(recipe: StageRecipe, runs: list[SweepRun], script_args, model_args, peft_config,
              wandb_group: str | None = None) -> list[Path]:
    """Train every run of `runs` that has not finished (see the module's docstring); returns their folders."""
    state = process_state(runs[0].args)
    trainings = []
    for run in runs:
        fingerprint = config_fingerprint(script_args, run.args, model_args, extra=run.fingerprint_extra or None)
        trainings.append(TrainingRun(RunFolder(run.path, fingerprint, recipe.kind), run.args, script_args.overwrite))
    finished = [training.is_finished() for training in trainings]
    for run, done in zip(runs, finished):
        if done and run.name:
            logger.info("[%s] finished already; skipping", run.name)
        elif done:
            logger.info("%s already finished in %s with this config; nothing to do",
                        recipe.title[0].upper() + recipe.title[1:], run.path)
    if all(finished):
        return [run.path for run in runs]

    inputs = recipe.load_inputs()
    require_the_gpu_asked_for(runs[0].args)
    for run in runs:
        require_the_precision_asked_for(run.args)
    require_data_parallel(runs[0].args)
    require_the_sharding_asked_for(runs[0].args)
    require_the_hub_for_publishing(runs[0].args)
    for training, done in zip(trainings, finished):
        if not done:
            training.check_inputs()
    resume_from = resume_checkpoints(runs, trainings, finished)

    def check_disk():
        needed = 0
        for run, done in zip(runs, finished):
            if done:
                continue
            latest = last_complete_checkpoint(run.path)
            steps = training_steps(recipe.examples(run, inputs), run.args)
            needed += disk_needed(model_args, run.args, peft_config,
                                  steps - (checkpoint_step(latest) if latest else 0)).total
        if runs[0].name:
            check_free_disk(runs[0].path.parent, needed, "the sweep's unfinished runs")
        else:
            steps = training_steps(recipe.examples(runs[0], inputs), runs[0].args)
            check_free_disk(runs[0].path, needed, f"{recipe.title} ({steps} steps)")

    on_main(check_disk)
    for run, training, done in zip(runs, trainings, finished):
        if done:
            continue
        # the precision that trains (require_the_precision_asked_for: the launcher's agrees or imposes none)
        configs = {"script": script_args, "training": run.args, "model": model_args,
                   "precision": {"mixed_precision": run_precision(run.args)}}
        if run.overrides:
            configs["overrides"] = run.overrides

        def write_run_files(run=run, configs=configs):
            if run.info is not None:
                atomic_write_json(run.path / SWEEP_RUN_FILE, {"name": run.path.name, **run.info})
            if wants_wandb(run.args.report_to):
                start_wandb_run(run.path, script_args.wandb_project, recipe.kind,
                                config=configs_for_tracking(configs), group=wandb_group)

        training.take_folder(configs, then=write_run_files)
        logger.info(recipe.describe(run, inputs))
        # the Trainer never pushes (it would push the whole folder, at every save): the finished run is published
        trainer = recipe.trainer(SweepRun(run.name, trainer_args(run.args), run.overrides, run.fingerprint_extra,
                                          run.info, run.data), inputs, training.callbacks(recipe.progress(run)))
        ignore_bias_buffers(trainer, script_args)
        result = trainer.train(resume_from_checkpoint=resume_from.get(run.name) or training.resume_from())
        model_files = training.finish(trainer, recipe.summary(run, trainer, result), model_args.model_name_or_path,
                                      model_dtype(model_args))
        logger.info("[%s] saved to %s", run.name or recipe.kind, run.path)
        if run.args.push_to_hub:
            on_main(lambda trainer=trainer, run=run: publish_run(trainer, run.args, run.path,
                                                                 published_model_files(model_files)))
        del trainer
    state.wait_for_everyone()
    return [run.path for run in runs]
