"""The live evaluation during training (dpo_pipeline/live_eval.py): the true reward, exact KL and samples at each
evaluation step in metrics.jsonl and the wandb run, the last step's figure equal to eval.py's for the final model,
its warnings, and a 2-process launch that does not hang."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from dpo_pipeline.live_eval import warnings_for
from tests.conftest import TRAINING_ON_CPU, tiny_workspace
from tests.helpers import REPO, launch, run_command, run_python

CONFIGS = REPO / "configs" / "tiny"
# Four DPO steps, measured at steps 0, 2 and 4 (eval_steps 2); no warm-up, so that the policy moves from step 1.
SHORT_RUN = ["--sweep", "beta=0.1", "--max_steps", "4", "--eval_steps", "2", "--save_steps", "2", "--warmup_steps",
             "0", *TRAINING_ON_CPU]


def live_records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if "live/reward" in record]


def test_warnings_for():
    """KL 3.0 past a bound of 2.5 warns; 3.0 under 5 does not. Length 4 tokens against step 0's 10: 4 < 0.5 x 10
    warns; 6 tokens does not (6 >= 5); without a baseline (None) length never warns."""
    summary = {"kl": 3.0, "mean_response_tokens": 4.0}
    said = warnings_for(summary, 2.5, 10.0, 0.5)
    assert len(said) == 2 and "past live_eval_kl_warning 2.5" in said[0] and "collapsing" in said[1]
    assert warnings_for({"kl": 3.0, "mean_response_tokens": 6.0}, 5.0, 10.0, 0.5) == []
    assert warnings_for(summary, 5.0, None, 0.5) == []


def test_live_figures_in_the_offline_files_and_equal_to_eval_py(tiny_pipeline, tmp_path):
    """dpo.py as shipped (live evaluation on): live reward, KL and sample tables at steps 0, 2, 4 in metrics.jsonl
    and in the offline wandb run; the intermediate one on 16 prompts, the last one on all of eval.py's; and eval.py on
    the final model (same prompts, seed, sampler) gives the same reward and KL as the last live one."""
    workspace = tiny_workspace(tiny_pipeline, "dpo", tmp_path / "ws")
    result = run_command("dpo.py", "--config", CONFIGS / "dpo.yaml", *SHORT_RUN, "--live_eval_kl_warning", "1e-6",
                         cwd=workspace)
    assert "past live_eval_kl_warning" in result.stderr  # the policy has moved by step 2
    run_dir = workspace / "runs/tiny/dpo/beta-0.1"
    records = live_records(run_dir)
    assert [r["step"] for r in records] == [0, 2, 4]
    assert abs(records[0]["live/kl"]) < 1e-5 and records[1]["live/num_prompts"] == 16
    assert records[2]["live/kl"] > 0 and records[2]["live/num_prompts"] > 16
    tables = list(run_dir.glob("wandb/offline-run-*/files/media/table/live/samples_*.table.json"))
    assert len(tables) == 3
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["step", "prompt", "completion", "reward", "kl"] and table["data"]

    run_command("eval.py", "--config", CONFIGS / "eval.yaml", "--include_checkpoints", "false", "--best_of_n", "1",
                "--best_of_n_prompts", "1", "--report_to", "none", cwd=workspace)
    with open(workspace / "runs/tiny/eval/frontier.csv") as handle:
        row = next(r for r in csv.DictReader(handle) if r["name"] == "beta-0.1/step-4")
    assert int(row["num_prompts"]) == records[2]["live/num_prompts"]
    for key in ("reward", "kl", "mean_response_tokens"):
        assert float(row[key]) == pytest.approx(records[2][f"live/{key}"], rel=1e-6, abs=1e-9), key

    # tools/check_live.py, as a user runs it after make demo or make study: the same figures read back from the binary
    # offline wandb run (run-*.wandb) as well as metrics.jsonl, against frontier.csv.
    check = run_python(["-m", "tools.check_live", workspace / "runs/tiny/dpo", "--frontier",
                        workspace / "runs/tiny/eval/frontier.csv"], REPO)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "| beta-0.1 | 3 | 3 | 3 |" in check.stdout and check.stdout.rstrip().endswith("equal to frontier.csv")


def test_two_processes_measure_once_and_finish(tiny_pipeline, tmp_path):
    """Under torchrun with 2 processes the main process measures while the other waits: the run finishes, and each
    live step is logged once."""
    workspace = tiny_workspace(tiny_pipeline, "dpo", tmp_path / "ws")
    launch("dpo.py", "--config", CONFIGS / "dpo.yaml", *SHORT_RUN, "--report_to", "none", cwd=workspace)
    assert [r["step"] for r in live_records(workspace / "runs/tiny/dpo/beta-0.1")] == [0, 2, 4]


@pytest.mark.parametrize("script, config, run", [
    ("rl.py", "rl.yaml", "runs/tiny/dpo/method-rloo_reward-classifier_beta-0.05"),
    ("sft.py", "preferred_ft.yaml", "runs/tiny/dpo/preferred-ft"),
])
def test_rl_and_preferred_ft_measure_at_each_save_step(tiny_pipeline, tmp_path, script, config, run):
    """RL and Preferred-FT (no evaluation steps) as shipped: live figures at step 0 and at each save step."""
    workspace = tiny_workspace(tiny_pipeline, "rl", tmp_path / "ws")
    extra = ["--sweep", "method=rloo,reward=classifier,beta=0.05"] if script == "rl.py" else []
    run_command(script, "--config", CONFIGS / config, *extra, "--max_steps", "2", "--save_steps", "1",
                "--report_to", "none", *TRAINING_ON_CPU, cwd=workspace)
    records = live_records(workspace / run)
    assert [r["step"] for r in records] == [0, 1, 2] and records[-1]["live/kl"] > 0


@pytest.mark.parametrize("script, config, sweep, steps", [
    ("dpo.py", "methods.yaml", ["method=kto,beta=0.5", "method=orpo,beta=0.1", "method=simpo,beta=0.5,gamma=0.5"],
     ["--max_steps", "4", "--eval_steps", "2", "--save_steps", "2"]),
    ("rl.py", "methods_online.yaml", ["method=online_dpo,reward=classifier,beta=0.05"],
     ["--max_steps", "2", "--save_steps", "1"]),
])
def test_every_method_of_the_leaderboard_has_its_live_figures(tiny_pipeline, tmp_path, script, config, sweep, steps):
    """The methods make methods trains on TRL's other trainers (KTO, ORPO, SimPO through CPO: configs of TRL's own
    classes; online DPO), as shipped: live figures at step 0 and at each evaluation or save step."""
    workspace = tiny_workspace(tiny_pipeline, "rl", tmp_path / "ws")
    run_command(script, "--config", CONFIGS / config, "--sweep", *sweep, *steps, "--report_to", "none",
                *TRAINING_ON_CPU, cwd=workspace)
    every = int(steps[steps.index("--save_steps") + 1]) if script == "rl.py" else 2
    for run in sorted((workspace / "runs/tiny/dpo").glob("method-*")):
        records = live_records(run)
        assert [r["step"] for r in records] == list(range(0, int(steps[1]) + 1, every)), run.name
        assert records[-1]["live/kl"] > 0
    assert len(list((workspace / "runs/tiny/dpo").glob("method-*"))) == len(sweep)


def test_without_the_eval_configs_inputs_the_run_trains_without_it(tmp_path, caplog):
    """An eval config whose dataset is not there: the live evaluation turns itself off at the start, with a warning
    naming the config and the missing path, instead of stopping the training."""
    from types import SimpleNamespace

    import torch

    from dpo_pipeline.live_eval import LiveEvaluation

    config = tmp_path / "eval.yaml"
    config.write_text((CONFIGS / "eval.yaml").read_text().replace(".cache/embedded/data", str(tmp_path / "nowhere")))
    args = SimpleNamespace(live_eval_config=str(config), live_eval_every=None, eval_strategy="no",
                           save_strategy="steps", fsdp="")
    callback = LiveEvaluation(args, tmp_path)
    state = SimpleNamespace(global_step=0, save_steps=2, eval_steps=None, logging_steps=1)
    with caplog.at_level("WARNING"):
        callback.on_train_begin(args, state, None, model=torch.nn.Linear(1, 1))
    assert not callback.enabled and "nowhere" in caplog.text and str(config) in caplog.text
    callback.on_step_end(args, state, None, model=None)  # off: nothing measured, nothing written
    assert not (tmp_path / "metrics.jsonl").exists()
