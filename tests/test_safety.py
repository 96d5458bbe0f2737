"""Training that goes wrong stops cleanly; safe defaults: no remote code, safetensors, no secret in any file."""

import json
import os
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import load_file

import dpo
import sft
from dpo_pipeline.cli import run_script
from dpo_pipeline.errors import EXIT_OUT_OF_MEMORY
from dpo_pipeline.runs import redact_command, redact_secrets
from tests.conftest import TRAINING_ON_CPU


def run(script, *args):
    run_script(script.main, script.dataclass_types(), [str(arg) for arg in args])


def test_a_diverging_run_stops_with_one_line_and_keeps_its_good_checkpoints(tiny_assets, tmp_path, monkeypatch,
                                                                            capsys):
    """The weights turn NaN at step 10 (as after an exploding update): training stops at once, exit code 3, and
    the checkpoints on disk (steps 4 and 8) are finite ones to resume from."""
    from transformers import Trainer

    original_step = Trainer.training_step

    def diverging_step(self, model, inputs, *args, **kwargs):
        if self.state.global_step == 9:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return original_step(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", diverging_step)
    out = tmp_path / "sft"
    with pytest.raises(SystemExit) as exit_info:
        run(sft, "--model_name_or_path", tiny_assets["sft_model"], "--dataset_name", tiny_assets["data"],
            "--clean_reviews", "true",
            "--output_dir", out, "--max_steps", 20, "--save_steps", 4, "--logging_steps", 1,
            "--per_device_train_batch_size", 8, "--max_length", 64, "--report_to", "none", *TRAINING_ON_CPU)
    assert exit_info.value.code == 3
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "diverged at step 10" in errors[0] and "checkpoint-8, is kept" in errors[0]
    assert sorted(path.name for path in out.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-8"]
    for checkpoint in out.glob("checkpoint-*"):
        assert all(torch.isfinite(weight).all() for weight in load_file(checkpoint / "model.safetensors").values())
    assert not (out / "stage_complete.json").exists() and not (out / "model.safetensors").exists()


@dataclass
class NoSettings:
    verbose: bool = False


def test_running_out_of_gpu_memory_is_one_line_naming_what_to_change(capsys):
    def main(_):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
                                     "23.55 GiB of which 1.02 GiB is free.\nSee documentation for Memory Management")

    with pytest.raises(SystemExit) as stopped:
        run_script(main, (NoSettings,), [])
    assert stopped.value.code == EXIT_OUT_OF_MEMORY
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: out of memory (CUDA out of memory. Tried to allocate 2.00")
    assert "gradient_accumulation_steps" in lines[0] and "_24gb" in lines[0] and "kept" in lines[0]


def test_other_errors_are_not_taken_for_running_out_of_memory():
    def main(_):
        raise RuntimeError("a bug: its traceback must stay")

    with pytest.raises(RuntimeError, match="a bug"):
        run_script(main, (NoSettings,), [])


def test_no_secret_reaches_any_file_a_real_command_line_writes(tiny_assets, tmp_path):
    """dpo.py as users run it, with a canary token on the command line and wandb (offline) recording the run: the
    token is in no file under the output folder or wandb's, the binary run-*.wandb file included (wandb records the
    command line there, and `wandb sync` would upload it). (An in-process run would record pytest's command line and
    hide a leak.)"""
    import subprocess
    import sys

    from tests.conftest import REPO

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "The film is", "chosen": " great.", "rejected": " dull."}) + "\n")
    out = tmp_path / "dpo"
    canary = "hf_CANARYcanary0123456789"
    token = ["--hub_token", canary]  # the --hub_token=... form: test_redaction_hides_credentials_but_not_token_counts
    command = [sys.executable, str(REPO / "dpo.py"), "--model_name_or_path", str(tiny_assets["sft_model"]),
               "--pairs_file", str(pairs), "--output_dir", str(out), "--sweep", "beta=0.1", "--max_steps", "2",
               "--save_steps", "1", "--max_length", "32", *token, "--report_to", "wandb", *TRAINING_ON_CPU]
    environment = {key: value for key, value in os.environ.items() if key != "HF_TOKEN"}
    result = subprocess.run(command, cwd=tmp_path, env={**environment, "PYTHONPATH": str(REPO),
                                                        "WANDB_DIR": str(tmp_path / "wandb-dir")},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert any(path.suffix == ".wandb" for path in files) and any(path.name == "run_config.json" for path in files)
    for path in files:
        assert canary.encode() not in path.read_bytes(), path
    assert canary not in result.stdout + result.stderr
    assert list(out.rglob("*.safetensors")) and not list(out.rglob("pytorch_model*.bin"))


def test_redaction_hides_credentials_but_not_token_counts():
    assert redact_command(["dpo.py", "--hub_token", "x", "--max_new_tokens", "8", "--wandb_api_key=y"]) == [
        "dpo.py", "--hub_token", "<redacted>", "--max_new_tokens", "8", "--wandb_api_key=<redacted>"]
    assert redact_secrets({"a": {"hub_token": "x", "eos_token": "</s>", "password": None}, "list": [{"api_key": 1}]}) \
        == {"a": {"hub_token": "<redacted>", "eos_token": "</s>", "password": None},
            "list": [{"api_key": "<redacted>"}]}


def test_remote_code_is_off_unless_asked_for():
    import eval as eval_script
    import preference_pairs
    from dpo_pipeline.cli import parse_config
    from tests.conftest import REPO

    for script, config in ((sft, "sft"), (dpo, "dpo"), (preference_pairs, "pairs"), (eval_script, "eval")):
        for scale in ("tiny", "gpt2-large"):
            parsed = parse_config(script.dataclass_types(), ["--config", str(REPO / f"configs/{scale}/{config}.yaml")])
            flags = [getattr(c, "trust_remote_code") for c in parsed if hasattr(c, "trust_remote_code")]
            assert flags and not any(flags), (scale, config)


def nan_weights_at_step(monkeypatch, step: int) -> None:
    """The weights turn NaN in training step `step` (as after an exploding update)."""
    from transformers import Trainer

    original_step = Trainer.training_step

    def diverging_step(self, model, inputs, *args, **kwargs):
        if self.state.global_step == step - 1:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return original_step(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", diverging_step)


def test_non_finite_weights_stop_training_before_a_checkpoint_is_saved(tiny_assets, tmp_path, monkeypatch, capsys):
    """No loss is logged between the step that breaks the weights and the next save (logging every 100 steps):
    the save of checkpoint-12 is refused, not written from NaN weights."""
    nan_weights_at_step(monkeypatch, 10)
    out = tmp_path / "sft"
    with pytest.raises(SystemExit) as exit_info:
        run(sft, "--model_name_or_path", tiny_assets["sft_model"], "--dataset_name", tiny_assets["data"],
            "--clean_reviews", "true",
            "--output_dir", out, "--max_steps", 20, "--save_steps", 6, "--logging_steps", 100,
            "--per_device_train_batch_size", 8, "--max_length", 64, "--report_to", "none", *TRAINING_ON_CPU)
    assert exit_info.value.code == 3
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "diverged at step 12" in errors[0] and "weights are NaN or infinite" in errors[0]
    assert "checkpoint-6, is kept" in errors[0]
    assert sorted(path.name for path in out.glob("checkpoint-*")) == ["checkpoint-6"]


def test_a_diverging_dpo_run_stops_with_one_line_and_keeps_its_good_checkpoint(tiny_assets, tmp_path, monkeypatch,
                                                                              capsys):
    nan_weights_at_step(monkeypatch, 5)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": "The film is", "chosen": f" great {i}.", "rejected": f" dull {i}."})
                             + "\n" for i in range(40)))
    out = tmp_path / "dpo"
    with pytest.raises(SystemExit) as exit_info:
        run(dpo, "--model_name_or_path", tiny_assets["sft_model"], "--pairs_file", pairs, "--output_dir", out,
            "--sweep", "beta=0.1", "--max_steps", 10, "--save_steps", 3, "--logging_steps", 1,
            "--per_device_train_batch_size", 4, "--max_length", 32, "--report_to", "none", *TRAINING_ON_CPU)
    assert exit_info.value.code == 3
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "diverged at step 5" in errors[0] and "checkpoint-3, is kept" in errors[0]
    run_dir = out / "beta-0.1"
    assert sorted(path.name for path in run_dir.glob("checkpoint-*")) == ["checkpoint-3"]
    assert not (run_dir / "stage_complete.json").exists() and not (run_dir / "model.safetensors").exists()


