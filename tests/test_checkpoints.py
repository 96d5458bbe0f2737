"""Disk: what a training run writes, estimated before it starts; a run that would not fit stops with one line."""

import json
from types import SimpleNamespace

import pytest

from dpo_pipeline.checkpoints import DiskEstimate, estimate_training_disk, human_bytes, training_steps
from tests.conftest import TRAINING_ON_CPU


def settings(**changes):
    base = dict(max_steps=-1, num_train_epochs=1.0, per_device_train_batch_size=16, gradient_accumulation_steps=4,
                world_size=1, save_strategy="steps", save_steps=200, save_total_limit=None, optim="rmsprop")
    return SimpleNamespace(**{**base, **changes})


def test_training_steps_by_hand():
    """150,000 pairs (the paper's 25,000 prompts x 6) at 16 per device x 4 accumulated: ceil(150000/16) = 9375
    micro-batches, ceil(9375 / 4) = 2344 steps; on 2 processes 4688 micro-batches per process, 1172 steps."""
    assert training_steps(150_000, settings()) == 2344
    assert training_steps(150_000, settings(world_size=2)) == 1172
    assert training_steps(150_000, settings(num_train_epochs=2.0)) == 4688
    assert training_steps(10, settings(max_steps=7)) == 7


def test_disk_estimate_of_the_paper_dpo_run_by_hand():
    """GPT-2 Large (774M parameters), float32 weights (4 bytes), RMSprop (one float32 state per parameter), 2344
    steps saved every 200: 12 weight-only checkpoints of 3.10 GB, the latest one's optimizer state of 3.10 GB twice
    (a new checkpoint is complete before the old one is cut down), the final weights 3.10 GB:
    (12 + 2 + 1) x 3.096 GB = 46.4 GB, where every checkpoint keeping its optimizer state would take
    12 x 6.19 + 3.10 = 77.4 GB."""
    parameters = 774_030_080
    estimate = estimate_training_disk(parameters, parameters, 4, 2344, settings())
    assert estimate == DiskEstimate(checkpoints=12, checkpoint_weights=parameters * 4, resume_state=parameters * 4,
                                    final_weights=parameters * 4)
    assert estimate.total == 15 * parameters * 4 and human_bytes(estimate.total) == "46.4 GB"
    adamw = estimate_training_disk(parameters, parameters, 4, 2344, settings(optim="adamw_torch_fused"))
    assert adamw.resume_state == 8 * parameters  # two float32 states per parameter
    limited = estimate_training_disk(parameters, parameters, 4, 2344, settings(save_total_limit=3))
    assert limited.checkpoints == 3
    assert estimate_training_disk(parameters, parameters, 4, 2344, settings(save_strategy="no")).checkpoints == 0


def test_disk_estimate_of_a_lora_run_by_hand():
    """LoRA: checkpoints hold the adapters (here 1.5M parameters, 4 bytes each), the optimizer state is AdamW's 8
    bytes per adapter parameter, and the final save merges the adapters into full weights (7B x 2 bytes)."""
    estimate = estimate_training_disk(7_000_000_000, 1_500_000, 2, 1000, settings(optim="adamw_torch", save_steps=100),
                                      adapters_only=True)
    assert estimate == DiskEstimate(10, 1_500_000 * 2, 1_500_000 * 8, 7_000_000_000 * 2)


def test_a_sweep_that_would_not_fit_on_the_disk_stops_with_one_line(tiny_assets, tmp_path, monkeypatch, capsys):
    import shutil

    import dpo
    from dpo_pipeline import checkpoints
    from dpo_pipeline.cli import run_script

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "The film is", "chosen": " great.", "rejected": " dull."}) + "\n")
    five_kb_free = shutil._ntuple_diskusage(10**9, 10**9 - 5000, 5000)
    monkeypatch.setattr(checkpoints.shutil, "disk_usage", lambda path: five_kb_free)
    with pytest.raises(SystemExit) as stopped:
        run_script(dpo.main, dpo.dataclass_types(),
                   [str(arg) for arg in ["--model_name_or_path", tiny_assets["sft_model"], "--pairs_file", pairs,
                                         "--output_dir", tmp_path / "dpo", "--sweep", "beta=0.1", "beta=1.0",
                                         "--max_steps", 4, "--save_steps", 1, "--max_length", 32, "--report_to", "none",
                                         *TRAINING_ON_CPU]])
    assert stopped.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "writing the sweep's unfinished runs takes about" in errors[0]
    assert "5.0 kB is free" in errors[0]
    assert not (tmp_path / "dpo").exists()
