"""Checkpoints on disk: which one a run resumes from, which ones the frontier reads, and how much disk they take.

A checkpoint is complete once the Trainer has written its trainer_state.json (it writes it last). Resuming needs
only the latest complete checkpoint, with its optimizer, scheduler and RNG state; the reward-vs-KL frontier needs
only each checkpoint's weights. So once a newer checkpoint is complete, the older ones are cut down to weights
(`KeepResumeStateOfTheLatestCheckpoint`), and when a run is finished its last one too.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from transformers import TrainerCallback

from .errors import PipelineError

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
# What a checkpoint holds beyond its weights, only needed to resume from it: optimizer, scheduler, AMP scaler and RNG
# state (one file per process), DeepSpeed's global_step* folder and FSDP's sharded optimizer_* folders.
RESUME_STATE_PATTERNS = ("optimizer.pt", "optimizer.bin", "scheduler.pt", "scaler.pt", "rng_state*.pth",
                         "global_step*", "optimizer_*")
# Bytes of optimizer state per trainable parameter (float32 states); unknown optimizers count as AdamW.
OPTIMIZER_STATE_BYTES = {"adamw": 8, "adam": 8, "rmsprop": 4, "adagrad": 4, "lion": 4, "sgd": 0, "adafactor": 0}


def checkpoint_step(path: Path) -> int:
    return int(path.name[len(CHECKPOINT_PREFIX):])


def checkpoints(output_dir: str | Path) -> list[Path]:
    """The checkpoint-<step> folders of `output_dir`, in step order."""
    found = [path for path in Path(output_dir).glob(f"{CHECKPOINT_PREFIX}*")
             if path.is_dir() and path.name[len(CHECKPOINT_PREFIX):].isdigit()]
    return sorted(found, key=checkpoint_step)


def is_complete_checkpoint(path: str | Path) -> bool:
    """The Trainer writes trainer_state.json last when it saves a checkpoint: without it (or with half of it) the
    save was interrupted and the checkpoint cannot be trusted."""
    try:
        json.loads((Path(path) / "trainer_state.json").read_text())
        return True
    except (OSError, json.JSONDecodeError):
        return False


def has_resume_state(path: str | Path) -> bool:
    """Whether a checkpoint still holds an optimizer state (plain, DeepSpeed or FSDP) to resume from."""
    return any(any(Path(path).glob(pattern)) for pattern in ("optimizer.pt", "optimizer.bin", "global_step*",
                                                              "optimizer_*"))


def resume_checkpoint(output_dir: str | Path) -> str | None:
    """The last complete checkpoint of `output_dir`; checkpoints whose save was interrupted (killed mid-save) are
    removed, so that neither the resumed run nor eval.py ever loads half-written weights."""
    for checkpoint in reversed(checkpoints(output_dir)):
        if is_complete_checkpoint(checkpoint):
            if not has_resume_state(checkpoint):
                logger.warning("%s holds weights only (no optimizer state): resuming from it restarts the optimizer",
                               checkpoint)
            logger.info("Resuming from %s", checkpoint)
            return str(checkpoint)
        logger.warning("Removing %s: its save was interrupted", checkpoint)
        shutil.rmtree(checkpoint)
    return None


def last_complete_checkpoint(output_dir: str | Path) -> Path | None:
    complete = [path for path in checkpoints(output_dir) if is_complete_checkpoint(path)]
    return complete[-1] if complete else None


def drop_resume_state(checkpoint: Path) -> int:
    """Cut a checkpoint down to what the frontier reads (weights, config, tokenizer, trainer_state.json); returns
    the bytes freed."""
    freed = 0
    for pattern in RESUME_STATE_PATTERNS:
        for path in checkpoint.glob(pattern):
            if path.is_dir():
                freed += sum(file.stat().st_size for file in path.rglob("*") if file.is_file())
                shutil.rmtree(path)
            else:
                freed += path.stat().st_size
                path.unlink()
    return freed


def drop_resume_state_of_older_checkpoints(output_dir: str | Path, keep: Path | None) -> None:
    """Every complete checkpoint but `keep` (None: all of them) loses its resume state."""
    for checkpoint in checkpoints(output_dir):
        if checkpoint != keep and is_complete_checkpoint(checkpoint) and has_resume_state(checkpoint):
            freed = drop_resume_state(checkpoint)
            logger.debug("%s cut down to its weights (%.1f MB freed)", checkpoint, freed / 1e6)


class KeepResumeStateOfTheLatestCheckpoint(TrainerCallback):
    """After each save, only the checkpoint just saved keeps its optimizer, scheduler and RNG state. The Trainer
    calls `on_save` once the checkpoint is complete, so the older full checkpoint is cut down only when a newer one
    can be resumed from: a kill at any moment leaves a full checkpoint to resume from."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            latest = Path(args.output_dir) / f"{CHECKPOINT_PREFIX}{state.global_step}"
            drop_resume_state_of_older_checkpoints(args.output_dir, keep=latest)


