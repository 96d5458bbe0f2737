"""The four command lines chained, as a user runs them, on tiny models."""

import csv
import json

from tests.conftest import TRAINING_ON_CPU
from tests.helpers import run_command


def test_four_scripts_chain_from_sft_to_frontier(tiny_assets, tmp_path):
    a = tiny_assets
    run_command("sft.py", "--model_name_or_path", a["policy_init"], "--from_scratch", "true",
                "--dataset_name", a["data"], "--clean_reviews", "true", "--output_dir", "runs/sft", "--max_steps", 30,
                "--per_device_train_batch_size", 16, "--learning_rate", 5e-3, "--max_length", 64,
                "--report_to", "none", *TRAINING_ON_CPU, cwd=tmp_path)
    run_command("preference_pairs.py", "--model_name_or_path", "runs/sft", "--classifier_name_or_path",
                a["classifier"], "--dataset_name", a["data"], "--num_prompts", 16, "--max_new_tokens", 10,
                "--classifier_max_length", 64, "--output_dir", "generations/tiny", "--report_to", "none",
                cwd=tmp_path)
    run_command("dpo.py", "--model_name_or_path", "runs/sft", "--pairs_file", "generations/tiny/pairs.jsonl",
                "--output_dir", "runs/dpo", "--sweep", "beta=0.1", "beta=1.0", "--max_steps", 4, "--save_steps", 2,
                "--per_device_train_batch_size", 8, "--learning_rate", 1e-3, "--max_length", 32,
                "--report_to", "wandb", "--wandb_project", "test-project", "--sweep_name", "test-sweep-group",
                *TRAINING_ON_CPU,
                cwd=tmp_path, env={"WANDB_API_KEY": None, "WANDB_MODE": None, "NETRC": str(tmp_path / "no-netrc")})
    run_command("eval.py", "--sft_model_path", "runs/sft", "--dpo_output_dir", "runs/dpo",
                "--classifier_name_or_path", a["classifier"], "--dataset_name", a["data"], "--num_prompts", 4,
                "--samples_per_prompt", 2, "--max_new_tokens", 10, "--classifier_max_length", 64,
                "--output_dir", "runs/eval", "--report_to", "none", cwd=tmp_path)

    pairs = [json.loads(line) for line in (tmp_path / "generations/tiny/pairs.jsonl").read_text().splitlines()]
    assert pairs and all(pair["chosen_reward"] > pair["rejected_reward"] for pair in pairs)
    for beta in ("0.1", "1.0"):
        run_dir = tmp_path / f"runs/dpo/beta-{beta}"
        # wandb ran offline without an account, its files beside the run, one wandb run per sweep entry, all of
        # them in the sweep's group (recorded in the run's .wandb file, which `wandb sync` uploads)
        offline_runs = list((run_dir / "wandb").glob("offline-run-*"))
        assert len(offline_runs) == 1
        run_file = next(offline_runs[0].glob("run-*.wandb")).read_bytes()
        group = b"test-sweep-group"
        # wandb's RunRecord: run_group (field 6, tag 0x32) then job_type (field 7, tag 0x3a), each length-prefixed
        assert b"\x32" + bytes([len(group)]) + group + b"\x3a\x03dpo" in run_file
        assert f"test-sweep-group/beta-{beta}".encode() in run_file  # the run's name
        assert (run_dir / "metrics.jsonl").is_file()
    with (tmp_path / "runs/eval/frontier.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["name"] for row in rows] == ["sft", "beta-0.1/step-2", "beta-0.1/step-4", "beta-1.0/step-2",
                                             "beta-1.0/step-4"]
    assert (tmp_path / "runs/eval/frontier.png").is_file()
