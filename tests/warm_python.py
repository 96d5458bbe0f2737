"""A Python interpreter that has already imported the libraries every script of the pipeline imports (torch,
transformers, TRL, datasets, accelerate, peft), and runs each command it is given in a child forked from it:
`tests/helpers.py` starts one per environment and runs a script's command line there as `python script.py ...`
would, in a process of its own, with the script's own exit code, stdout and stderr.

Why: each new interpreter pays 4-5 seconds for those imports before the script's first line runs, and the suite
starts over a hundred of them. A fork of an interpreter that was started with the same environment and imported
the same modules is in the state a new interpreter reaches after its imports: the imports are done once, the
script's own code, its exit and its files are the same. Launchers (torchrun, accelerate launch) still start fresh
interpreters of their own.

Protocol, one JSON object a line: a request {"argv": ["script.py" or "-m", ...], "cwd", "env", "stdout", "stderr"}
on stdin; the answer {"pid": <the child's pid>} at once, then {"pid", "status"} (as `os.waitpid` gives it) when the
child has ended. One command at a time. End of stdin: the server exits.
"""

import json
import os
import sys


def preload() -> None:
    """The imports every script makes before its first line of its own: what a forked child then need not redo."""
    import accelerate  # noqa: F401
    import datasets  # noqa: F401
    import numpy  # noqa: F401
    import peft  # noqa: F401
    import safetensors.torch  # noqa: F401
    import torch  # noqa: F401
    import transformers
    import trl
    import yaml  # noqa: F401

    # transformers and TRL import their submodules on first attribute access: touch the ones the scripts use
    for name in ("Trainer", "TrainingArguments", "AutoConfig", "AutoTokenizer", "AutoModelForCausalLM",
                 "AutoModelForSequenceClassification", "GPT2LMHeadModel", "GenerationConfig", "HfArgumentParser"):
        getattr(transformers, name)
    # TRL's configs, not its trainers: these import wandb, whose import makes temporary folders that would be shared
    # by every child, and removed by wandb under the others when one child's run ends
    for name in ("DPOConfig", "SFTConfig", "RewardConfig", "RLOOConfig", "GRPOConfig", "TrlParser", "ModelConfig"):
        getattr(trl, name)


def temporary_folders() -> list[str]:
    """The temporary folders the imports made (`tempfile.TemporaryDirectory`): a child would share them with every
    other child, and a child's exit would remove them under the others."""
    import gc
    import tempfile
    import warnings

    with warnings.catch_warnings():  # looking at every object touches deprecated module attributes
        warnings.simplefilter("ignore")
        return [folder.name for folder in gc.get_objects() if isinstance(folder, tempfile.TemporaryDirectory)]


def run_child(request: dict) -> None:
    """In the forked child: become `python <argv>` in `cwd` with `env`, run it, exit as the interpreter would."""
    import atexit
    import runpy
    import threading
    import traceback

    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    stdin = os.open(os.devnull, os.O_RDONLY)
    os.dup2(stdin, 0)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    argv = request["argv"]
    code = 0
    try:
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            sys.path[0] = os.getcwd()  # as `python -m` puts the working folder first
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))  # as `python script.py` puts the script's folder
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as stop:
        code = stop.code
        if code is None:
            code = 0
        elif not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - what the interpreter does with an exception nothing caught
        traceback.print_exc()
        code = 1
    # the interpreter's own shutdown: wait for non-daemon threads, run the atexit functions, flush
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    os._exit(code & 0xFF)


def serve() -> None:
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # what the imports print must not reach the protocol
    preload()
    import threading

    if threading.active_count() != 1:  # a fork copies only the forking thread: another one's state would be lost
        raise RuntimeError(f"warm_python: the imports started {threading.active_count() - 1} threads; cannot fork")
    if temporary_folders():
        raise RuntimeError(f"warm_python: the imports made temporary folders {temporary_folders()}; leave them out")
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            protocol.close()
            run_child(request)
        protocol.write(json.dumps({"pid": pid}) + "\n")
        protocol.flush()
        _, status = os.waitpid(pid, 0)
        protocol.write(json.dumps({"pid": pid, "status": status}) + "\n")
        protocol.flush()


if __name__ == "__main__":
    serve()
