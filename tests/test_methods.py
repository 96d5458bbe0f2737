"""Preference methods plug in through the method registry (dpo_pipeline/methods): SimPO and ORPO from their one file
each, trained by dpo.py on the sampled token ids and placed on the frontier by eval.py with their own implicit reward;
KTO on the unpaired examples of the same pairs, against the reference; and a method of one's own (CPO,
examples/cpo_method/cpo.py) named in DPO_PIPELINE_METHODS, run as a user runs it."""

from __future__ import annotations

import csv
import json
import os
import re
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


def test_orpo_trains_from_the_built_in_registry_and_eval_places_it_with_the_log_odds(tiny_assets, pairs_dir,
                                                                                      tmp_path):
    """dpo.py --sweep method=orpo,beta=0.1, ORPO found by the registry's listing of its folder (no
    DPO_PIPELINE_METHODS): TRL's ORPO trainer on the sampled ids, no reference. eval.py's held-out accuracy is the
    share of pairs whose chosen completion has the higher log odds, log odds(y) = a - log(1 - exp(a)) with
    a = log pi(y|x) / |y|, recomputed here from the saved model."""
    sweep = tmp_path / "sweep"
    run(dpo, "--model_name_or_path", tiny_assets["sft_model"], "--pairs_file", pairs_dir / "pairs.jsonl",
        "--output_dir", sweep, "--sweep", "method=orpo,beta=0.1", "--max_steps", 4, "--save_steps", 4,
        "--per_device_train_batch_size", 8, "--learning_rate", 1e-3, "--max_length", 32, "--logging_steps", 1,
        "--report_to", "none", *TRAINING_ON_CPU)
    run_dir = sweep / "method-orpo_beta-0.1"
    info = json.loads((run_dir / "sweep_run.json").read_text())
    assert (info["method"], info["beta"], info["loss_type"], info["reference_model"]) == ("orpo", 0.1, ["orpo"], None)
    trained, sft = load_file(run_dir / "model.safetensors"), load_file(tiny_assets["sft_model"] / "model.safetensors")
    assert any(not torch.equal(trained[name], sft[name]) for name in sft)

    out = tmp_path / "eval"
    run(eval_script, *eval_args(tiny_assets, pairs_dir, sweep, out))
    row = {row["name"]: row for row in csv.DictReader((out / "frontier.csv").open())}["method-orpo_beta-0.1/step-4"]
    assert row["method"] == "orpo"
    assert "ORPO β=0.1" in (out / "report.md").read_text()
    pairs = [json.loads(line) for line in (pairs_dir / "pairs.jsonl").read_text().splitlines()]
    (chosen, rejected), (chosen_lengths, rejected_lengths) = completion_logps_and_lengths(run_dir, pairs)

    def log_odds(logps, lengths):
        average = logps.double() / lengths
        return average - torch.log(1 - torch.exp(average))

    margins = log_odds(chosen, chosen_lengths) - log_odds(rejected, rejected_lengths)
    assert float(row["heldout_accuracy"]) == pytest.approx((margins > 0).double().mean().item(), abs=1e-9)


def eval_args(tiny_assets, pairs_dir, sweep, out) -> list:
    """eval.py on the final models of `sweep`, its held-out pairs the training pairs (a check of what was learned)."""
    return ["--sft_model_path", tiny_assets["sft_model"], "--dpo_output_dir", sweep, "--classifier_name_or_path",
            tiny_assets["classifier"], "--dataset_name", tiny_assets["data"], "--num_prompts", 4,
            "--samples_per_prompt", 2, "--max_new_tokens", 8, "--classifier_max_length", 64, "--heldout_pairs_file",
            pairs_dir / "pairs.jsonl", "--include_checkpoints", "false", "--best_of_n", 1, "--best_of_n_prompts", 1,
            "--output_dir", out, "--report_to", "none"]


