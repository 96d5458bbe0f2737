"""What this machine can train with: the probing behind "bf16 is set but there is no GPU for it" (the CUDA build of
torch, the NVIDIA driver it needs). Called when a stage starts, never while a config is parsed: reading a config
(--help, the tests, the benchmark's estimate) runs no subprocess."""

from __future__ import annotations

import os

from .errors import PipelineError


def bf16_training_available() -> bool:
    """Whether transformers can train in bfloat16 here (a GPU with bf16, or an XLA device)."""
    from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available

    return is_torch_bf16_gpu_available() or is_torch_xla_available()


def accelerator_available() -> bool:
    """Whether torch sees a GPU (CUDA or ROCm), an XPU or an Apple GPU to train on."""
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available()) or \
        torch.backends.mps.is_available()


def launched_processes() -> int:
    """Processes of this launch, from the launcher's environment (torchrun, accelerate launch, SLURM via either)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def require_the_gpu_asked_for(training_args) -> None:
    """Stop with one line when the config asked for bf16 and this machine has no GPU for it (see `gpu_problem`).
    The config's own check (`configs.common.PipelineTrainingArguments`) turned bf16 off and remembered it, so that a
    config reads on any machine."""
    if getattr(training_args, "bf16_without_gpu", False):
        raise PipelineError(f"bf16 is set (TRL's default) but {gpu_problem()}")


def run_precision(training_args) -> str:
    """The mixed precision a run's own config asks for: "bf16", "fp16" or "no" (float32)."""
    return "fp16" if training_args.fp16 else "bf16" if training_args.bf16 else "no"


def launcher_precision() -> str | None:
    """The mixed precision `accelerate launch` imposes (its config's `mixed_precision`, or --mixed_precision), or
    None when there is no such launcher or it leaves the choice to the run ("no")."""
    imposed = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    return None if imposed == "no" else imposed


def require_the_precision_asked_for(training_args) -> None:
    """The precision a launcher imposes and the run's own agree, or the run stops before anything is written.
    transformers takes `accelerate launch`'s mixed_precision whenever the run's bf16 and fp16 are both false: a run
    whose config (and run_config.json) says float32 would train in bfloat16 under `configs/accelerate/*.yaml`'s
    `mixed_precision: bf16`, and one that says bf16 under a launcher's fp16 would train in bf16 while the launcher
    said otherwise. (The shipped ddp.yaml leaves the choice to the run.)"""
    imposed, asked = launcher_precision(), run_precision(training_args)
    if imposed is not None and imposed != asked:
        flag = {"no": "--bf16 false --fp16 false", "bf16": "--bf16 true", "fp16": "--fp16 true"}
        raise PipelineError(f"the launcher imposes mixed precision {imposed} (its config's mixed_precision) and the "
                            f"run's config asks for {asked}: launch with --mixed_precision {asked} (or "
                            f"mixed_precision: \"{asked}\" in the launcher's config), or pass {flag[imposed]} to the "
                            "script, so that what trains is what run_config.json records")


def gpu_problem() -> str | None:
    """Why torch can train in bfloat16 on no GPU here, in one sentence; None when it can."""
    import shutil
    import subprocess

    import torch

    if torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return None
        return (f"the GPU {torch.cuda.get_device_name()} has no bfloat16 support: pass --bf16 false --fp16 true to "
                "train in float16 mixed precision")
    if torch.version.cuda is None:
        return (f"torch {torch.__version__} is a CPU-only build: install a CUDA build of torch (see the README's "
                "'Your GPU' section), or pass --bf16 false to train in float32 on the CPU")
    driver = None
    if shutil.which("nvidia-smi"):
        query = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True)
        driver = query.stdout.strip().splitlines()[0] if query.returncode == 0 and query.stdout.strip() else None
    needed = MINIMUM_DRIVER.get(torch.version.cuda.split(".")[0], "a recent")
    found = f"this machine's driver is {driver}" if driver else "no NVIDIA driver answers here (nvidia-smi)"
    return (f"torch {torch.__version__} is built for CUDA {torch.version.cuda}, which needs NVIDIA driver {needed} or "
            f"newer, and finds no usable GPU ({found}): install a torch build for your driver (see the README's "
            "'Your GPU' section), or pass --bf16 false to train in float32 on the CPU")


# The oldest Linux driver each CUDA major version of PyPI's torch builds runs on.
MINIMUM_DRIVER = {"11": "450.80", "12": "525.60", "13": "580"}