def test_running_out_of_memory_keeps_the_checkpoints_and_the_same_command_resumes(tiny_assets, tmp_path, monkeypatch,
                                                                                 capsys):
    """An allocation fails at step 7: one line, exit code 4, checkpoint-6 kept with its optimizer state; the same
    command resumes from it and ends with the weights of a run that never stopped."""
    from transformers import Trainer

    args = ["--model_name_or_path", tiny_assets["sft_model"], "--dataset_name", tiny_assets["data"],
            "--clean_reviews", "true",
            "--max_steps", 10,
            "--save_steps", 3, "--logging_steps", 1, "--per_device_train_batch_size", 8, "--max_length", 64,
            "--report_to", "none", *TRAINING_ON_CPU]
    run(sft, *args, "--output_dir", tmp_path / "straight")
    original_step = Trainer.training_step

    def out_of_memory_at_step_7(self, *step_args, **kwargs):
        if self.state.global_step == 6:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB.")
        return original_step(self, *step_args, **kwargs)

    out = tmp_path / "sft"
    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "training_step", out_of_memory_at_step_7)
        with pytest.raises(SystemExit) as exit_info:
            run(sft, *args, "--output_dir", out)
    assert exit_info.value.code == EXIT_OUT_OF_MEMORY
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")][0].startswith(
        "error: out of memory")
    assert (out / "checkpoint-6" / "optimizer.pt").is_file() and not (out / "stage_complete.json").exists()
    run(sft, *args, "--output_dir", out)
    resumed, straight = load_file(out / "model.safetensors"), load_file(tmp_path / "straight" / "model.safetensors")
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6)
