"""Runs a script (argv[1:]) with the delays that turn the races of a 2-process launch into certainties: the main
process claims each run folder late, and the second process saves the final weights late. A pipeline that writes
into a folder before it is claimed, or moves the staging folder while another process may still save into it, then
fails every time instead of now and then."""

import os
import runpy
import sys
import time

import transformers

from dpo_pipeline.runs import RunFolder

DELAY_S = 2.0
RANK = int(os.environ.get("RANK", "0"))

claim, save_model = RunFolder.claim, transformers.Trainer.save_model


def late_claim(self, *args, **kwargs):
    if RANK == 0:
        time.sleep(DELAY_S)
    return claim(self, *args, **kwargs)


def late_save(self, *args, **kwargs):
    if RANK == 1:
        time.sleep(DELAY_S)
    return save_model(self, *args, **kwargs)


RunFolder.claim, transformers.Trainer.save_model = late_claim, late_save
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
