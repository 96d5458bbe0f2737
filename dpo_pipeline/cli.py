"""What every top-level script shares: parsing a YAML config plus CLI overrides, logging, and clean errors.

A script is `run_script(main, dataclass_types)`: parse with TRL's `TrlParser` (unknown keys are errors), call
`main(*configs)`, and turn a `PipelineError` (bad input, unreachable hub) into one line and exit code 2, and running
out of GPU (or host) memory into one line with the settings to change and exit code 4.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlparse

logger = logging.getLogger(__name__)

EXIT_BAD_INPUT = 2
EXIT_OUT_OF_MEMORY = 4


class PipelineError(Exception):
    """A problem the user can fix (bad config, missing file, no hub access): reported as one line, exit code 2."""


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
    import yaml
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
        if not config_path.is_file():
            raise PipelineError(f"config file {config_path} does not exist")
        try:
            config = yaml.safe_load(config_path.read_text())
        except yaml.YAMLError as error:
            raise PipelineError(f"{config_path} is not valid YAML: {' '.join(str(error).split())}") from None
        if not isinstance(config, dict):
            raise PipelineError(f"{config_path} must hold a YAML mapping of config keys")
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
        from .runs import redact_command

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


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def hub_is_reachable() -> bool:
    """Whether a TCP connection to the Hugging Face Hub opens (through the proxy that HTTPS_PROXY, HTTP_PROXY or
    ALL_PROXY names for it, unless NO_PROXY exempts it, as huggingface_hub itself would connect); fails fast on a
    machine without network."""
    if _hub_offline_mode():
        return False
    return _can_connect(hub_connection_target(hub_endpoint()))


def hub_connection_target(endpoint: str) -> str:
    """Where a connection to `endpoint` goes: the proxy the environment names for its scheme (urllib's reading of
    HTTPS_PROXY / HTTP_PROXY / ALL_PROXY and NO_PROXY, in either case), else the endpoint itself."""
    from urllib.request import getproxies, proxy_bypass

    url = urlparse(endpoint)
    proxies = getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if proxy and not proxy_bypass(url.hostname or ""):
        return proxy if "://" in proxy else f"http://{proxy}"
    return endpoint


def _hub_offline_mode() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


@functools.lru_cache(maxsize=8)
def _can_connect(endpoint: str, timeout_s: float = 5.0) -> bool:
    url = urlparse(endpoint)
    try:
        with socket.create_connection((url.hostname, url.port or (80 if url.scheme == "http" else 443)),
                                      timeout=timeout_s):
            return True
    except OSError:
        return False


def require_source(name_or_path: str | None, what: str, field_name: str) -> str:
    """Check that a model or dataset can be loaded: a local path that exists, or a hub id with the hub reachable.

    Without this, a machine with no network waits through the hub client's retries and then prints a traceback.
    """
    if not name_or_path:
        raise PipelineError(f"{field_name} is not set: give the {what} as a local path or a Hugging Face Hub id")
    if Path(name_or_path).exists():
        return name_or_path
    looks_local = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_local:
        raise PipelineError(f"{field_name}: {what} path '{name_or_path}' does not exist")
    if _hub_offline_mode():
        return name_or_path  # the libraries will look in the local cache only
    if not hub_is_reachable():
        raise PipelineError(
            f"{field_name}: cannot reach the Hugging Face Hub ({hub_endpoint()}) to load the {what} "
            f"'{name_or_path}', and no local folder has that name; connect to the internet, set HF_HUB_OFFLINE=1 "
            "to use a copy in the local cache, or run the embedded offline default (make demo)"
        )
    return name_or_path
