"""The machines users have: an older Python, a GPU config on a machine without a usable GPU, a cluster
behind an HTTP proxy, and wandb projects and names as a team organises them."""

import socket
import subprocess
import threading

import pytest
import torch

from tests.conftest import REPO, TRAINING_ON_CPU


def test_make_stops_with_one_line_on_a_python_older_than_3_11(tmp_path):
    """Ubuntu 22.04's python3 is 3.10, and the pins need 3.11: `make` says so before it creates anything."""
    old_python = tmp_path / "python3.10"
    old_python.write_text('#!/bin/sh\nif [ "$1" = "--version" ]; then echo "Python 3.10.12"; exit 0; fi\nexit 1\n')
    old_python.chmod(0o755)
    result = subprocess.run(["make", "-C", str(REPO), "install", f"PYTHON={old_python}", f"VENV={tmp_path / 'venv'}"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(ours) == 1 and "Python 3.11 or newer" in ours[0] and "Python 3.10.12" in ours[0]
    assert not (tmp_path / "venv").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: bf16 trains")
def test_a_gpu_config_on_a_machine_without_a_gpu_stops_with_one_line_saying_why(tiny_assets, tmp_path, capsys):
    """bf16 (the full-scale configs', and TRL's default) without a usable GPU used to fall back to the CPU with a
    warning; training now stops before it starts, saying why (here: a CPU-only build of torch) and what to do."""
    import json

    import dpo
    from dpo_pipeline.cli import run_script

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "The film is", "chosen": " great.", "rejected": " dull."}) + "\n")
    with pytest.raises(SystemExit) as stopped:
        run_script(dpo.main, dpo.dataclass_types(),
                   [str(arg) for arg in ["--model_name_or_path", tiny_assets["sft_model"], "--pairs_file", pairs,
                                         "--output_dir", tmp_path / "dpo", "--max_steps", 1, "--report_to", "none",
                                         *TRAINING_ON_CPU, "--bf16", "true", "--use_cpu", "false"]])
    assert stopped.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "bf16 is set" in errors[0] and "--bf16 false" in errors[0]
    assert "CPU-only build" in errors[0] or "driver" in errors[0]
    assert not (tmp_path / "dpo").exists()


@pytest.fixture
def listening_proxy():
    """A TCP listener on a free loopback port, standing in for a cluster's HTTP proxy."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accept = threading.Thread(target=lambda: server.accept()[0].close(), daemon=True)
    accept.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def test_the_hub_check_goes_through_the_proxy_the_environment_names(listening_proxy, monkeypatch):
    """Behind a proxy the hub itself cannot be reached directly (here: nothing listens at HF_ENDPOINT), but through
    HTTPS_PROXY it can, as huggingface_hub would connect; NO_PROXY exempts a host."""
    from dpo_pipeline.hub import _can_connect, hub_is_reachable

    _can_connect.cache_clear()
    for key in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY",
                "no_proxy"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")
    assert not hub_is_reachable()
    monkeypatch.setenv("HTTPS_PROXY", listening_proxy)
    assert hub_is_reachable()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert not hub_is_reachable()


def test_wandb_runs_are_named_and_grouped_by_scale_and_stage(tmp_path):
    from dpo_pipeline.tracking import run_names

    assert run_names("runs/tiny/sft", "sft") == ("tiny/sft", "tiny/sft")
    assert run_names("runs/paper/dpo/beta-0.1", "dpo") == ("paper/dpo/beta-0.1", "paper/dpo")
    assert run_names("runs/gpt2-large/dpo/preferred-ft", "preferred_ft") == ("gpt2-large/dpo/preferred-ft",
                                                                             "gpt2-large/dpo")
    assert run_names("generations/tiny", "preference_pairs") == ("tiny/preference_pairs", "tiny/preference_pairs")
    assert run_names("runs/paper/eval", "eval") == ("paper/eval", "paper/eval")
    assert run_names(tmp_path / "exp1" / "dpo", "dpo") == ("exp1/dpo", "exp1/dpo")


def test_a_users_wandb_project_wins_over_the_default_but_not_over_the_config(monkeypatch):
    from dpo_pipeline.arguments.common import DEFAULT_WANDB_PROJECT
    from dpo_pipeline.tracking import configure_wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    assert configure_wandb(DEFAULT_WANDB_PROJECT) == (DEFAULT_WANDB_PROJECT, "offline")
    monkeypatch.setenv("WANDB_PROJECT", "team-project")
    assert configure_wandb(DEFAULT_WANDB_PROJECT)[0] == "team-project"
    assert configure_wandb("chosen-in-the-config")[0] == "chosen-in-the-config"
