"""Many processes, one story: what the pipeline does under `accelerate launch` or `torchrun` with N processes.

The Trainer parallelises training. Everything else either splits its work between the processes (sampling prompts,
evaluating models) and gathers the results on the main process, or happens once, on the main process: claiming and
marking run folders, moving final weights into place, cutting checkpoints down, writing metrics files and reports,
tracking with wandb. The other processes wait where they need its result.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from .errors import PipelineError

T = TypeVar("T")


def process_state(training_args=None):
    """accelerate's `PartialState`, set up once per process. With a Trainer's arguments, they set it up (backend,
    timeout, device), as the Trainer will; otherwise it is set up here, on the CPU (gloo) where there is no GPU, so
    that a launch of N CPU processes is N processes and not N copies of one. One process, no launcher: a state of
    one process, nothing initialised."""
    import torch
    from accelerate import PartialState

    if training_args is not None:
        training_args.device  # noqa: B018 - sets up the distributed state with the training arguments' settings
        return PartialState()
    return PartialState(cpu=not torch.cuda.is_available())


def wait_for_everyone() -> None:
    process_state().wait_for_everyone()


def on_main(function: Callable[[], T]) -> T:
    """Run `function` on the main process only and give every process its result (it must pickle). A
    `PipelineError` raised there is raised on every process, so that all of them stop with it instead of waiting
    for a process that has stopped."""
    from accelerate.utils import broadcast_object_list

    state = process_state()
    if state.num_processes == 1:
        return function()
    outcome: list = [None]
    if state.is_main_process:
        try:
            outcome = [("result", function())]
        except PipelineError as error:
            outcome = [("error", error)]
    broadcast_object_list(outcome, from_process=0)
    kind, value = outcome[0]
    if kind == "error":
        raise value
    return value


def gather_lists(items: list) -> list:
    """Every process's list, concatenated in process order, on every process."""
    from accelerate.utils import gather_object

    state = process_state()
    return list(items) if state.num_processes == 1 else gather_object(list(items))


def asks_for_fsdp(training_args) -> bool:
    """Whether this run asks for FSDP: an `accelerate launch` whose config (or --use_fsdp) says FSDP, or
    transformers' own `fsdp` setting."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" or bool(getattr(training_args, "fsdp",
                                                                                          None))
