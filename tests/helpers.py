"""What several test files do the same way: run a script as a user types it (a new interpreter), under a launcher
with 2 CPU processes, or in this process (cheaper, for tests that need no new interpreter)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_command(script, *args, cwd, env=None, check=True):
    """`python <script> <args>` in `cwd`; `env` entries that are None are unset."""
    command = [sys.executable, str(REPO / script), *map(str, args)]
    environment = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    environment = {key: value for key, value in environment.items() if value is not None}  # None: unset
    result = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        pytest.fail(f"{script} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(script, *args, cwd, launcher="torchrun", check=True, config_file=None):
    """`torchrun --nproc_per_node 2 <script> <args>`, or `accelerate launch` with the repository's DDP config on 2
    CPU processes, or `accelerate launch --config_file <config_file>` as that file says (its processes, use_cpu)."""
    port = str(free_port())  # a port of its own per launch: one reused at once may still be held by the last one
    if config_file is not None:
        # Nothing but the file: --cpu would pick accelerate's plain launcher, which drops an FSDP or DeepSpeed config.
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file),
                   "--main_process_port", port]
    elif launcher == "torchrun":
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                   str(REPO / "configs/accelerate/ddp.yaml"), "--cpu", "--num_processes", "2", "--main_process_port",
                   port]
    command += [str(REPO / script), *map(str, args)]
    # The repository first, then the caller's own path (where an optional extra such as deepspeed may live)
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(command, cwd=cwd, env={**os.environ, "PYTHONPATH": python_path}, capture_output=True,
                            text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def run_in_process(script, *args):
    """A script module's entry point (`run_script(main, dataclass_types)`) in this process."""
    from dpo_pipeline.cli import run_script

    run_script(script.main, script.dataclass_types(), [str(arg) for arg in args])
