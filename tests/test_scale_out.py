"""Every stage under a launcher with 2 processes (torchrun, gloo on the CPU), as users who outgrow one GPU run them:
training writes its folders once, with one wandb run per sweep entry, and keeps the optimizer batch;
sampling and evaluation share their work out and end with the files of a one-process run."""

import csv
import json

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO, TRAINING_ON_CPU
from tests.helpers import launch


def in_process(script_name, *args):
    import importlib

    from dpo_pipeline.cli import run_script

    script = importlib.import_module(script_name)
    run_script(script.main, script.dataclass_types(), [str(arg) for arg in args])


def read_rows(path):
    with path.open() as handle:
        return {row["name"]: row for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def one_process(tiny_assets, tmp_path_factory):
    """The same pairs, DPO sweep and evaluation made by one process, to compare with."""
    root = tmp_path_factory.mktemp("one-process")
    a = tiny_assets
    pairs_args = ["--model_name_or_path", a["sft_model"], "--classifier_name_or_path", a["classifier"],
                  "--dataset_name", a["data"], "--num_prompts", 24, "--heldout_prompts", 6, "--max_new_tokens", 8,
                  "--generation_batch_size", 8, "--classifier_max_length", 64, "--report_to", "none"]
    in_process("preference_pairs", *pairs_args, "--output_dir", root / "pairs")
    dpo_args = ["--model_name_or_path", a["sft_model"], "--pairs_file", root / "pairs" / "pairs.jsonl",
                "--sweep", "beta=0.1", "beta=1.0", "--max_steps", 4, "--save_steps", 2,
                "--per_device_train_batch_size", 8, "--global_batch_size", 16, "--learning_rate", 1e-3,
                "--max_length", 32, "--logging_steps", 1, "--eval_pairs_file", root / "pairs" / "heldout_pairs.jsonl",
                "--eval_strategy", "steps", "--eval_steps", 2, *TRAINING_ON_CPU]
    in_process("dpo", *dpo_args, "--output_dir", root / "dpo", "--report_to", "none")
    eval_args = ["--sft_model_path", a["sft_model"], "--dpo_output_dir", root / "dpo",
                 "--classifier_name_or_path", a["classifier"], "--dataset_name", a["data"], "--num_prompts", 6,
                 "--samples_per_prompt", 2, "--max_new_tokens", 8, "--classifier_max_length", 64,
                 "--heldout_pairs_file", root / "pairs" / "heldout_pairs.jsonl", "--best_of_n", 1, 4,
                 "--report_to", "none"]
    in_process("eval", *eval_args, "--output_dir", root / "eval")
    return {"root": root, "pairs_args": pairs_args, "dpo_args": dpo_args, "eval_args": eval_args}


def test_pair_making_on_two_processes_writes_the_same_bytes(one_process, tmp_path):
    """Under `accelerate launch` with configs/accelerate/ddp.yaml: each process samples its slices of prompts."""
    launch("preference_pairs.py", *one_process["pairs_args"], "--output_dir", tmp_path / "pairs", cwd=tmp_path,
           launcher="accelerate")
    # Exact on purpose, on one machine: each batch's samples are seeded by its position and sampling is batch by
    # batch, so splitting the prompts between processes must not change a byte (a different CPU may; not tested).
    for name in ("completions.jsonl", "pairs.jsonl", "heldout_pairs.jsonl"):
        assert (tmp_path / "pairs" / name).read_bytes() == (one_process["root"] / "pairs" / name).read_bytes(), name


def test_a_dpo_sweep_on_two_processes_trains_each_entry_once_with_the_same_batch(one_process, tmp_path):
    """Both entries finish (the final save used to crash on the second process), each with one wandb run and one
    metrics line per step, and the held-out pairs evaluated at every checkpoint (accuracy and margin curves for the
    dashboards); with the optimizer batch held at 16 pairs (8 per process here, 8 x 2 accumulated on one process)
    the weights are those of the one-process run."""
    out = tmp_path / "dpo"
    result = launch("dpo.py", *one_process["dpo_args"], "--output_dir", out, "--report_to", "wandb", cwd=tmp_path)
    assert result.stderr.count("[beta-1.0] saved to") == 1  # logged once, by the main process
    for entry in ("beta-0.1", "beta-1.0"):
        run_dir = out / entry
        assert json.loads((run_dir / "stage_complete.json").read_text())["summary"]["global_step"] == 4
        assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
        steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
                 if "loss" in json.loads(line)]
        assert steps == [1, 2, 3, 4]
        evaluations = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
                       if "eval_rewards/accuracies" in json.loads(line)]
        assert [row["step"] for row in evaluations] == [2, 4]
        assert not (run_dir / ".final-model.tmp").exists()
        two, one = load_file(run_dir / "model.safetensors"), load_file(one_process["root"] / "dpo" / entry /
                                                                         "model.safetensors")
        for name, tensor in one.items():
            torch.testing.assert_close(two[name], tensor, rtol=0, atol=1e-5, msg=name)


