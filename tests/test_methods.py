"""Preference methods plug in through the method registry (dpo_pipeline/methods): SimPO from its one file, trained by
dpo.py on the sampled token ids and placed on the frontier by eval.py with its own implicit reward; and a method of
one's own (ORPO, examples/orpo_method/orpo.py) named in DPO_PIPELINE_METHODS, run as a user runs it."""

from __future__ import annotations

import csv
import json
import os
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

import dpo
import eval as eval_script
from dpo_pipeline.cli import run_script
from tests.conftest import REPO, TRAINING_ON_CPU
from tests.helpers import run_command


def run(script, *args):
    run_script(script.main, script.dataclass_types(), [str(arg) for arg in args])


def test_sampled_ids_rows_are_the_ids_as_sampled_in_trls_layout():
    """Prompt [5, 6], chosen [7, 8, 0] (EOS 0 sampled), rejected [9] (cut short, no EOS), max_length 4: TRL's row
    layout, no BOS before the prompt, no EOS added, the chosen cut where prompt + completion reaches 4 tokens."""
    from dpo_pipeline.trainers import OnSampledIds

    row = OnSampledIds.tokenize_row(SimpleNamespace(max_length=4), {
        "prompt_ids": [5, 6], "chosen_ids": [7, 8, 0], "rejected_ids": [9], "prompt": "x", "chosen": "y",
        "rejected": "z"})
    assert row == {"prompt_input_ids": [5, 6], "prompt_attention_mask": [1, 1],
                   "chosen_input_ids": [5, 6, 7, 8], "chosen_attention_mask": [1, 1, 1, 1],
                   "chosen_labels": [-100, -100, 7, 8],
                   "rejected_input_ids": [5, 6, 9], "rejected_attention_mask": [1, 1, 1],
                   "rejected_labels": [-100, -100, 9]}


def completion_logps_and_lengths(model_dir, pairs):
    from transformers import AutoModelForCausalLM

    from dpo_pipeline.generation import completion_logps

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompts = [pair["prompt_ids"] for pair in pairs]
    logps = [completion_logps(model, prompts, [pair[key] for pair in pairs], 0, 16) for key in ("chosen_ids",
                                                                                                 "rejected_ids")]
    lengths = [torch.tensor([len(pair[key]) for pair in pairs], dtype=torch.float64) for key in ("chosen_ids",
                                                                                                  "rejected_ids")]
    return logps, lengths


def test_simpo_trains_on_the_sampled_ids_and_eval_places_it_with_its_own_implicit_reward(tiny_assets, pairs_dir,
                                                                                          tmp_path):
    """dpo.py --sweep method=simpo,beta=2.0,gamma=0.5: TRL's CPO trainer with the simpo loss, no reference model; its
    run records what it is, and eval.py puts it on the frontier as its own series. Its held-out accuracy is the share
    of pairs whose chosen completion has the higher average log-probability per token (SimPO's reward without beta),
    recomputed here from the saved model; its reward margin is beta times the mean of that margin."""
    sweep = tmp_path / "sweep"
    run(dpo, "--model_name_or_path", tiny_assets["sft_model"], "--pairs_file", pairs_dir / "pairs.jsonl",
        "--output_dir", sweep, "--sweep", "method=simpo,beta=2.0,gamma=0.5", "--max_steps", 4, "--save_steps", 2,
        "--per_device_train_batch_size", 8, "--learning_rate", 1e-3, "--max_length", 32, "--logging_steps", 1,
        "--report_to", "none", *TRAINING_ON_CPU)
    run_dir = sweep / "method-simpo_beta-2.0_gamma-0.5"
    info = json.loads((run_dir / "sweep_run.json").read_text())
    assert (info["method"], info["beta"], info["gamma"], info["loss_type"]) == ("simpo", 2.0, 0.5, ["simpo"])
    assert info["reference_model"] is None
    summary = json.loads((run_dir / "stage_complete.json").read_text())["summary"]
    assert summary["global_step"] == 4 and "rewards/margins" in summary
    trained, sft = load_file(run_dir / "model.safetensors"), load_file(tiny_assets["sft_model"] / "model.safetensors")
    assert any(not torch.equal(trained[name], sft[name]) for name in sft)

    out = tmp_path / "eval"
    run(eval_script, "--sft_model_path", tiny_assets["sft_model"], "--dpo_output_dir", sweep,
        "--classifier_name_or_path", tiny_assets["classifier"], "--dataset_name", tiny_assets["data"],
        "--num_prompts", 4, "--samples_per_prompt", 2, "--max_new_tokens", 8, "--classifier_max_length", 64,
        "--heldout_pairs_file", pairs_dir / "pairs.jsonl", "--include_checkpoints", "false", "--best_of_n", 1,
        "--best_of_n_prompts", 1, "--output_dir", out, "--report_to", "none")
    rows = {row["name"]: row for row in csv.DictReader((out / "frontier.csv").open())}
    row = rows["method-simpo_beta-2.0_gamma-0.5/step-4"]
    assert row["method"] == "simpo" and row["gamma"] == "0.5"
    assert "SimPO β=2 γ=0.5" in (out / "report.md").read_text()
    pairs = [json.loads(line) for line in (pairs_dir / "pairs.jsonl").read_text().splitlines()]
    (chosen, rejected), (chosen_lengths, rejected_lengths) = completion_logps_and_lengths(run_dir, pairs)
    margins = chosen.double() / chosen_lengths - rejected.double() / rejected_lengths
    assert float(row["heldout_accuracy"]) == pytest.approx((margins > 0).double().mean().item(), abs=1e-9)
    assert float(row["heldout_reward_margin"]) == pytest.approx(2.0 * margins.mean().item(), rel=1e-4)


