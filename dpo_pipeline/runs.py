"""Output folders that can be trusted: the config that made them, a finished marker, atomic writes, JSONL I/O.

Each stage writes into a folder that records its config (`run_config.json`, with library versions and the git
commit) and, once finished, `stage_complete.json` with the hash of that config. Re-running a finished stage with
the same config does nothing; pointing a stage at a folder made with another config is an error unless
`--overwrite true` is given.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from .errors import PipelineError

logger = logging.getLogger(__name__)

CONFIG_FILE = "run_config.json"
COMPLETE_FILE = "stage_complete.json"
# Written into every trained policy's folder (DPO runs and baselines): what eval.py needs to place it on the plots.
SWEEP_RUN_FILE = "sweep_run.json"

# Settings that change where or how a run is reported or saved, not what it computes. (generation_batch_size is not
# among them: each sampling batch is seeded from its first item, so the batch size decides the samples.)
NOT_IN_FINGERPRINT = frozenset({
    "output_dir", "overwrite", "report_to", "wandb_project", "run_name", "logging_dir", "logging_steps",
    "logging_first_step", "logging_strategy", "save_steps", "save_strategy", "save_total_limit", "disable_tqdm",
    "dataloader_num_workers", "resume_from_checkpoint", "push_to_hub", "hub_model_id", "hub_token", "hub_strategy",
    "hub_private_repo", "sweep", "sweep_name", "sweep_shard", "classifier_batch_size", "kl_batch_size",
    "eval_pairs_file", "max_eval_pairs", "eval_strategy", "eval_steps", "per_device_eval_batch_size",
    "precompute_ref_batch_size", "include_checkpoints", "dpo_output_dir",
    # eval.py: which extra measurements and report items; each has a cache key of its own
    "heldout_pairs_file", "best_of_n", "best_of_n_prompts", "win_rate_tie_tolerance", "judge_model_path",
    "judge_template", "judge_max_new_tokens", "judge_batch_size", "judge_prompts", "report_prompts",
    # dpo.py: a reference other than the starting policy goes into the run's fingerprint as its `extra` where it is
    # set, so that runs made before the setting existed keep their fingerprint
    "ref_model_name_or_path",
})


def config_dict(config) -> dict:
    """A JSON-able dict of a config dataclass (TrainingArguments' own `to_dict` hides tokens)."""
    if hasattr(config, "to_dict"):
        return config.to_dict()
    return {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}


# Credentials, not vocabulary: `hub_token` and `wandb_api_key` are secrets, `eos_token` and `max_new_tokens` are not.
_SECRET_NAME = re.compile(r"(^|_)(hub_token|hf_token|access_token|auth_token|api_key|apikey|secret|password)$|^token$")
REDACTED = "<redacted>"


def _is_secret(name: str) -> bool:
    return bool(_SECRET_NAME.search(name.lower().lstrip("-")))


def redact_secrets(value):
    """A copy of nested dicts/lists with the value of every key that names a credential (hub_token, api_key,
    secret, password, ...) replaced, so that no credential given in a config reaches a saved file or a tracking
    service."""
    if isinstance(value, dict):
        return {key: (REDACTED if _is_secret(str(key)) and item not in (None, "") else redact_secrets(item))
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_secrets(item) for item in value]
    return value


def redact_command(argv: list[str]) -> list[str]:
    """The command line with the value of every secret option (`--hub_token X`, `--hub_token=X`) replaced."""
    redacted, hide_next = [], False
    for argument in argv:
        if hide_next:
            redacted.append(REDACTED)
            hide_next = False
        elif argument.startswith("--") and _is_secret(argument.split("=", 1)[0]):
            if "=" in argument:
                redacted.append(argument.split("=", 1)[0] + "=" + REDACTED)
            else:
                redacted.append(argument)
                hide_next = True
        else:
            redacted.append(argument)
    return redacted


def config_fingerprint(*configs, extra: dict | None = None) -> str:
    """sha256 (16 hex digits) of the settings that determine a stage's result."""
    merged: dict = {}
    for config in configs:
        merged[type(config).__name__] = {
            key: value for key, value in sorted(config_dict(config).items()) if key not in NOT_IN_FINGERPRINT
        }
    if extra:
        merged["extra"] = extra
    blob = json.dumps(merged, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename it into place: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)


def atomic_write_json(path: str | Path, payload) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    lines = [json.dumps(record, ensure_ascii=False) for record in records]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def git_commit() -> str | None:
    """The checkout's commit (with `-dirty` if it has local changes), or None outside a git checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": sys.version.split()[0]}
    for package in ("torch", "transformers", "trl", "datasets", "peft", "accelerate", "wandb", "tokenizers"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            pass
    return versions


class RunFolder:
    """An output folder owned by one config: `claim` it before writing, `complete` it when the stage is done."""

    def __init__(self, path: str | Path, fingerprint: str, stage: str, shared: frozenset[str] = frozenset()):
        """`shared`: names of entries in the folder that other commands may write too (a download cache) and that
        are no sign of another run."""
        self.path, self.fingerprint, self.stage, self.shared = Path(path), fingerprint, stage, shared

    @property
    def is_complete(self) -> bool:
        marker = self.path / COMPLETE_FILE
        return marker.is_file() and json.loads(marker.read_text()).get("config_hash") == self.fingerprint

    def recorded_fingerprint(self) -> str | None:
        config_file = self.path / CONFIG_FILE
        if not config_file.is_file():
            return None
        try:
            return json.loads(config_file.read_text()).get("config_hash")
        except json.JSONDecodeError:
            return None

    def _holds_another_run(self) -> bool:
        """Files of another config (or of no recorded config at all) are in the folder."""
        return (self.recorded_fingerprint() != self.fingerprint and self.path.is_dir()
                and any(entry.name not in self.shared for entry in self.path.iterdir()))

    def check(self, overwrite: bool = False) -> bool:
        """Whether the stage already finished here with this config, without writing anything.

        A folder holding a run of another config (or unrelated files) is an error, unless `overwrite` is set (then
        `claim` will empty it). A stage calls `check` first, validates its inputs, and only then `claim`s, so bad
        input never touches an existing folder.
        """
        if self._holds_another_run() and not overwrite:
            what = "a run made with a different config" if self.recorded_fingerprint() else "files of something else"
            raise PipelineError(
                f"{self.path} holds {what}; choose another output folder or pass --overwrite true to replace it"
            )
        return self.is_complete and not overwrite

    def claim(self, configs: dict, overwrite: bool = False) -> bool:
        """Make the folder this config's. Returns True if the stage already finished here with the same config.

        See `check` for folders of another run; with `overwrite` such a folder (or a finished one) is emptied.
        """
        if self.check(overwrite):
            return True
        if self._holds_another_run() or (overwrite and self.is_complete):
            logger.warning("Overwriting %s", self.path)
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path / CONFIG_FILE, {
            "stage": self.stage,
            "config_hash": self.fingerprint,
            "configs": redact_secrets({name: config_dict(config) if dataclasses.is_dataclass(config) else config
                                       for name, config in configs.items()}),
            "command": redact_command([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "git_commit": git_commit(),
            "versions": library_versions(),
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        return False

    def complete(self, summary: dict | None = None) -> None:
        atomic_write_json(self.path / COMPLETE_FILE, {
            "stage": self.stage,
            "config_hash": self.fingerprint,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "summary": summary or {},
        })


def sweep_run_name(overrides: dict[str, str]) -> str:
    """Folder and wandb name of a sweep run: `beta-0.1`, `beta-0.1_loss_type-ipo`."""
    name = "_".join(f"{key}-{value}" for key, value in overrides.items())
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", name)


def run_info(*, method: str, beta: float | None, loss_type: list[str], label_smoothing: float | None,
             label_noise: float, pairs_file: str, reference_model: str, **extra) -> dict:
    """sweep_run.json of a trained policy (a DPO sweep run or a baseline): what eval.py needs to place it."""
    return {"method": method, "beta": beta, "loss_type": loss_type, "label_smoothing": label_smoothing,
            "label_noise": label_noise, "pairs_file": pairs_file, "reference_model": reference_model, **extra}
