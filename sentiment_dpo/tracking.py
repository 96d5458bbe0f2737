"""Run tracking: wandb (online with an API key, else offline, or off) and metrics files beside every run."""

from __future__ import annotations

import json
import logging
import netrc
import os
import uuid
from pathlib import Path

from transformers import TrainerCallback

from .runs import atomic_write_text

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
WANDB_ID_FILE = "wandb_run_id.txt"


def wants_wandb(report_to) -> bool:
    targets = [report_to] if isinstance(report_to, str) else list(report_to or [])
    return "wandb" in targets or "all" in targets


def _has_wandb_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def configure_wandb(project: str) -> str:
    """Set the project and choose wandb's mode: offline when no API key is configured (no account needed).

    Returns the mode. An explicit WANDB_MODE in the environment is respected.
    """
    os.environ["WANDB_PROJECT"] = project
    if "WANDB_MODE" not in os.environ and not _has_wandb_api_key():
        os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_SILENT", "true")
    return os.environ.get("WANDB_MODE", "online")


def start_wandb_run(output_dir: str | Path, project: str, name: str, group: str | None, job_type: str,
                    config: dict | None = None):
    """Start (or, after an interruption, resume) the wandb run of `output_dir`; its id is kept in the folder."""
    import wandb

    mode = configure_wandb(project)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    id_file = output_dir / WANDB_ID_FILE
    run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:8]
    atomic_write_text(id_file, run_id + "\n")
    run = wandb.init(project=project, name=name, group=group, job_type=job_type, id=run_id, resume="allow",
                     dir=str(output_dir), config=config or {}, reinit="finish_previous")
    if mode == "offline":
        logger.info("wandb is offline (no API key): run files in %s; upload them later with `wandb sync %s`",
                    Path(run.dir).parent, Path(run.dir).parent)
    return run


def finish_wandb_run() -> None:
    import wandb

    if wandb.run is not None:
        wandb.finish()


class MetricsFileCallback(TrainerCallback):
    """Append every logged metric to `<output_dir>/metrics.jsonl`, so analysis needs no tracking service.

    On resume, lines logged after the checkpoint being resumed are dropped first (the run logs them again), as are
    a last line torn by a kill mid-write and the summary of a run killed after its last step.
    """

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / METRICS_FILE

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.path.is_file():
            # The end-of-training summary (train_runtime, ...) is logged again when the resumed run ends.
            kept = [line for line, record in map(lambda line: (line, _parse(line)), self.path.read_text().splitlines())
                    if record is not None and record.get("step", 0) <= state.global_step
                    and "train_runtime" not in record]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as handle:
                handle.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")


def _parse(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None
