"""The four command lines chained, as a user runs them, on tiny models; and one-line errors for bad input."""

import csv
import json
import subprocess

import pytest

from tests.conftest import REPO, TRAINING_ON_CPU
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


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    for fragment in fragments:
        assert fragment in last, last


UNREACHABLE_HUB = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens on port 9


def run_in_process(script_name, *args, capsys):
    """The script's entry point in this process (cheaper than a new interpreter): its exit code and stderr."""
    import importlib

    from dpo_pipeline.cli import run_script

    script = importlib.import_module(script_name)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        run_script(script.main, script.dataclass_types(), [str(arg) for arg in args])
    return subprocess.CompletedProcess(args, stopped.value.code, "", capsys.readouterr().err)


def test_a_full_scale_config_fails_with_one_line_when_the_hub_is_unreachable(tmp_path):
    """As a user types it: no traceback reaches the terminal, and nothing is half-made."""
    result = run_command("sft.py", "--config", REPO / "configs/gpt2-large/sft.yaml", cwd=tmp_path,
                         env=UNREACHABLE_HUB, check=False)
    assert_one_line_error(result, "cannot reach the Hugging Face Hub")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("script, config", [
    ("preference_pairs", "gpt2-large/pairs.yaml"), ("eval", "gpt2-large/eval.yaml"),
    ("preference_pairs", "paper/pairs.yaml"), ("eval", "paper/eval.yaml"),
    ("dpo", "ultrafeedback/dpo_full_8x80gb.yaml"), ("eval", "ultrafeedback/eval.yaml"),
])
def test_every_full_scale_config_fails_with_one_line_when_the_hub_is_unreachable(script, config, tmp_path,
                                                                               monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for key, value in UNREACHABLE_HUB.items():
        monkeypatch.setenv(key, value)
    result = run_in_process(script, "--config", REPO / "configs" / config, capsys=capsys)
    assert_one_line_error(result, "cannot reach the Hugging Face Hub")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "generations").exists()  # nothing half-made


def test_the_ultrafeedback_qlora_config_fails_with_one_line_offline(tmp_path):
    """As a user types it on a machine without the hub, bitsandbytes or a GPU: one line, whichever is missing first."""
    result = run_command("dpo.py", "--config", REPO / "configs/ultrafeedback/dpo_lora_24gb.yaml", cwd=tmp_path,
                         env=UNREACHABLE_HUB, check=False)
    assert_one_line_error(result, "")
    assert any(reason in result.stderr for reason in ("load_in_4bit needs", "cannot reach the Hugging Face Hub"))
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("script", ["reward_model", "rl"])
def test_the_full_scale_rl_configs_fail_offline_with_one_line(script, tmp_path, monkeypatch, capsys):
    """Run before the SFT model and the pairs exist, with the hub unreachable: one line naming what is missing."""
    monkeypatch.chdir(tmp_path)
    for key, value in UNREACHABLE_HUB.items():
        monkeypatch.setenv(key, value)
    for scale in ("gpt2-large", "paper"):
        result = run_in_process(script, "--config", REPO / "configs" / scale / f"{script}.yaml", capsys=capsys)
        assert_one_line_error(result, "does not exist")
    assert not any(tmp_path.iterdir())  # nothing half-made


def test_dpo_before_its_inputs_exist_fails_with_one_line(tmp_path, monkeypatch, capsys):
    """Step 3 run before steps 1 and 2: the first missing input is named (the SFT model, then the pairs)."""
    monkeypatch.chdir(tmp_path)
    result = run_in_process("dpo", "--config", REPO / "configs/gpt2-large/dpo.yaml", capsys=capsys)
    assert_one_line_error(result, "model_name_or_path", "runs/gpt2-large/sft", "does not exist")
    (tmp_path / "runs/gpt2-large/sft").mkdir(parents=True)
    result = run_in_process("dpo", "--config", REPO / "configs/gpt2-large/dpo.yaml", capsys=capsys)
    assert_one_line_error(result, "pairs_file", "does not exist")


def test_bad_config_key_and_bad_value_fail_with_one_line(tmp_path, capsys):
    config = tmp_path / "dpo.yaml"
    config.write_text((REPO / "configs/tiny/dpo.yaml").read_text() + "betta: 0.5\n")
    assert_one_line_error(run_in_process("dpo", "--config", config, capsys=capsys), "betta")
    assert_one_line_error(run_in_process("preference_pairs", "--config", REPO / "configs/tiny/pairs.yaml",
                                         "--completions_per_prompt", "1", capsys=capsys), "completions_per_prompt")
