"""What every top-level script shares: parsing a YAML config plus CLI overrides, logging, and clean errors (the
error types themselves are in `errors`, the hub checks in `hub`).

A script is `run_script(main, dataclass_types)`: parse with TRL's `TrlParser` (unknown keys are errors), call
`main(*configs)`, and turn a `PipelineError` (bad input, unreachable hub) into one line and exit code 2, and running
out of GPU (or host) memory into one line with the settings to change and exit code 4.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import EXIT_BAD_INPUT, EXIT_OUT_OF_MEMORY, PipelineError
from .inputs import read_config_file
from .runs import redact_command

logger = logging.getLogger(__name__)

WORKER_EXIT_DELAY_S = 5.0


def is_main_launch_process() -> bool:
    """Rank 0 of a launch (torchrun, accelerate launch) or a plain run, from the launcher's environment."""
    return os.environ.get("RANK", "0") == "0"


def setup_logging(level: int = logging.INFO) -> None:
    """Our INFO lines on the main process; the other processes of a launch say only what goes wrong."""
    level = level if is_main_launch_process() else logging.WARNING
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=level, force=True
    )
    # The libraries log a lot at INFO; their warnings are what a user needs to see. Their progress bars stay.
    for noisy in ("transformers", "datasets", "accelerate", "httpx", "huggingface_hub", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import transformers

    transformers.utils.logging.set_verbosity_warning()


def parse_config(dataclass_types: Sequence[type], args: Sequence[str] | None = None) -> tuple:
    """Fill `dataclass_types` from `--config file.yaml` and then the command line (the command line wins).

    Unknown keys in the YAML file or on the command line are errors, as is a field that fails validation.
    """
    from trl import TrlParser

    class _Parser(TrlParser):
        def error(self, message: str):  # argparse would print its usage and exit; one line is enough
            raise PipelineError(message)

    argv = list(sys.argv[1:] if args is None else args)
    parser = _Parser(dataclass_types)
    if "--config" in argv:
        config_index = argv.index("--config") + 1
        if config_index >= len(argv):
            raise PipelineError("--config needs a YAML file path")
        config_path = Path(argv[config_index])
        config = read_config_file(config_path)
        known = {action.dest for action in parser._actions} | {"env"}
        unknown = sorted(key for key in config if key not in known)
        if unknown:
            raise PipelineError(f"{config_path}: unknown config key(s): {', '.join(unknown)}")
    try:
        configs = tuple(parser.parse_args_and_config(args=argv, fail_with_unknown_args=True))
    except PipelineError:
        raise
    except (ValueError, TypeError) as error:
        raise PipelineError(f"invalid configuration: {' '.join(str(error).split())}") from None
    if args is None:
        # Trackers record the command line (wandb writes sys.argv into every run file it syncs): once parsed, a
        # credential given there (--hub_token hf_...) is blanked in sys.argv itself. The token lives on in HF_TOKEN.
        sys.argv[1:] = redact_command(sys.argv[1:])
    return configs


def run_script(main: Callable[..., object], dataclass_types: Sequence[type], args: Sequence[str] | None = None) -> None:
    """Entry point of a top-level script: parse, run, and exit 2 with one line on a `PipelineError`."""
    setup_logging()
    try:
        configs = parse_config(dataclass_types, args)
        main(*configs)
    except PipelineError as error:
        say(f"error: {error}")
        if not is_main_launch_process():
            # torchrun stops every worker as soon as one exits with an error: the others wait a moment, so that the
            # main process (which alone says why) is not stopped before its line is out.
            time.sleep(WORKER_EXIT_DELAY_S)
        raise SystemExit(getattr(error, "exit_code", EXIT_BAD_INPUT)) from None
    except KeyboardInterrupt:
        say("interrupted: rerun the same command to continue from the last checkpoint")
        raise SystemExit(130) from None
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        say(f"error: {out_of_memory_message(error)}")
        raise SystemExit(EXIT_OUT_OF_MEMORY) from None


def say(line: str) -> None:
    """One line on stderr, from the main process only: N processes that all stop for the same reason say it once."""
    if is_main_launch_process():
        print(line, file=sys.stderr)


def is_out_of_memory(error: BaseException) -> bool:
    """A failed GPU allocation (torch.OutOfMemoryError, a RuntimeError) or host one (MemoryError)."""
    torch = sys.modules.get("torch")  # imported by then if a GPU allocation failed; never imported just for this
    return isinstance(error, MemoryError) or (torch is not None and isinstance(error, torch.OutOfMemoryError))


def out_of_memory_message(error: BaseException) -> str:
    """One line for an allocation that failed: what ran out, and the settings that trade speed for memory."""
    first_line = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
    return (f"out of memory ({first_line.strip()[:160]}). Finished runs and checkpoints are kept; rerunning resumes. "
            "Lower per_device_train_batch_size and raise gradient_accumulation_steps by the same factor (the same "
            "optimizer batch), set activation_checkpointing true, or use the *_24gb configs on a 24 GB GPU; for "
            "sampling and evaluation lower generation_batch_size, classifier_batch_size or kl_batch_size")
