"""Progress a person can follow on long runs: a bar with rate and ETA on a terminal, a log line every few percent
when the output goes to a file; only on the main process.

The libraries' own bars (downloads, TRL's reference pass, datasets) are left as the libraries show them. The Trainer's
bar is replaced by `ProgressLogCallback` lines when stderr is not a terminal, where a bar would write thousands of
carriage returns into the log.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator

from transformers import TrainerCallback

from .cli import is_main_launch_process

logger = logging.getLogger(__name__)

LOG_EVERY_PERCENT = 10


def on_a_terminal() -> bool:
    return sys.stderr.isatty()


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class ProgressLines:
    """Counts work done towards a total and logs `desc: done/total (x %), rate, ETA` every LOG_EVERY_PERCENT %."""

    def __init__(self, total: int, desc: str, unit: str):
        self.total, self.desc, self.unit = max(total, 1), desc, unit
        self.done, self.start, self.next_percent = 0, time.monotonic(), LOG_EVERY_PERCENT

    def update(self, count: int = 1) -> None:
        self.done += count
        percent = 100 * self.done / self.total
        if percent + 1e-9 < self.next_percent and self.done < self.total:
            return
        while self.next_percent <= percent:
            self.next_percent += LOG_EVERY_PERCENT
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        logger.info("%s: %d/%d %s (%.0f %%), %.1f %s/s, %s left", self.desc, self.done, self.total, self.unit,
                    percent, rate, self.unit, duration(eta))


def progress(iterable: Iterable, total: int, desc: str, unit: str = "it", weight=None) -> Iterator:
    """Iterate `iterable` showing progress over `total` units: each item counts `weight(item)` units (default 1). A
    bar on a terminal, log lines in a file, nothing on processes other than the main one."""
    if not is_main_launch_process():
        yield from iterable
        return
    weight = weight or (lambda item: 1)
    if on_a_terminal():
        from tqdm.auto import tqdm

        with tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False) as bar:
            for item in iterable:
                yield item
                bar.update(weight(item))
        return
    lines = ProgressLines(total, desc, unit)
    for item in iterable:
        yield item
        lines.update(weight(item))


class ProgressLogCallback(TrainerCallback):
    """The Trainer's progress as log lines (step, rate, ETA every LOG_EVERY_PERCENT % of the steps), for output that is
    not a terminal."""

    def __init__(self, desc: str):
        self.desc, self.lines = desc, None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.lines = ProgressLines(state.max_steps - state.global_step, self.desc, "steps")

    def on_step_end(self, args, state, control, **kwargs):
        if self.lines is not None:
            self.lines.update()