def test_kto_examples_are_each_completion_once_labelled_by_its_pairs():
    """Two pairs of prompt [5, 6], worked by hand (EOS is 0).
    Sharing the chosen completion: [7, 0] > [8] and [7, 0] > [9, 9]: [7, 0] is one desirable example (chosen twice,
    its sampled EOS kept, no BOS), [8] and [9, 9] undesirable ones: 1 + 2 rows, in order of first appearance.
    A chain: [7, 0] > [8] and [8] > [9, 9]: [8] is chosen once and rejected once, so it is left out (its two
    examples would cancel in KTO's loss); [7, 0] desirable, [9, 9] undesirable. The same completion after another
    prompt ([5]) is another example."""
    from dpo_pipeline.pair_building import unpaired_examples

    shared = {"prompt_ids": [[5, 6], [5, 6]], "chosen_ids": [[7, 0], [7, 0]], "rejected_ids": [[8], [9, 9]]}
    assert unpaired_examples(shared) == [
        {"prompt_ids": [5, 6], "completion_ids": [7, 0], "label": True},
        {"prompt_ids": [5, 6], "completion_ids": [8], "label": False},
        {"prompt_ids": [5, 6], "completion_ids": [9, 9], "label": False}]
    chain = {"prompt_ids": [[5, 6], [5, 6]], "chosen_ids": [[7, 0], [8]], "rejected_ids": [[8], [9, 9]]}
    assert unpaired_examples(chain) == [
        {"prompt_ids": [5, 6], "completion_ids": [7, 0], "label": True},
        {"prompt_ids": [5, 6], "completion_ids": [9, 9], "label": False}]
    other_prompt = {"prompt_ids": [[5, 6], [5]], "chosen_ids": [[7, 0], [8]], "rejected_ids": [[8], [9, 9]]}
    assert [(row["prompt_ids"], row["completion_ids"], row["label"]) for row in unpaired_examples(other_prompt)] == [
        ([5, 6], [7, 0], True), ([5, 6], [8], False), ([5], [8], True), ([5], [9, 9], False)]


def test_kto_trainer_prepares_pairs_of_ids_as_the_examples_with_trls_kl_partners():
    """KTOTrainer's preparation of pairs of sampled ids: the examples of `unpaired_examples` as they are (no text
    tokenized, no EOS added), shuffled by the seed, an example whose prompt fills max_length dropped (TRL's rule), and
    each completion's KL partner the completion before it in its batch of per_device_train_batch_size (the first's,
    the batch's last one: TRL's rotation)."""
    from datasets import Dataset

    from dpo_pipeline.pair_building import unpaired_examples
    from dpo_pipeline.trainers import KTOTrainer

    pairs = Dataset.from_dict({"prompt_ids": [[1], [2], [3], [4, 4, 4, 4]], "chosen_ids": [[11], [12, 0], [13], [14]],
                               "rejected_ids": [[21, 0], [22], [23], [24]], "prompt": ["a", "b", "c", "d"],
                               "chosen": ["", "", "", ""], "rejected": ["", "", "", ""]})
    args = SimpleNamespace(seed=0, max_length=4, per_device_train_batch_size=2, desirable_weight=1.0,
                           undesirable_weight=1.0)
    prepared = KTOTrainer._prepare_dataset(SimpleNamespace(calculate_KL=True), pairs, None, args, "train")
    rows = prepared.to_list()
    kept = [row for row in unpaired_examples(pairs) if row["prompt_ids"] != [4, 4, 4, 4]]
    assert sorted((r["prompt_ids"], r["completion_ids"], r["label"]) for r in rows) == \
        sorted((r["prompt_ids"], r["completion_ids"], r["label"]) for r in kept)
    assert len(rows) == 6 and [row["label"] for row in rows].count(True) == 3
    completions = [row["completion_ids"] for row in rows]
    assert [row["KL_completion_ids"] for row in rows] == [completions[i + 1 - 2 * (i % 2)] for i in range(6)]
    shuffled = KTOTrainer._prepare_dataset(SimpleNamespace(calculate_KL=True), pairs, None,
                                           SimpleNamespace(**{**vars(args), "seed": 1}), "train")
    assert [row["completion_ids"] for row in shuffled] != completions  # another seed, another order


