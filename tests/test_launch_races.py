"""A 2-process launch of the DPO sweep with the shipped tiny config, as a user types it (no --use_cpu), with the
races at the shared files made certain (`launch_with_delays.py`): every entry finishes, once, with the weights of
one process at the same global batch."""

import json
import os
import shutil
import subprocess
import sys

import torch
from safetensors.torch import load_file

import preference_pairs
from tests.helpers import REPO, free_port, run_in_process, run_python

# 4 steps of the config's 32 pairs stay inside the first epoch of the ~180 pairs of 30 prompts: every batch is whole
# on one process and on two.
COUNTS = ["--max_steps", 4, "--save_steps", 2, "--eval_steps", 2]


def lay_out_the_tiny_demo(tiny_assets, root):
    """runs/tiny/sft and generations/tiny as `make demo` leaves them, where configs/tiny/dpo.yaml looks."""
    shutil.copytree(tiny_assets["sft_model"], root / "runs/tiny/sft")
    run_in_process(preference_pairs, "--model_name_or_path", tiny_assets["sft_model"], "--classifier_name_or_path",
                   tiny_assets["classifier"], "--dataset_name", tiny_assets["data"], "--num_prompts", 30,
                   "--heldout_prompts", 4, "--max_new_tokens", 8, "--classifier_max_length", 64,
                   "--output_dir", root / "generations/tiny", "--report_to", "none")


def dpo_command(*prefix):
    return [sys.executable, *map(str, prefix), str(REPO / "dpo.py"), "--config", str(REPO / "configs/tiny/dpo.yaml"),
            "--sweep", "beta=0.1", "beta=1.0", *map(str, COUNTS)]


def test_a_two_process_sweep_with_its_races_made_certain_finishes_like_one_process(tiny_assets, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for root in (one, two):
        lay_out_the_tiny_demo(tiny_assets, root)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    single = run_python(dpo_command()[1:], one, env)
    assert single.returncode == 0, single.stderr[-3000:]
    launched = subprocess.run(
        dpo_command("-m", "torch.distributed.run", "--nproc_per_node", 2, "--master_port", free_port(),
                    REPO / "tests/launch_with_delays.py"),
        cwd=two, env=env, capture_output=True, text=True, timeout=600)
    assert launched.returncode == 0, launched.stderr[-4000:]
    assert "parallel_mode != ParallelMode.DISTRIBUTED" not in launched.stderr  # transformers' sign of N lone runs
    for entry in ("beta-0.1", "beta-1.0"):
        run_dir = two / "runs/tiny/dpo" / entry
        assert json.loads((run_dir / "stage_complete.json").read_text())["summary"]["global_step"] == 4
        assert not (run_dir / ".final-model.tmp").exists()
        assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
        weights = load_file(run_dir / "model.safetensors")
        for name, tensor in load_file(one / "runs/tiny/dpo" / entry / "model.safetensors").items():
            torch.testing.assert_close(weights[name], tensor, rtol=0, atol=1e-5, msg=name)
