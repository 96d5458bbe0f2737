"""Runs a script (argv[1:]) that stops as a kill would, on every process, right after its first checkpoint is
saved: every process has written its part of the checkpoint (a sharded optimizer state is one file per process), and
nothing after it is written. The state on disk is the one a real interruption there leaves, every time."""

import os
import runpy
import sys

import torch.distributed

from dpo_pipeline.checkpoints import KeepResumeStateOfTheLatestCheckpoint

on_save = KeepResumeStateOfTheLatestCheckpoint.on_save


def on_save_then_die(self, args, state, control, **kwargs):
    on_save(self, args, state, control, **kwargs)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()  # every process's part of the checkpoint is on disk
    os._exit(137)  # no cleanup, no final save: as SIGKILL


KeepResumeStateOfTheLatestCheckpoint.on_save = on_save_then_die
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
