"""Tasks plug in through the registry: a third task written as one folder outside the pipeline (examples/length_task)
runs pairs -> DPO -> eval with the scripts as they are, and no shared module names a task."""

import ast
import csv
import json
import os

import pytest

from tests.conftest import REPO, TRAINING_ON_CPU
from tests.helpers import run_python

# What a user of their own task sets: its folder on the Python path, its module named for the registry.
LENGTH_TASK_ENV = {"PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'examples'}", "DPO_PIPELINE_TASKS": "length_task"}


def run(script, *args, cwd, env=None):
    result = run_python([REPO / script, *args], cwd, {**os.environ, **(env or LENGTH_TASK_ENV)})
    return result


def test_a_task_of_its_own_folder_runs_pairs_dpo_and_eval(tiny_assets, tmp_path):
    a = tiny_assets
    pairs = run("preference_pairs.py", "--task", "length", "--model_name_or_path", a["sft_model"],
                "--dataset_name", a["data"], "--num_prompts", 12, "--heldout_prompts", 4, "--max_new_tokens", 12,
                "--score_prompt", "false", "--output_dir", "generations/length", "--report_to", "none", cwd=tmp_path)
    assert pairs.returncode == 0, pairs.stderr[-3000:]
    written = [json.loads(line) for line in (tmp_path / "generations/length/pairs.jsonl").read_text().splitlines()]
    # the rule-based reward ranked the pairs: the chosen completion has more words (up to the target of 12)
    assert written and all(min(1, len(p["chosen"].split()) / 12) == p["chosen_reward"] > p["rejected_reward"]
                           == min(1, len(p["rejected"].split()) / 12) for p in written)

    dpo = run("dpo.py", "--model_name_or_path", a["sft_model"], "--pairs_file", "generations/length/pairs.jsonl",
              "--output_dir", "runs/length", "--sweep", "beta=0.1", "--max_steps", 2, "--save_steps", 2,
              "--per_device_train_batch_size", 4, "--max_length", 32, "--report_to", "none", *TRAINING_ON_CPU,
              cwd=tmp_path)
    assert dpo.returncode == 0, dpo.stderr[-3000:]

    evaluation = run("eval.py", "--task", "length", "--sft_model_path", a["sft_model"], "--dpo_output_dir",
                     "runs/length", "--dataset_name", a["data"], "--num_prompts", 4, "--samples_per_prompt", 2,
                     "--max_new_tokens", 12, "--score_prompt", "false", "--heldout_pairs_file",
                     "generations/length/heldout_pairs.jsonl", "--best_of_n", 1, 4, "--output_dir", "runs/eval",
                     "--report_to", "none", cwd=tmp_path)
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    with (tmp_path / "runs/eval/frontier.csv").open() as handle:
        rows = {row["name"]: row for row in csv.DictReader(handle)}
    assert {"sft", "beta-0.1/step-2", "best-of-1", "best-of-4"} <= rows.keys()
    samples = [json.loads(line) for line in (tmp_path / "runs/eval/samples/beta-0.1__step-2.jsonl").open()]
    assert [s["reward"] for s in samples] == [min(1, len(s["completion"].split()) / 12) for s in samples]
    assert rows["beta-0.1/step-2"]["heldout_accuracy"] != ""
    assert "the completion's length in words" in (tmp_path / "runs/eval/report.md").read_text()


def test_an_unknown_task_is_one_line_naming_the_known_ones(tmp_path):
    result = run("eval.py", "--task", "lenght", "--sft_model_path", str(tmp_path), "--dataset_name", str(tmp_path),
                 "--output_dir", str(tmp_path / "eval"), "--report_to", "none", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "'lenght' is not a task" in last and "chat, length, sentiment" in last
    assert not (tmp_path / "eval").exists()


def shared_modules():
    package = REPO / "dpo_pipeline"
    return [path for path in package.rglob("*.py") if "tasks" not in path.relative_to(package).parts[:1]]


@pytest.mark.parametrize("path", shared_modules(), ids=lambda path: str(path.relative_to(REPO)))
def test_no_shared_module_imports_a_task(path):
    """The shared pipeline asks the registry (`dpo_pipeline.tasks.get_task`) and never imports a task's package."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            names = [module + "." + alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.replace(".", " ").split()
            assert not ("tasks" in parts and parts.index("tasks") + 1 < len(parts)
                        and parts[parts.index("tasks") + 1] not in ("Task", "Reward", "get_task", "register_task",
                                                                    "task_names")), f"{path.name} imports {name}"
