"""Each of the four stages killed with SIGKILL at a random point, then started again with the same command, ends
with the same result as a run that was never interrupted (issue #4)."""

import csv
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO, TRAINING_ON_CPU

RANDOM = random.Random(os.environ.get("KILL_SEED"))  # set KILL_SEED to replay a failure


def command(script, *args):
    return [sys.executable, str(REPO / script), *map(str, args)]


def run_to_end(cmd, cwd):
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(cmd, cwd=cwd, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def kill_at_random_point(cmd, cwd, ready, max_delay_s):
    """Start `cmd`, wait until `ready()` says it has made some progress, wait a random time up to `max_delay_s`,
    then SIGKILL it. The process must still have been running: an interruption that did not interrupt tests
    nothing."""
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(cmd, cwd=cwd, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    delay = RANDOM.uniform(0, max_delay_s)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    stderr = process.communicate()[1].decode(errors="replace")
    assert process.returncode == -signal.SIGKILL, f"finished before the kill (delay {delay:.2f} s):\n{stderr[-2000:]}"
    return delay


def random_checkpoint(folder, save_steps, max_steps):
    """Ready once a checkpoint drawn at random from the first 70 % of the run is on disk: the kill lands anywhere
    from the first save on (mid-step, mid-save or mid-log), with enough steps left that it always interrupts."""
    step = RANDOM.choice(range(save_steps, int(0.7 * max_steps) + 1, save_steps))
    return lambda: (folder / f"checkpoint-{step}" / "trainer_state.json").is_file()


def assert_same_weights(folder_a, folder_b):
    a, b = load_file(folder_a / "model.safetensors"), load_file(folder_b / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)


def sft_command(assets, output_dir):
    return command("sft.py", "--model_name_or_path", assets["policy_init"], "--from_scratch", "true",
                   "--dataset_name", assets["data"], "--output_dir", output_dir, "--max_steps", 100, "--save_steps", 10,
                   "--per_device_train_batch_size", 16, "--learning_rate", 5e-3, "--max_length", 64,
                   "--logging_steps", 3, "--report_to", "wandb", *TRAINING_ON_CPU)


def test_sft_killed_anywhere_resumes_to_the_same_weights(tiny_assets, tmp_path):
    run_to_end(sft_command(tiny_assets, tmp_path / "straight"), tmp_path)
    interrupted = tmp_path / "interrupted"
    kill_at_random_point(sft_command(tiny_assets, interrupted), tmp_path, random_checkpoint(interrupted, 10, 100), 0.5)
    assert not (interrupted / "stage_complete.json").exists()
    log = run_to_end(sft_command(tiny_assets, interrupted), tmp_path).stderr
    assert "Resuming from" in log
    assert_same_weights(tmp_path / "straight", interrupted)
    steps = [int(line.split('"step": ')[1].split(",")[0])
             for line in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and len(steps) == len(set(steps)), steps  # each logged step once, in order
    # wandb (offline here) continued the same run: every run folder it wrote carries the one run id
    run_ids = {path.name.rsplit("-", 1)[1] for path in (interrupted / "wandb").glob("offline-run-*")}
    assert len(list((interrupted / "wandb").glob("offline-run-*"))) == 2 and len(run_ids) == 1
    assert run_ids == {(interrupted / "wandb_run_id.txt").read_text().strip()}


def dpo_command(assets, pairs_file, output_dir):
    return command("dpo.py", "--model_name_or_path", assets["sft_model"], "--pairs_file", pairs_file,
                   "--output_dir", output_dir, "--sweep", "beta=0.1", "--max_steps", 40, "--save_steps", 5,
                   "--per_device_train_batch_size", 8, "--learning_rate", 1e-3, "--max_length", 32,
                   "--logging_steps", 5, "--report_to", "none", *TRAINING_ON_CPU)


def pairs_command(assets, output_dir):
    return command("preference_pairs.py", "--model_name_or_path", assets["sft_model"], "--classifier_name_or_path",
                   assets["classifier"], "--dataset_name", assets["data"], "--num_prompts", 60, "--heldout_prompts", 8,
                   "--label_noise", 0.25, "--max_new_tokens", 10, "--generation_batch_size", 4,
                   "--classifier_max_length", 64, "--output_dir", output_dir, "--report_to", "none")


@pytest.fixture(scope="module")
def straight_pairs(tiny_assets, tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs") / "straight"
    run_to_end(pairs_command(tiny_assets, out), out.parent)
    return out


def test_pair_making_killed_anywhere_resumes_to_identical_files(tiny_assets, straight_pairs, tmp_path):
    interrupted = tmp_path / "interrupted"
    completions = interrupted / "completions.jsonl"
    kill_at_random_point(pairs_command(tiny_assets, interrupted), tmp_path,
                         lambda: completions.is_file() and completions.stat().st_size > 0, 1.5)
    assert not (interrupted / "pairs.jsonl").exists()
    run_to_end(pairs_command(tiny_assets, interrupted), tmp_path)
    for name in ("completions.jsonl", "pairs.jsonl", "heldout_pairs.jsonl", "pairs_noise-0.25.jsonl"):
        assert (interrupted / name).read_bytes() == (straight_pairs / name).read_bytes(), name


@pytest.fixture(scope="module")
def straight_dpo(tiny_assets, straight_pairs):
    out = straight_pairs.parent / "dpo-straight"
    run_to_end(dpo_command(tiny_assets, straight_pairs / "pairs.jsonl", out), out.parent)
    return out


def test_dpo_killed_anywhere_resumes_to_the_same_weights(tiny_assets, straight_pairs, straight_dpo, tmp_path):
    interrupted = tmp_path / "dpo"
    run_dir = interrupted / "beta-0.1"
    cmd = dpo_command(tiny_assets, straight_pairs / "pairs.jsonl", interrupted)
    kill_at_random_point(cmd, tmp_path, random_checkpoint(run_dir, 5, 40), 0.5)
    assert not (run_dir / "stage_complete.json").exists()
    assert "Resuming from" in run_to_end(cmd, tmp_path).stderr
    assert_same_weights(straight_dpo / "beta-0.1", run_dir)


def eval_command(assets, sweep, pairs, output_dir):
    return command("eval.py", "--sft_model_path", assets["sft_model"], "--dpo_output_dir", sweep,
                   "--classifier_name_or_path", assets["classifier"], "--dataset_name", assets["data"],
                   "--num_prompts", 8, "--samples_per_prompt", 2, "--max_new_tokens", 10, "--classifier_max_length", 64,
                   "--heldout_pairs_file", pairs / "heldout_pairs.jsonl", "--best_of_n", 1, 4,
                   "--output_dir", output_dir, "--report_to", "none")


def test_eval_killed_anywhere_resumes_to_identical_results(tiny_assets, straight_pairs, straight_dpo, tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    run_to_end(eval_command(tiny_assets, straight_dpo, straight_pairs, straight), tmp_path)
    cmd = eval_command(tiny_assets, straight_dpo, straight_pairs, interrupted)
    kill_at_random_point(cmd, tmp_path, lambda: any((interrupted / "models").glob("*.json")), 0.3)
    evaluated = len(list((interrupted / "models").glob("*.json")))
    assert evaluated < len(list((straight / "models").glob("*.json")))  # the restart had models left to evaluate
    run_to_end(cmd, tmp_path)
    with (straight / "frontier.csv").open() as a, (interrupted / "frontier.csv").open() as b:
        assert list(csv.DictReader(a)) == list(csv.DictReader(b))
    for samples in (straight / "samples").glob("*.jsonl"):
        assert (interrupted / "samples" / samples.name).read_bytes() == samples.read_bytes()
