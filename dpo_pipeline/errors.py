"""The pipeline's error types and exit codes, below every other module (each may raise them, none is imported here).

A script turns these into one line on stderr and the exit code they carry (`cli.run_script`):
    2  bad input: a config, a file or a model the user can fix (`PipelineError`)
    3  training diverged: NaN or infinite loss or weights, the last good checkpoint kept (`TrainingDiverged`)
    4  out of GPU or host memory, with the settings that trade speed for memory
"""

from __future__ import annotations

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_OUT_OF_MEMORY = 4


class PipelineError(Exception):
    """A problem the user can fix (bad config, missing file, no hub access): reported as one line, exit code 2."""

    exit_code = EXIT_BAD_INPUT


class TrainingDiverged(PipelineError):
    """The loss or the weights became NaN or infinite: training stops, the checkpoints saved so far are kept."""

    exit_code = EXIT_DIVERGED