def test_kto_config_is_dpo_pys_with_ktos_settings_and_what_kto_does_not_read_is_refused(tmp_path):
    """`method=kto`'s KTOConfig carries dpo.py's training settings, KTO's loss and weights and TRL's sequential
    batches; a DPO-only setting, a weight that is no positive number or a batch of one example is one line."""
    from dpo_pipeline.arguments import DPOTrainingConfig
    from dpo_pipeline.errors import PipelineError
    from dpo_pipeline.methods import series_label, sweep_entry_method

    def config(**changes):  # dpo.py's config as parsed
        return DPOTrainingConfig(**{"output_dir": str(tmp_path), "bf16": False, "beta": 0.1, "learning_rate": 1e-3,
                                    "max_length": 32, "per_device_train_batch_size": 8, "seed": 7,
                                    "live_eval_config": "configs/tiny/eval.yaml", **changes})

    kto, keys = sweep_entry_method({"method": "kto", "beta": "0.1", "desirable_weight": "1.33"}, "entry")
    kto.check(config(), keys, "entry")
    prepared = kto.prepare(config(), keys)
    assert (type(prepared).__name__, prepared.loss_type, prepared.train_sampling_strategy) == \
        ("KTOConfig", "kto", "sequential")
    assert (prepared.beta, prepared.learning_rate, prepared.max_length, prepared.seed, prepared.bf16) == \
        (0.1, 1e-3, 32, 7, False)
    assert (prepared.desirable_weight, prepared.undesirable_weight) == (1.33, 1.0)
    assert prepared.live_eval_config == "configs/tiny/eval.yaml"  # the run's callbacks read it: its dashboard
    assert series_label({"method": "kto", **kto.settings(prepared, keys)}) == "KTO β=0.1 λD=1.33"
    for changes, message in (({"loss_type": ["ipo"]}, "entry: loss_type is a setting TRL's KTOTrainer does not read"),
                             ({"label_smoothing": 0.1, "truncation_mode": "keep_end"},
                              "entry: label_smoothing, truncation_mode are settings TRL's KTOTrainer does not read"),
                             ({"per_device_train_batch_size": 1}, "entry: KTO needs per_device_train_batch_size >= 2")):
        with pytest.raises(PipelineError, match=re.escape(message)):
            kto.check(config(**changes), {}, "entry")
    with pytest.raises(PipelineError, match="undesirable_weight must be a finite number > 0, got '0'"):
        sweep_entry_method({"method": "kto", "undesirable_weight": "0"}, "entry")


def test_kto_trains_against_the_reference_on_the_unpaired_pairs_and_reaches_the_frontier(tiny_assets, pairs_dir,
                                                                                          tmp_path):
    """dpo.py --sweep method=kto,beta=0.1: TRL's KTOTrainer on the unpaired examples of the pairs, the SFT model its
    reference; eval.py puts it on the frontier as "KTO β=0.1", its held-out accuracy ranked by DPO's log-ratio
    margin, recomputed here from the saved model and the SFT model (the held-out pairs are the training pairs: the
    accuracy says what was learned)."""
    from dpo_pipeline.pair_building import TOKENIZED_COLUMNS, unpaired_examples

    sweep = tmp_path / "sweep"
    run(dpo, "--model_name_or_path", tiny_assets["sft_model"], "--pairs_file", pairs_dir / "pairs.jsonl",
        "--output_dir", sweep, "--sweep", "method=kto,beta=0.1", "--max_steps", 4, "--save_steps", 4,
        "--per_device_train_batch_size", 8, "--learning_rate", 1e-3, "--max_length", 32, "--logging_steps", 1,
        "--report_to", "none", *TRAINING_ON_CPU)
    run_dir = sweep / "method-kto_beta-0.1"
    info = json.loads((run_dir / "sweep_run.json").read_text())
    assert (info["method"], info["beta"], info["loss_type"]) == ("kto", 0.1, ["kto"])
    assert (info["desirable_weight"], info["undesirable_weight"]) == (1.0, 1.0)
    assert info["reference_model"] == str(tiny_assets["sft_model"])
    summary = json.loads((run_dir / "stage_complete.json").read_text())["summary"]
    assert summary["global_step"] == 4 and "rewards/margins" in summary
    # it trained on the examples of `unpaired_examples` (12 prompts x 4 completions of distinct rewards, 72 pairs:
    # 24 desirable + 24 undesirable), not on TRL's unpairing of the text (a desirable and an undesirable example per
    # pair: 144): 4 steps of 8 are 2/3 of an epoch
    pairs = [json.loads(line) for line in (pairs_dir / "pairs.jsonl").read_text().splitlines()]
    examples = unpaired_examples({column: [pair[column] for pair in pairs] for column in TOKENIZED_COLUMNS})
    desirable = sum(example["label"] for example in examples)
    assert (len(pairs), desirable, len(examples) - desirable) == (72, 24, 24)
    logs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert logs[-1]["epoch"] == pytest.approx(4 * 8 / len(examples))
    trained, sft = load_file(run_dir / "model.safetensors"), load_file(tiny_assets["sft_model"] / "model.safetensors")
    assert any(not torch.equal(trained[name], sft[name]) for name in sft)

    out = tmp_path / "eval"
    run(eval_script, *eval_args(tiny_assets, pairs_dir, sweep, out))
    row = {row["name"]: row for row in csv.DictReader((out / "frontier.csv").open())}["method-kto_beta-0.1/step-4"]
    assert row["method"] == "kto" and row["desirable_weight"] == "1.0"
    assert "KTO β=0.1" in (out / "report.md").read_text()
    (chosen, rejected), _ = completion_logps_and_lengths(run_dir, pairs)
    (reference_chosen, reference_rejected), _ = completion_logps_and_lengths(tiny_assets["sft_model"], pairs)
    margins = (chosen.double() - reference_chosen.double()) - (rejected.double() - reference_rejected.double())
    assert float(row["heldout_accuracy"]) == pytest.approx((margins > 0).double().mean().item(), abs=1e-9)
    assert float(row["heldout_reward_margin"]) == pytest.approx(0.1 * margins.mean().item(), rel=1e-4)
    # learned: on the pairs it trained on the chosen completions' log-ratio rose above the rejected ones' (0.82 of
    # the pairs; 0.21 with the examples' labels swapped)
    assert margins.mean() > 0 and float(row["heldout_accuracy"]) > 0.5


