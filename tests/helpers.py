"""What several test files do the same way: run a script as a user types it (a new interpreter), under a launcher
with 2 CPU processes, or in this process (cheaper, for tests that need no new interpreter)."""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WARM_PYTHON = REPO / "tests" / "warm_python.py"
# Set by pytest for each test phase: not part of what an interpreter's imports can depend on.
VOLATILE_VARIABLES = ("PYTEST_CURRENT_TEST",)


class WarmProcess:
    """One command running in a child of a warm interpreter (`tests/warm_python.py`): its pid (to send signals to),
    `wait()` for its `subprocess.CompletedProcess`."""

    def __init__(self, interpreter: "WarmInterpreter", argv: list[str], pid: int, outputs: tuple[str, str],
                 errors: str):
        self.interpreter, self.argv, self.pid, self.outputs, self.errors = interpreter, argv, pid, outputs, errors
        self.returncode = None

    def poll(self) -> int | None:
        if self.returncode is None and self.interpreter.answer_ready():
            self._finish()
        return self.returncode

    def wait(self, timeout: float | None = None) -> subprocess.CompletedProcess:
        if self.returncode is None:
            if not self.interpreter.answer_ready(timeout):
                os.kill(self.pid, signal.SIGKILL)
                self._finish()
                raise subprocess.TimeoutExpired(self.argv, timeout)
            self._finish()
        out, err = (Path(path).read_text(errors=self.errors) for path in self.outputs)
        return subprocess.CompletedProcess(self.argv, self.returncode, out, err)

    def kill(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)

    def _finish(self) -> None:
        status = self.interpreter.read_answer()["status"]
        self.returncode = os.waitstatus_to_exitcode(status)
        self.interpreter.busy.release()


class WarmInterpreter:
    """`python tests/warm_python.py` started with one environment: the libraries imported once, each command run in
    a forked child (one at a time)."""

    def __init__(self, env: dict):
        self.env = env
        self.busy = threading.Lock()
        # unbuffered: an answer waiting in a reader's buffer would be invisible to `select`
        self.server = subprocess.Popen([sys.executable, str(WARM_PYTHON)], env=env, stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, bufsize=0, cwd=REPO)
        self.folder = tempfile.mkdtemp(prefix="warm-python-")
        self.count = 0
        self.last_used = time.monotonic()
        self._pending = b""

    def start(self, argv: list[str], cwd, env: dict, errors: str = "strict") -> WarmProcess:
        self.count += 1
        outputs = (f"{self.folder}/{self.count}.out", f"{self.folder}/{self.count}.err")
        request = {"argv": argv, "cwd": str(cwd), "env": env, "stdout": outputs[0], "stderr": outputs[1]}
        self.server.stdin.write(json.dumps(request).encode() + b"\n")
        return WarmProcess(self, argv, self.read_answer()["pid"], outputs, errors)

    def answer_ready(self, timeout: float | None = 0) -> bool:
        import select

        return b"\n" in self._pending or bool(select.select([self.server.stdout], [], [], timeout)[0])

    def read_answer(self) -> dict:
        while b"\n" not in self._pending:
            chunk = os.read(self.server.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"tests/warm_python.py ended (exit {self.server.wait()})")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return json.loads(line)

    def close(self) -> None:
        import shutil

        self.server.stdin.close()
        self.server.wait(timeout=30)
        shutil.rmtree(self.folder, ignore_errors=True)


_INTERPRETERS: dict[tuple, list[WarmInterpreter]] = {}
_POOL_LOCK = threading.Lock()
# Each warm interpreter holds ~0.5 GB: past this many, the least recently used idle ones are closed.
MAX_INTERPRETERS = 4


@atexit.register
def _close_interpreters() -> None:
    for interpreters in _INTERPRETERS.values():
        for interpreter in interpreters:
            interpreter.close()


def start_python(argv, cwd, env: dict | None = None, errors: str = "strict") -> WarmProcess:
    """`python <argv>` (a script and its arguments, or "-m", a module and its arguments) in `cwd` with the
    environment `env` (default: this process's), in a child of a warm interpreter started with the same
    environment: `tests/warm_python.py` says why and how."""
    env = dict(os.environ if env is None else env)
    key = tuple(sorted((name, value) for name, value in env.items() if name not in VOLATILE_VARIABLES))
    with _POOL_LOCK:
        interpreters = _INTERPRETERS.setdefault(key, [])
        interpreter = next((one for one in interpreters if one.busy.acquire(blocking=False)), None)
        if interpreter is None:
            interpreter = WarmInterpreter(env)
            interpreter.busy.acquire()
            interpreters.append(interpreter)
            _close_the_least_recently_used()
        interpreter.last_used = time.monotonic()
    return interpreter.start([str(arg) for arg in argv], cwd, env, errors)


def _close_the_least_recently_used() -> None:
    every = sorted((one for ones in _INTERPRETERS.values() for one in ones), key=lambda one: one.last_used)
    for interpreter in every[: max(0, len(every) - MAX_INTERPRETERS)]:
        if interpreter.busy.acquire(blocking=False):
            for ones in _INTERPRETERS.values():
                if interpreter in ones:
                    ones.remove(interpreter)
            interpreter.close()


def run_python(argv, cwd, env: dict | None = None, timeout: float = 600,
               errors: str = "strict") -> subprocess.CompletedProcess:
    """`start_python`, then its result: as `subprocess.run([sys.executable, *argv], capture_output=True,
    text=True)`."""
    return start_python(argv, cwd, env, errors).wait(timeout)


def run_command(script, *args, cwd, env=None, check=True):
    """`python <script> <args>` in `cwd` (in a warm interpreter: `run_python`); `env` entries that are None are
    unset."""
    environment = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    environment = {key: value for key, value in environment.items() if value is not None}  # None: unset
    result = run_python([REPO / script, *args], cwd, environment)
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
