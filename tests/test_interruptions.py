"""Each of the four stages killed at any moment, then started again with the same command, ends with the same result
as a run that was never interrupted.

The kills with SIGKILL land at a time drawn uniformly over the whole of an uninterrupted run (start-up, steps,
checkpoint saves and the final save alike); the seed is printed in every failure message (replay a failure with
KILL_SEED=<seed>). The moments that matter most are also hit deterministically, in process: a checkpoint whose save
was cut off, the final save cut off between its files, and completions.jsonl cut at any byte.
"""

import csv
import json
import os
import random
import re
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO, TRAINING_ON_CPU
from tests.helpers import run_python, start_python

SEED = int(os.environ.get("KILL_SEED") or random.SystemRandom().randrange(1_000_000))
RANDOM = random.Random(SEED)
REPLAY = f"(replay with KILL_SEED={SEED})"


def command(script, *args):
    return [sys.executable, str(REPO / script), *map(str, args)]


def run_to_end(cmd, cwd) -> tuple[subprocess.CompletedProcess, float]:
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.monotonic()
    result = run_python(cmd[1:], cwd, environment)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, time.monotonic() - start


def kill_at_random_time(cmd, cwd, duration_s: float, output_dir) -> float:
    """Start `cmd` and SIGKILL it after a time drawn uniformly from [0, 0.9 x the uninterrupted run's duration]: any
    moment of the run, from the script's first line (the libraries are imported already: `tests/warm_python.py`) to
    the moments after the run is marked complete and before the process ends. A
    process that finished before its kill (the machine ran faster) is started again from scratch (`output_dir`
    removed) and killed earlier, so that the test always interrupts something."""
    import shutil

    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    delay = RANDOM.uniform(0, 0.9 * duration_s)
    for _ in range(4):
        shutil.rmtree(output_dir, ignore_errors=True)
        process = start_python(cmd[1:], cwd, environment, errors="replace")
        deadline = time.monotonic() + delay
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if process.poll() is None:
            process.kill()
            process.wait()
            print(f"killed after {delay:.2f} s of a {duration_s:.1f} s run {REPLAY}")
            return delay
        stderr = process.wait().stderr
        assert process.returncode == 0, f"{stderr[-2000:]} {REPLAY}"
        delay /= 4
    pytest.fail(f"the run always finished before its kill {REPLAY}")


def assert_same_weights(folder_a, folder_b):
    """The same weights as an uninterrupted run of the same command on the same machine. Bit-identity is the point of
    a resume (same batches, same RNG states restored): the 1e-6 is slack far below what a wrong resume does (one step
    replayed or skipped moves weights by ~1e-3 at these learning rates)."""
    a, b = load_file(folder_a / "model.safetensors"), load_file(folder_b / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=f"{name} {REPLAY}")