def test_a_method_of_ones_own_from_one_file_trains_and_reaches_the_frontier(tiny_assets, pairs_dir, tmp_path):
    """CPO (TRL's, examples/cpo_method/cpo.py), named in DPO_PIPELINE_METHODS with its folder on PYTHONPATH, the
    shared code untouched: dpo.py trains it on the pairs and eval.py puts it on the frontier as "CPO β=0.1", with
    its own implicit reward (beta times the summed log-prob) for held-out accuracy."""
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "examples")]),
           "DPO_PIPELINE_METHODS": "cpo_method.cpo"}
    run_command("dpo.py", "--model_name_or_path", tiny_assets["sft_model"], "--pairs_file", pairs_dir / "pairs.jsonl",
                "--output_dir", "sweep", "--sweep", "method=cpo,beta=0.1", "--max_steps", 2, "--save_steps", 2,
                "--per_device_train_batch_size", 8, "--learning_rate", 1e-3, "--max_length", 32, "--report_to", "none",
                *TRAINING_ON_CPU, cwd=tmp_path, env=env)
    info = json.loads((tmp_path / "sweep/method-cpo_beta-0.1/sweep_run.json").read_text())
    assert info["method"] == "cpo" and info["cpo_alpha"] == 1.0 and info["reference_model"] is None
    run_command("eval.py", "--sft_model_path", tiny_assets["sft_model"], "--dpo_output_dir", "sweep",
                "--classifier_name_or_path", tiny_assets["classifier"], "--dataset_name", tiny_assets["data"],
                "--num_prompts", 4, "--samples_per_prompt", 2, "--max_new_tokens", 8, "--classifier_max_length", 64,
                "--heldout_pairs_file", pairs_dir / "pairs.jsonl", "--best_of_n", 1, "--best_of_n_prompts", 1,
                "--output_dir", "eval", "--report_to", "none", cwd=tmp_path, env=env)
    rows = [row for row in csv.DictReader((tmp_path / "eval/frontier.csv").open()) if row["method"] == "cpo"]
    assert rows and all(row["heldout_accuracy"] != "" for row in rows)
    assert "CPO β=0.1" in (tmp_path / "eval/report.md").read_text()
    # without the registration the same entry is one line naming the methods dpo.py knows
    refused = run_command("dpo.py", "--model_name_or_path", tiny_assets["sft_model"], "--pairs_file",
                          pairs_dir / "pairs.jsonl", "--output_dir", "other", "--sweep", "method=cpo,beta=0.1",
                          "--report_to", "none", *TRAINING_ON_CPU, cwd=tmp_path, check=False)
    assert refused.returncode == 2 and "method=cpo is not one dpo.py trains" in refused.stderr.strip().splitlines()[-1]


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