def test_a_method_of_ones_own_from_one_file_trains_and_reaches_the_frontier(tiny_assets, pairs_dir, tmp_path):
    """ORPO (TRL's, examples/orpo_method/orpo.py), named in DPO_PIPELINE_METHODS with its folder on PYTHONPATH, the
    shared code untouched: dpo.py trains it on the pairs and eval.py puts it on the frontier as "ORPO β=0.1", with
    its own implicit reward (the log odds) for held-out accuracy."""
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "examples")]),
           "DPO_PIPELINE_METHODS": "orpo_method.orpo"}
    run_command("dpo.py", "--model_name_or_path", tiny_assets["sft_model"], "--pairs_file", pairs_dir / "pairs.jsonl",
                "--output_dir", "sweep", "--sweep", "method=orpo,beta=0.1", "--max_steps", 2, "--save_steps", 2,
                "--per_device_train_batch_size", 8, "--learning_rate", 1e-3, "--max_length", 32, "--report_to", "none",
                *TRAINING_ON_CPU, cwd=tmp_path, env=env)
    info = json.loads((tmp_path / "sweep/method-orpo_beta-0.1/sweep_run.json").read_text())
    assert info["method"] == "orpo" and info["reference_model"] is None
    run_command("eval.py", "--sft_model_path", tiny_assets["sft_model"], "--dpo_output_dir", "sweep",
                "--classifier_name_or_path", tiny_assets["classifier"], "--dataset_name", tiny_assets["data"],
                "--num_prompts", 4, "--samples_per_prompt", 2, "--max_new_tokens", 8, "--classifier_max_length", 64,
                "--heldout_pairs_file", pairs_dir / "pairs.jsonl", "--best_of_n", 1, "--best_of_n_prompts", 1,
                "--output_dir", "eval", "--report_to", "none", cwd=tmp_path, env=env)
    rows = [row for row in csv.DictReader((tmp_path / "eval/frontier.csv").open()) if row["method"] == "orpo"]
    assert rows and all(row["heldout_accuracy"] != "" for row in rows)
    assert "ORPO β=0.1" in (tmp_path / "eval/report.md").read_text()
    # without the registration the same entry is one line naming the methods dpo.py knows
    refused = run_command("dpo.py", "--model_name_or_path", tiny_assets["sft_model"], "--pairs_file",
                          pairs_dir / "pairs.jsonl", "--output_dir", "other", "--sweep", "method=orpo,beta=0.1",
                          "--report_to", "none", *TRAINING_ON_CPU, cwd=tmp_path, check=False)
    assert refused.returncode == 2 and "method=orpo is not one dpo.py trains" in refused.stderr.strip().splitlines()[-1]


def test_a_metric_registered_later_reaches_evaluated_models_without_sampling_again(tiny_assets, pairs_dir, tmp_path,
                                                                                   monkeypatch):
    """eval.py measures the SFT model and a DPO run; then a new figure of the samples is registered (the share of a
    model's completions that are distinct) and eval.py runs again with the same command, no --overwrite: every
    model's row gets it, computed from its stored samples, and nothing is sampled or measured again."""
    import dpo_pipeline.measure as measure
    from dpo_pipeline import metric_registry
    from dpo_pipeline.metric_registry import Metric, register_metric

    sweep = tmp_path / "sweep"
    run(dpo, "--model_name_or_path", tiny_assets["sft_model"], "--pairs_file", pairs_dir / "pairs.jsonl",
        "--output_dir", sweep, "--sweep", "beta=0.1", "--max_steps", 2, "--save_steps", 2,
        "--per_device_train_batch_size", 8, "--learning_rate", 1e-3, "--max_length", 32, "--report_to", "none",
        *TRAINING_ON_CPU)
    args = ["--sft_model_path", tiny_assets["sft_model"], "--dpo_output_dir", sweep, "--classifier_name_or_path",
            tiny_assets["classifier"], "--dataset_name", tiny_assets["data"], "--num_prompts", 4,
            "--samples_per_prompt", 3, "--max_new_tokens", 8, "--classifier_max_length", 64,
            "--heldout_pairs_file", pairs_dir / "pairs.jsonl", "--best_of_n", 1, "--best_of_n_prompts", 1,
            "--output_dir", tmp_path / "eval", "--report_to", "none"]
    run(eval_script, *args)
    before = {row["name"]: row for row in csv.DictReader((tmp_path / "eval/frontier.csv").open())}
    assert "distinct_share" not in next(iter(before.values()))

    def distinct(samples, context):
        return {"distinct_share": len({tuple(s["completion_token_ids"]) for s in samples}) / len(samples)}

    monkeypatch.setattr(metric_registry, "_METRICS", dict(metric_registry._METRICS))  # the registry as it was, after
    register_metric(Metric("distinct_share", "the share of a model's completions that are distinct", "samples",
                           from_samples=distinct))
    calls = []
    for name in ("iter_samples", "completion_logps"):
        original = getattr(measure, name)
        monkeypatch.setattr(measure, name, lambda *a, _name=name, _original=original, **k: calls.append(_name)
                            or _original(*a, **k))
    run(eval_script, *args)
    after = {row["name"]: row for row in csv.DictReader((tmp_path / "eval/frontier.csv").open())}
    assert calls == []  # nothing sampled, no log-probs taken
    assert set(after) == set(before)
    for name, row in after.items():
        if row["run"] == "best-of-n":
            continue
        samples = [json.loads(line) for line in
                   (tmp_path / "eval/samples" / f"{name.replace('/', '__')}.jsonl").read_text().splitlines()]
        assert float(row["distinct_share"]) == pytest.approx(distinct(samples, {})["distinct_share"])
        assert {key: value for key, value in row.items() if key != "distinct_share"} == before[name]