def test_eval_on_two_processes_gives_the_one_process_frontier(one_process, tmp_path):
    launch("eval.py", *one_process["eval_args"], "--output_dir", tmp_path / "eval", cwd=tmp_path)
    two, one = read_rows(tmp_path / "eval" / "frontier.csv"), read_rows(one_process["root"] / "eval" / "frontier.csv")
    assert two.keys() == one.keys() and len(one) == 7  # SFT, 2 runs x 2 checkpoints, best-of-1 and 4
    for name, row in one.items():
        for key in ("reward", "kl", "heldout_accuracy", "win_rate"):
            assert two[name][key] == row[key], (name, key)


def test_sft_on_two_processes_and_a_batch_that_cannot_be_kept(tiny_assets, tmp_path):
    """SFT finishes once; a launch whose processes cannot keep the optimizer batch is refused with one line (said
    once, not once per process)."""
    args = ["--model_name_or_path", tiny_assets["sft_model"], "--dataset_name", tiny_assets["data"],
            "--clean_reviews", "true",
            "--max_steps", 2, "--save_steps", 1, "--per_device_train_batch_size", 4, "--max_length", 64,
            "--report_to", "wandb", *TRAINING_ON_CPU]
    launch("sft.py", *args, "--global_batch_size", 8, "--output_dir", tmp_path / "sft", cwd=tmp_path)
    assert (tmp_path / "sft" / "stage_complete.json").is_file()
    assert len(list((tmp_path / "sft" / "wandb").glob("offline-run-*"))) == 1
    refused = launch("sft.py", *args, "--global_batch_size", 12, "--output_dir", tmp_path / "refused", cwd=tmp_path,
                     check=False)
    assert refused.returncode != 0
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
    assert errors, refused.stderr[-3000:]
    assert errors == ["error: global_batch_size 12 is not a multiple of per_device_train_batch_size 4 x 2 processes: "
                      "choose a per_device_train_batch_size that divides it by the number of processes"]
    assert not (tmp_path / "refused").exists()


@pytest.mark.parametrize("name, kind", [("ddp", "MULTI_GPU"), ("zero2", "DEEPSPEED"), ("zero3", "DEEPSPEED"),
                                        ("fsdp", "FSDP")])
def test_the_accelerate_configs_load(name, kind):
    """accelerate reads each config as `accelerate launch --config_file` does (DeepSpeed and FSDP runs need GPUs)."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(REPO / "configs" / "accelerate" / f"{name}.yaml"))
    # DDP runs on CPUs too: it leaves the precision to the run's config; the others need GPUs, as bf16 does
    assert str(config.distributed_type).endswith(kind) and config.mixed_precision == ("no" if name == "ddp" else "bf16")
    if name == "zero3":
        assert config.deepspeed_config["zero_stage"] == 3 and config.deepspeed_config["zero3_save_16bit_model"]
    if name == "fsdp":
        assert config.fsdp_config["fsdp_version"] == 2
        assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
