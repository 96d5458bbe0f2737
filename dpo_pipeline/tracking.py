"""Run tracking: wandb (online with an API key, else offline, or off) and metrics files beside every run."""

from __future__ import annotations

import json
import logging
import netrc
import os
import uuid
from pathlib import Path

from transformers import TrainerCallback

from .arguments.common import DEFAULT_WANDB_PROJECT
from .runs import atomic_write_text, redact_secrets

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
    """Choose the project and wandb's mode: offline when no API key is configured (no account needed). A user's
    WANDB_PROJECT wins over the pipeline's default project (not over one given in the config or on the command
    line); an explicit WANDB_MODE is respected. Returns (project, mode)."""
    if project == DEFAULT_WANDB_PROJECT and os.environ.get("WANDB_PROJECT"):
        project = os.environ["WANDB_PROJECT"]
    if "WANDB_MODE" not in os.environ and not _has_wandb_api_key():
        os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_SILENT", "true")
    return project, os.environ.get("WANDB_MODE", "online")


# The folders under which the pipeline's outputs live: what follows them names the scale (runs/tiny/dpo/beta-0.1).
OUTPUT_ROOTS = ("runs", "generations")


def run_names(output_dir: str | Path, stage: str) -> tuple[str, str]:
    """(name, group) of the wandb run that writes `output_dir`, from its path below runs/ or generations/:

        runs/tiny/sft               -> tiny/sft, group tiny/sft
        runs/paper/dpo/beta-0.1     -> paper/dpo/beta-0.1, group paper/dpo    (every run of a sweep folder)
        generations/gpt2-large      -> gpt2-large/preference_pairs, group the same
        /data/exp1/dpo/beta-0.1     -> dpo/beta-0.1, group dpo/beta-0.1       (elsewhere: the last two folders)
    """
    parts = Path(output_dir).resolve().parts
    roots = [index for index, part in enumerate(parts) if part in OUTPUT_ROOTS]
    relative = list(parts[roots[-1] + 1:]) if roots and roots[-1] + 1 < len(parts) else list(parts[-2:])
    if len(relative) == 1:
        relative.append(stage)
    name = "/".join(relative)
    return name, "/".join(relative[:-1]) if len(relative) >= 3 else name


def start_wandb_run(output_dir: str | Path, project: str, stage: str, config: dict, group: str | None = None):
    """Start (or, after an interruption, continue) the wandb run of `output_dir`, on the main process only: named
    and grouped by scale and stage (`run_names`; `group` overrides the group), with the whole config of the run
    (credentials redacted). Its id is kept in the folder, so a resumed run continues the same wandb run."""
    import wandb

    project, mode = configure_wandb(project)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    id_file = output_dir / WANDB_ID_FILE
    run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:8]
    atomic_write_text(id_file, run_id + "\n")
    name, default_group = run_names(output_dir, stage)
    run = wandb.init(project=project, name=name, group=group or default_group, job_type=stage, id=run_id,
                     resume="allow", dir=str(output_dir), config=redact_secrets(config), reinit="finish_previous")
    if mode == "offline":
        logger.info("wandb is offline (no API key): run files in %s; upload them later with `wandb sync %s`",
                    Path(run.dir).parent, Path(run.dir).parent)
    else:
        logger.info("wandb run %s: %s", name, run.url)
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
