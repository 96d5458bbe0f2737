"""One training run's folder through its life on every process of a launch: finished already? claim it, resume
from the last complete checkpoint, stop at the first NaN, put the final weights in place, mark it complete.

The sweep engine (`sweep.py`) drives one `TrainingRun` per sweep entry; the stages give it their trainers.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

from transformers import TrainerCallback

from .checkpoints import (
    KeepResumeStateOfTheLatestCheckpoint,
    count_parameters,
    drop_resume_state_of_older_checkpoints,
    estimate_training_disk,
    last_complete_checkpoint,
    resume_checkpoint,
)
from .distributed import on_main, process_state
from .errors import TrainingDiverged
from .live_eval import LiveEvaluation, live_eval_asked_for, load_eval_arguments
from .progress import ProgressLogCallback, on_a_terminal
from .runs import RunFolder
from .tracking import MetricsFileCallback, finish_wandb_run

STAGING_FOLDER = ".final-model.tmp"


def model_dtype(model_args):
    """The dtype the policy is loaded in, in transformers' meaning (`auto`: the checkpoint's own; TRL's default is
    float32, so that mixed-precision training keeps float32 master weights)."""
    import torch

    return "auto" if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)


def weight_bytes(model_args) -> int:
    """Bytes per saved weight: the dtype the policy is trained in (`auto`: as its config says, float32 if unsaid)."""
    import torch
    from transformers import AutoConfig

    dtype = model_dtype(model_args)
    if dtype == "auto":
        config = AutoConfig.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
        dtype = getattr(torch, str(getattr(config, "dtype", None) or "float32").replace("torch.", ""), torch.float32)
    return dtype.itemsize


def disk_needed(model_args, training_args, peft_config, steps: int):
    """The disk a run of `steps` steps writes (`checkpoints.estimate_training_disk`), from the model's config."""
    parameters, trainable = count_parameters(model_args.model_name_or_path, peft_config,
                                             training_args.trust_remote_code)
    return estimate_training_disk(parameters, trainable, weight_bytes(model_args), steps, training_args,
                                  adapters_only=peft_config is not None)


def parameters_are_finite(model) -> bool:
    import torch

    return all(bool(torch.isfinite(parameter).all()) for parameter in model.parameters())


class StopOnNonFiniteValues(TrainerCallback):
    """Stops training with `TrainingDiverged` at the first NaN or infinite loss, and before a checkpoint would be
    saved from non-finite weights: every checkpoint on disk is a good one to resume from or evaluate.

    The scripts' configs set `logging_nan_inf_filter: false`, else the Trainer would log a NaN loss as the mean of
    the previous ones and hide it.
    """

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise TrainingDiverged(self._message(args, state, f"the loss is {loss}"))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if control.should_save and model is not None and not parameters_are_finite(model):
            control.should_save = False
            raise TrainingDiverged(self._message(args, state, "the weights are NaN or infinite"))

    @staticmethod
    def _message(args, state, what: str) -> str:
        last = last_complete_checkpoint(args.output_dir)
        last = last.name if last else None
        kept = f"the last good checkpoint, {last}, is kept" if last else "no checkpoint had been saved yet"
        return (f"training diverged at step {state.global_step} in {args.output_dir}: {what}; {kept}. Lower the "
                "learning rate (or check the data) and start again with --overwrite true")