@dataclass(frozen=True)
class DiskEstimate:
    """Disk a training run writes (bytes): weight-only checkpoints, the latest one's resume state (twice, while a
    new checkpoint is saved before the old one is cut down) and the final weights."""

    checkpoints: int
    checkpoint_weights: int
    resume_state: int
    final_weights: int

    @property
    def total(self) -> int:
        return self.checkpoints * self.checkpoint_weights + 2 * self.resume_state + self.final_weights


def training_steps(examples: int, args) -> int:
    """Optimizer steps of a run: max_steps, or the epochs over `examples` split across processes and accumulation."""
    if args.max_steps and args.max_steps > 0:
        return args.max_steps
    per_step = args.per_device_train_batch_size * max(1, args.world_size)
    batches_per_epoch = math.ceil(examples / per_step)
    return math.ceil(batches_per_epoch / args.gradient_accumulation_steps * args.num_train_epochs)


def estimate_training_disk(parameters: int, trainable_parameters: int, weight_bytes: int, steps: int, args,
                           adapters_only: bool = False) -> DiskEstimate:
    """What a run of `steps` optimizer steps writes.

    parameters / trainable_parameters: of the whole model / of what is trained (LoRA: the adapters).
    weight_bytes: bytes per saved weight (4 for float32 master weights, 2 when the model itself is bfloat16).
    Checkpoints: one per save_steps (capped by save_total_limit); a LoRA checkpoint holds the adapters only, and the
    final save holds merged full weights. Resume state: the optimizer's states of every trainable parameter
    (`OPTIMIZER_STATE_BYTES`, float32) plus the scheduler and RNG files (a few kB, not counted).
    """
    strategy = str(getattr(args.save_strategy, "value", args.save_strategy))
    if strategy == "steps" and args.save_steps:
        save_every = args.save_steps if args.save_steps >= 1 else max(1, math.ceil(args.save_steps * steps))
        count = math.ceil(steps / save_every)
    elif strategy == "epoch":
        count = math.ceil(args.num_train_epochs)
    else:
        count = 0
    if args.save_total_limit:
        count = min(count, args.save_total_limit)
    optimizer = str(getattr(args.optim, "value", args.optim))
    state_bytes = next((size for name, size in OPTIMIZER_STATE_BYTES.items() if optimizer.startswith(name)), 8)
    checkpoint_weights = (trainable_parameters if adapters_only else parameters) * weight_bytes
    return DiskEstimate(count, checkpoint_weights, trainable_parameters * state_bytes, parameters * weight_bytes)


def check_free_disk(folder: str | Path, needed: int, what: str) -> None:
    """Stop with one line, before anything is written, when the disk under `folder` cannot hold `needed` bytes."""
    existing = Path(folder)
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    logger.info("Disk: %s will write about %s; %s free under %s", what, human_bytes(needed), human_bytes(free),
                existing)
    if needed > free:
        raise PipelineError(f"output_dir: writing {what} takes about {human_bytes(needed)} of disk and only "
                            f"{human_bytes(free)} is free under {existing}; free some space, save less often "
                            "(save_steps) or keep fewer checkpoints (save_total_limit)")


def human_bytes(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.1f} {unit}" if unit != "B" else f"{size:.0f} B"
        size /= 1000
    return f"{size:.1f} TB"


def count_parameters(model_name_or_path: str, peft_config=None, trust_remote_code: bool = False) -> tuple[int, int]:
    """(all, trainable) parameters of a causal LM, counted from its config on the meta device (no weights loaded);
    with a LoRA `peft_config`, the trainable ones are the adapters'.

    Under DeepSpeed ZeRO-3 transformers builds every model inside `deepspeed.zero.Init`, which partitions each
    parameter with collectives that every process must join; the count runs on the main process alone (the disk
    check), so it builds a plain model, as transformers does when zero.Init is active already (`set_zero3_state`)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_utils import set_zero3_state

    config = AutoConfig.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
    with torch.device("meta"), set_zero3_state():
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
        parameters = model.num_parameters()
        if peft_config is None:
            return parameters, parameters
        from peft import get_peft_model

        return parameters, get_peft_model(model, peft_config).num_parameters(only_trainable=True)