def logged_steps(run_dir):
    """The steps of metrics.jsonl's training lines (the end-of-training summary line left out)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [record["step"] for record in records if "loss" in record]


def sft_command(assets, output_dir):
    return command("sft.py", "--model_name_or_path", assets["policy_init"], "--from_scratch", "true",
                   "--dataset_name", assets["data"],
                   "--clean_reviews", "true", "--output_dir", output_dir, "--max_steps", 60,
                   "--save_steps", 10,
                   "--per_device_train_batch_size", 16, "--learning_rate", 5e-3, "--max_length", 64,
                   "--logging_steps", 3, "--report_to", "wandb", *TRAINING_ON_CPU)


def test_sft_killed_anywhere_resumes_to_the_same_weights(tiny_assets, tmp_path):
    _, duration = run_to_end(sft_command(tiny_assets, tmp_path / "straight"), tmp_path)
    interrupted = tmp_path / "interrupted"
    kill_at_random_time(sft_command(tiny_assets, interrupted), tmp_path, duration, interrupted)
    run_to_end(sft_command(tiny_assets, interrupted), tmp_path)
    assert_same_weights(tmp_path / "straight", interrupted)
    steps = logged_steps(interrupted)
    assert steps == sorted(steps) and len(steps) == len(set(steps)), f"{steps} {REPLAY}"  # each step once, in order
    # wandb (offline here) continued the same run: every run folder it wrote carries the one run id
    # offline-run-<date>_<time>-<id>, and -1, -2, ... after it where a resumed run starts within the same second
    run_ids = {re.fullmatch(r"offline-run-\d{8}_\d{6}-(\w+)(-\d+)?", path.name)[1]
               for path in (interrupted / "wandb").glob("offline-run-*")}
    assert run_ids == {(interrupted / "wandb_run_id.txt").read_text().strip()}, REPLAY


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


PAIR_FILES = ("completions.jsonl", "pairs.jsonl", "heldout_pairs.jsonl", "pairs_noise-0.25.jsonl")


@pytest.fixture(scope="module")
def straight_pairs(tiny_assets, tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs") / "straight"
    _, duration = run_to_end(pairs_command(tiny_assets, out), out.parent)
    return out, duration


def test_pair_making_killed_anywhere_resumes_to_identical_files(tiny_assets, straight_pairs, tmp_path):
    straight, duration = straight_pairs
    interrupted = tmp_path / "interrupted"
    kill_at_random_time(pairs_command(tiny_assets, interrupted), tmp_path, duration, interrupted)
    run_to_end(pairs_command(tiny_assets, interrupted), tmp_path)
    for name in PAIR_FILES:  # exact on purpose: a resume on the same machine rewrites the same bytes
        assert (interrupted / name).read_bytes() == (straight / name).read_bytes(), f"{name} {REPLAY}"


def test_a_completions_log_cut_at_any_byte_resumes_to_identical_files(tiny_assets, straight_pairs, tmp_path):
    """A kill while a slice of prompts is being appended leaves completions.jsonl cut anywhere, even inside a line or
    a character: the whole slices before the cut are kept, the rest is sampled again, to the same bytes."""
    import shutil

    straight, _ = straight_pairs
    log = (straight / "completions.jsonl").read_bytes()
    for cut in (RANDOM.randrange(1, len(log)), RANDOM.randrange(1, len(log))):
        copy = tmp_path / f"cut-{cut}"
        copy.mkdir()
        shutil.copy(straight / "run_config.json", copy)
        (copy / "completions.jsonl").write_bytes(log[:cut])
        run_to_end(pairs_command(tiny_assets, copy), tmp_path)
        for name in PAIR_FILES:
            assert (copy / name).read_bytes() == (straight / name).read_bytes(), f"{name}, cut at byte {cut} {REPLAY}"


@pytest.fixture(scope="module")
def straight_dpo(tiny_assets, straight_pairs):
    out = straight_pairs[0].parent / "dpo-straight"
    _, duration = run_to_end(dpo_command(tiny_assets, straight_pairs[0] / "pairs.jsonl", out), out.parent)
    return out, duration


def test_dpo_killed_anywhere_resumes_to_the_same_weights(tiny_assets, straight_pairs, straight_dpo, tmp_path):
    straight, duration = straight_dpo
    interrupted = tmp_path / "dpo"
    cmd = dpo_command(tiny_assets, straight_pairs[0] / "pairs.jsonl", interrupted)
    kill_at_random_time(cmd, tmp_path, duration, interrupted)
    run_to_end(cmd, tmp_path)
    assert_same_weights(straight / "beta-0.1", interrupted / "beta-0.1")


def dpo_args(assets, pairs_file, output_dir):
    return [str(arg) for arg in dpo_command(assets, pairs_file, output_dir)[2:]]


def run_dpo_in_process(args):
    import dpo
    from dpo_pipeline.cli import run_script

    run_script(dpo.main, dpo.dataclass_types(), args)


def test_a_checkpoint_whose_save_was_cut_off_is_removed_and_the_run_resumes(tiny_assets, straight_pairs, straight_dpo,
                                                                            tmp_path, monkeypatch, capfd):
    """Stopped inside the save of checkpoint-15, after its weights and optimizer state and before trainer_state.json
    (the Trainer writes it last): resuming removes checkpoint-15 and continues from checkpoint-10, which still has
    its optimizer state (it is cut down to weights only once a newer checkpoint is complete)."""
    from transformers import TrainerState

    out = tmp_path / "dpo"
    args = dpo_args(tiny_assets, straight_pairs[0] / "pairs.jsonl", out)
    save_to_json = TrainerState.save_to_json

    def stop_inside_the_save_of_checkpoint_15(self, json_path):
        if os.path.basename(os.path.dirname(json_path)) == "checkpoint-15":
            raise KeyboardInterrupt
        return save_to_json(self, json_path)

    with monkeypatch.context() as patch:
        patch.setattr(TrainerState, "save_to_json", stop_inside_the_save_of_checkpoint_15)
        with pytest.raises(SystemExit):
            run_dpo_in_process(args)
    run_dir = out / "beta-0.1"
    assert (run_dir / "checkpoint-15" / "model.safetensors").is_file()
    assert not (run_dir / "checkpoint-15" / "trainer_state.json").exists()
    assert (run_dir / "checkpoint-10" / "optimizer.pt").is_file()
    assert not (run_dir / "checkpoint-5" / "optimizer.pt").exists()
    capfd.readouterr()
    run_dpo_in_process(args)
    log = capfd.readouterr().err
    assert f"Removing {run_dir / 'checkpoint-15'}: its save was interrupted" in log
    assert f"Resuming from {run_dir / 'checkpoint-10'}" in log
    assert_same_weights(straight_dpo[0] / "beta-0.1", run_dir)


def test_a_final_save_cut_off_between_its_files_is_done_again(tiny_assets, straight_pairs, straight_dpo, tmp_path,
                                                              monkeypatch):
    """Stopped while the final weights are moved from their staging folder into the run folder, one file in place and
    the others not: the same command finishes the run (from its last checkpoint, at the last step) with the same
    weights, and leaves no staging folder behind."""
    import dpo_pipeline.training_run as training

    out = tmp_path / "dpo"
    args = dpo_args(tiny_assets, straight_pairs[0] / "pairs.jsonl", out)
    replace, moved = training.os.replace, []

    def stop_after_the_first_move(source, target):
        if ".final-model.tmp" in str(source):
            if moved:
                raise KeyboardInterrupt
            moved.append(target)
        return replace(source, target)

    with monkeypatch.context() as patch:
        patch.setattr(training.os, "replace", stop_after_the_first_move)
        with pytest.raises(SystemExit):
            run_dpo_in_process(args)
    run_dir = out / "beta-0.1"
    assert len(moved) == 1 and (run_dir / ".final-model.tmp").is_dir()
    assert not (run_dir / "stage_complete.json").exists()
    run_dpo_in_process(args)
    assert (run_dir / "stage_complete.json").is_file() and not (run_dir / ".final-model.tmp").exists()
    assert_same_weights(straight_dpo[0] / "beta-0.1", run_dir)


def eval_command(assets, sweep, pairs, output_dir):
    return command("eval.py", "--sft_model_path", assets["sft_model"], "--dpo_output_dir", sweep,
                   "--classifier_name_or_path", assets["classifier"], "--dataset_name", assets["data"],
                   "--num_prompts", 8, "--samples_per_prompt", 2, "--max_new_tokens", 10, "--classifier_max_length", 64,
                   "--heldout_pairs_file", pairs / "heldout_pairs.jsonl", "--best_of_n", 1, 4,
                   "--output_dir", output_dir, "--report_to", "none")


def test_eval_killed_anywhere_resumes_to_identical_results(tiny_assets, straight_pairs, straight_dpo, tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    sweep, pairs = straight_dpo[0], straight_pairs[0]
    _, duration = run_to_end(eval_command(tiny_assets, sweep, pairs, straight), tmp_path)
    cmd = eval_command(tiny_assets, sweep, pairs, interrupted)
    kill_at_random_time(cmd, tmp_path, duration, interrupted)
    run_to_end(cmd, tmp_path)
    # Exact on purpose: the same command on the same machine, resumed, measures the same samples to the same bits
    with (straight / "frontier.csv").open() as a, (interrupted / "frontier.csv").open() as b:
        assert list(csv.DictReader(a)) == list(csv.DictReader(b)), REPLAY
    for samples in (straight / "samples").glob("*.jsonl"):
        assert (interrupted / "samples" / samples.name).read_bytes() == samples.read_bytes(), f"{samples} {REPLAY}"