class TrainingRun:
    """One training run's folder through its life, the same on every process of a launch (one process or many).

    Every process reads (is the run finished? which checkpoint to resume from?); the main process alone writes
    (claims the folder, starts the wandb run, removes a checkpoint whose save was cut off, moves the final weights
    into place, marks the run complete, cuts the checkpoints down), and the others wait for it where they need its
    result. The Trainer itself runs on every process and does the parallel part.
    """

    def __init__(self, folder: RunFolder, training_args, overwrite: bool):
        self.folder, self.args, self.overwrite = folder, training_args, overwrite
        self.state = process_state(training_args)
        self.is_main = self.state.is_main_process

    @property
    def path(self) -> Path:
        return self.folder.path

    def is_finished(self) -> bool:
        """Whether the run finished already with this config (a folder of another run is an error), read by every
        process before any of them writes."""
        finished = self.folder.check(overwrite=self.overwrite)
        self.state.wait_for_everyone()
        return finished

    def take_folder(self, configs: dict, then=None) -> None:
        """The main process claims the folder (`RunFolder.claim`) and then does `then()` (writes sweep_run.json,
        starts the wandb run); every process waits until it has, so that none writes into a folder before it is
        claimed. An error there stops every process (`distributed.on_main`)."""
        def claim():
            self.folder.claim(configs, overwrite=self.overwrite)
            if then is not None:
                then()

        on_main(claim)

    def resume_from(self) -> str | None:
        """The checkpoint every process resumes from: the main process first removes a checkpoint whose save was
        cut off, then all of them take the last complete one."""
        if self.is_main:
            resume_checkpoint(self.path)
        self.state.wait_for_everyone()
        latest = last_complete_checkpoint(self.path)
        return str(latest) if latest else None

    def check_inputs(self) -> None:
        """The files the run reads besides its data, checked before its folder is claimed: the eval.py config of the
        live evaluation parses (a file that is no config would otherwise be found after the claim)."""
        if live_eval_asked_for(self.args):
            load_eval_arguments(self.args.live_eval_config)

    def callbacks(self, desc: str) -> list:
        """What every training run of the pipeline adds to the Trainer's callbacks: metrics.jsonl, a stop at the
        first NaN, weights-only older checkpoints, the live evaluation where the config names an eval.py config
        (`live_eval.LiveEvaluation`), and progress lines where stderr is not a terminal (then in place
        of the Trainer's bar)."""
        callbacks = [MetricsFileCallback(self.path), StopOnNonFiniteValues(), KeepResumeStateOfTheLatestCheckpoint()]
        if live_eval_asked_for(self.args):
            callbacks.append(LiveEvaluation(self.args, self.path))
        if not on_a_terminal():
            self.args.disable_tqdm = True
            callbacks.append(ProgressLogCallback(desc))
        return callbacks

    def finish(self, trainer, summary: dict, base_model: str, base_dtype) -> list[str]:
        """The end of the run: final weights saved (gathered from every process under ZeRO-3 or FSDP, LoRA adapters
        merged into the base model, checked finite, staged and moved into place), the folder marked complete, its
        checkpoints cut down to weights (nothing will resume from them), tracking closed. Returns the names of the
        files the final save put in place (on the main process; empty on the others)."""
        staging = self.path / STAGING_FOLDER
        if self.is_main:
            shutil.rmtree(staging, ignore_errors=True)
        self.state.wait_for_everyone()
        trainer.save_model(str(staging))  # on every process: it gathers sharded weights; the main process writes
        # No process moves the staging folder while another may still be saving into it.
        self.state.wait_for_everyone()

        moved = []

        def put_in_place():
            if (staging / "adapter_config.json").is_file():
                merge_adapters(base_model, staging, base_dtype, self.args.trust_remote_code)
            if not saved_weights_are_finite(staging):
                raise TrainingDiverged(f"training ended with NaN or infinite weights in {self.path}; they were not "
                                       "saved in place (the checkpoints are kept)")
            for path in staging.iterdir():
                os.replace(path, self.path / path.name)
                moved.append(path.name)
            staging.rmdir()
            self.folder.complete(summary)
            drop_resume_state_of_older_checkpoints(self.path, keep=None)

        on_main(put_in_place)
        finish_wandb_run()
        return moved


def merge_adapters(base_model: str, adapter_folder: Path, dtype, trust_remote_code: bool) -> None:
    """Replace the LoRA adapters saved in `adapter_folder` by full weights: the base model with the adapters merged
    in, loaded on the CPU in `dtype` (a quantized base is loaded unquantized), so that every later stage loads the
    folder as a plain model."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype, trust_remote_code=trust_remote_code)
    merged = PeftModel.from_pretrained(base, str(adapter_folder)).merge_and_unload()
    for adapter_file in adapter_folder.glob("adapter_*"):
        adapter_file.unlink()
    merged.save_pretrained(adapter_folder, safe_serialization=True)


def saved_weights_are_finite(folder: Path) -> bool:
    """Every tensor of the safetensors files in `folder` is finite (read one tensor at a time)."""
    import torch
    from safetensors import safe_open

    for weights in folder.glob("*.safetensors"):
        with safe_open(str(weights), framework="pt") as handle:
            for name in handle.keys():
                if not bool(torch.isfinite(handle.get_tensor(name)).all()):
                    return False
    return True
