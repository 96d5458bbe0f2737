"""Each script end to end on tiny models, in process, asserting that something was learned or measured; and
their resume behaviour. (`test_pipeline.py` chains the four real command lines.)"""

import csv
import json

import pytest

import dpo
import eval as eval_script
import preference_pairs
import sft
from dpo_pipeline.cli import run_script
from dpo_pipeline.models import SentimentClassifier
from dpo_pipeline.pair_building import make_pairs
from tests.conftest import TRAINING_ON_CPU as _CPU

TRAINING_ON_CPU = [*_CPU, "--report_to", "none"]


def run(script, *args):
    run_script(script.main, script.dataclass_types(), [str(arg) for arg in args])


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sft_trains_a_model_from_scratch_and_skips_when_finished(tiny_assets, tmp_path):
    out = tmp_path / "sft"
    args = ["--model_name_or_path", tiny_assets["policy_init"], "--from_scratch", "true",
            "--dataset_name", tiny_assets["data"], "--clean_reviews", "true", "--output_dir", out, "--max_steps", 40,
            "--per_device_train_batch_size", 16, "--learning_rate", 5e-3, "--max_length", 64,
            "--logging_steps", 5, "--save_steps", 20, *TRAINING_ON_CPU]
    run(sft, *args)
    losses = [row["loss"] for row in read_jsonl(out / "metrics.jsonl") if "loss" in row]
    assert losses[-1] < 0.6 * losses[0]  # a from-scratch model learns the synthetic reviews' few words
    assert (out / "model.safetensors").is_file() and (out / "checkpoint-20").is_dir()
    config = json.loads((out / "run_config.json").read_text())
    assert config["configs"]["script"]["from_scratch"] is True and "versions" in config
    weights_time = (out / "model.safetensors").stat().st_mtime_ns
    run(sft, *args)  # finished with this config: nothing is redone
    assert (out / "model.safetensors").stat().st_mtime_ns == weights_time


def test_lora_sft_saves_merged_weights_a_later_step_loads(tiny_assets, tmp_path):
    """A 24 GB GPU user trains LoRA adapters; the next step must load a full model from the output folder."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / "sft-lora"
    run(sft, "--model_name_or_path", tiny_assets["sft_model"], "--dataset_name", tiny_assets["data"],
        "--clean_reviews", "true",
        "--output_dir", out, "--max_steps", 4, "--per_device_train_batch_size", 8, "--learning_rate", 1e-2,
        "--max_length", 64, "--use_peft", "true", "--lora_r", 4, "--lora_alpha", 8, *TRAINING_ON_CPU)
    assert not (out / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_assets["sft_model"])
    changed = [name for name, weight in merged.state_dict().items()
               if not weight.equal(base.state_dict()[name])]
    assert changed and all("attn" in name for name in changed)  # LoRA trained the attention projections only


def test_pairs_are_scored_completions_with_the_higher_reward_chosen(pairs_dir, tiny_assets):
    records = read_jsonl(pairs_dir / "completions.jsonl")
    assert len(records) == 12 and {record["label"] for record in records} == {0, 1}
    pairs = read_jsonl(pairs_dir / "pairs.jsonl")
    expected = sum(len(make_pairs(r["completions"], r["rewards"])) for r in records)
    assert len(pairs) == expected > 12
    assert all(pair["chosen_reward"] > pair["rejected_reward"] for pair in pairs)
    # Each pair carries the ids that were sampled: the prompt's own ids and each completion's, as in completions.jsonl
    by_prompt = {record["prompt_index"]: record for record in records}
    for pair in pairs:
        record = by_prompt[pair["prompt_index"]]
        assert pair["prompt_ids"] == record["prompt_token_ids"]
        assert pair["chosen_ids"] in record["completion_token_ids"]
        assert pair["rejected_ids"] in record["completion_token_ids"]
    # The stored rewards are the classifier's P(POSITIVE) of prompt + completion.
    classifier = SentimentClassifier.load(str(tiny_assets["classifier"]), max_length=64)
    record = records[0]
    rescored = classifier.score([record["prompt"] + completion for completion in record["completions"]])
    assert rescored == pytest.approx(record["rewards"], abs=1e-5)
    assert json.loads((pairs_dir / "run_config.json").read_text())["configs"]["pairs"]["num_prompts"] == 12
    summary = json.loads((pairs_dir / "stage_complete.json").read_text())["summary"]
    assert summary["prompts"] == 12 and summary["pairs"] == len(pairs)


def test_interrupted_pair_making_continues_to_the_same_result(pairs_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(pairs_dir, copy)
    lines = (copy / "completions.jsonl").read_text().splitlines(keepends=True)
    (copy / "completions.jsonl").write_text("".join(lines[:4]) + lines[4][:10])  # killed mid-write
    for name in ("pairs.jsonl", "stage_complete.json"):
        (copy / name).unlink()
    config = json.loads((copy / "run_config.json").read_text())["configs"]["pairs"]
    run(preference_pairs, "--model_name_or_path", config["model_name_or_path"],
        "--classifier_name_or_path", config["classifier_name_or_path"], "--dataset_name", config["dataset_name"],
        "--num_prompts", 12, "--completions_per_prompt", 4, "--max_new_tokens", 8, "--generation_batch_size", 4,
        "--classifier_max_length", 64, "--output_dir", copy, "--report_to", "none", "--seed", 3)
    # Exact on purpose: the same command on the same machine resumes to the same bytes (each batch's samples are
    # seeded by its position, not by what ran before), which is what makes a resumed run the run it replaces.
    assert (copy / "pairs.jsonl").read_text() == (pairs_dir / "pairs.jsonl").read_text()


def dpo_args(tiny_assets, pairs_dir, out, *extra):
    return ["--model_name_or_path", tiny_assets["sft_model"], "--pairs_file", pairs_dir / "pairs.jsonl",
            "--output_dir", out, "--sweep", "beta=0.1", "beta=1.0", "--max_steps", 6, "--save_steps", 3,
            "--per_device_train_batch_size", 8, "--learning_rate", 1e-3, "--max_length", 32, "--logging_steps", 1,
            *TRAINING_ON_CPU, *extra]


@pytest.fixture(scope="module")
def dpo_dir(tiny_assets, pairs_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("dpo") / "sweep"
    run(dpo, *dpo_args(tiny_assets, pairs_dir, out))
    return out


def test_dpo_trains_one_model_per_beta_against_the_sft_reference(dpo_dir):
    for name, beta in (("beta-0.1", 0.1), ("beta-1.0", 1.0)):
        run_dir = dpo_dir / name
        assert (run_dir / "model.safetensors").is_file()
        assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
        info = json.loads((run_dir / "sweep_run.json").read_text())
        assert info["beta"] == beta and info["overrides"] == {"beta": str(beta)}
        logs = [row for row in read_jsonl(run_dir / "metrics.jsonl") if "rewards/margins" in row]
        # Step 1: the policy is the reference, so the implicit reward margin is 0; then it grows.
        assert abs(logs[0]["rewards/margins"]) < 1e-4
        assert logs[-1]["rewards/margins"] > 0.01 * beta


def test_dpo_resumes_interrupted_runs_and_skips_finished_ones(dpo_dir, tiny_assets, pairs_dir, tmp_path, monkeypatch,
                                                            capfd):
    """A sweep stopped right after checkpoint-3 of its first run, with its second run finished already: the same
    command resumes the first from checkpoint-3 (which alone kept its optimizer state) to the uninterrupted run's
    weights, and skips the second."""
    import shutil

    import torch
    from safetensors.torch import load_file

    from tests.conftest import interrupt_after_checkpoint

    out = tmp_path / "sweep"
    shutil.copytree(dpo_dir / "beta-1.0", out / "beta-1.0")
    finished_weights = (out / "beta-1.0" / "model.safetensors").stat().st_mtime_ns
    with monkeypatch.context() as patch:
        interrupt_after_checkpoint(patch, 3)
        with pytest.raises(SystemExit) as stopped:
            run(dpo, *dpo_args(tiny_assets, pairs_dir, out))
    assert stopped.value.code == 130
    interrupted = out / "beta-0.1"
    assert (interrupted / "checkpoint-3" / "optimizer.pt").is_file()
    assert not (interrupted / "model.safetensors").exists()
    capfd.readouterr()
    run(dpo, *dpo_args(tiny_assets, pairs_dir, out))
    log = capfd.readouterr().err
    assert "Resuming from " + str(interrupted / "checkpoint-3") in log
    assert "[beta-1.0] finished already; skipping" in log
    assert (out / "beta-1.0" / "model.safetensors").stat().st_mtime_ns == finished_weights
    complete = json.loads((interrupted / "stage_complete.json").read_text())
    assert complete["summary"]["global_step"] == 6
    resumed = load_file(interrupted / "model.safetensors")
    straight = load_file(dpo_dir / "beta-0.1" / "model.safetensors")
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6)


def test_sweep_shards_train_disjoint_runs_that_an_unsharded_command_then_skips(dpo_dir, tiny_assets, pairs_dir,
                                                                              tmp_path, capfd):
    """Two commands (a SLURM array of two) share one sweep folder: shard 0/2 takes beta=0.1 (finished already here)
    and leaves beta=1.0 alone, shard 1/2 trains beta=1.0 to the unsharded run's weights, and the whole sweep run
    afterwards finds both finished: sweep_shard is no part of a run's fingerprint."""
    import shutil

    import torch
    from safetensors.torch import load_file

    out = tmp_path / "sweep"
    shutil.copytree(dpo_dir / "beta-0.1", out / "beta-0.1")
    capfd.readouterr()
    run(dpo, *dpo_args(tiny_assets, pairs_dir, out, "--sweep_shard", "0/2"))
    assert "[beta-0.1] finished already; skipping" in capfd.readouterr().err
    assert not (out / "beta-1.0").exists()
    run(dpo, *dpo_args(tiny_assets, pairs_dir, out, "--sweep_shard", "1/2"))
    log = capfd.readouterr().err
    assert "beta-0.1" not in log
    sharded = load_file(out / "beta-1.0" / "model.safetensors")
    for name, tensor in load_file(dpo_dir / "beta-1.0" / "model.safetensors").items():
        torch.testing.assert_close(sharded[name], tensor, rtol=0, atol=1e-6)
    run(dpo, *dpo_args(tiny_assets, pairs_dir, out))
    log = capfd.readouterr().err
    assert "[beta-0.1] finished already; skipping" in log and "[beta-1.0] finished already; skipping" in log


def test_finished_runs_keep_weights_only_checkpoints(dpo_dir):
    """Disk: the frontier needs only each checkpoint's weights and nothing resumes a finished run, so every
    checkpoint of a finished run is cut down to its weights, config and trainer state."""
    for run_dir in (dpo_dir / "beta-0.1", dpo_dir / "beta-1.0"):
        for checkpoint in ("checkpoint-3", "checkpoint-6"):
            files = {path.name for path in (run_dir / checkpoint).iterdir()}
            assert {"model.safetensors", "config.json", "trainer_state.json"} <= files
            assert not {"optimizer.pt", "scheduler.pt", "rng_state.pth"} & files, files


@pytest.mark.parametrize("speed_settings", [["--precompute_ref_log_probs", "true"],
                                            ["--precompute_ref_log_probs", "true", "--torch_compile", "true"]],
                         ids=["precomputed-reference", "precomputed-reference-compiled"])
def test_the_gpu_speed_settings_train_as_the_plain_ones_and_resume(dpo_dir, tiny_assets, pairs_dir, tmp_path,
                                                                    speed_settings, monkeypatch):
    """The 80 GB DPO configs run the reference model once over the pairs before training (precompute_ref_log_probs)
    and compile the policy: the weights are those of a live reference without compilation, and a resumed run
    recomputes the reference pass from the SFT model, not from the checkpoint it resumes. Spies on TRL's reference
    pass and on torch.compile make sure the settings were used at all (equal weights alone would also come from a
    run that ignored them)."""
    import torch
    import trl
    from safetensors.torch import load_file

    from tests.conftest import interrupt_after_checkpoint

    calls = {"reference pass": 0, "compile": 0}
    precompute, compile_ = trl.DPOTrainer._precompute_ref_logps, torch.compile

    def spy_precompute(self, *args, **kwargs):
        calls["reference pass"] += 1
        return precompute(self, *args, **kwargs)

    def spy_compile(*args, **kwargs):
        calls["compile"] += 1
        return compile_(*args, **kwargs)

    monkeypatch.setattr(trl.DPOTrainer, "_precompute_ref_logps", spy_precompute)
    monkeypatch.setattr(torch, "compile", spy_compile)
    out = tmp_path / "fast"
    args = dpo_args(tiny_assets, pairs_dir, out, "--sweep", "beta=1.0", *speed_settings)
    run(dpo, *args)
    compiled = "--torch_compile" in speed_settings
    assert calls == {"reference pass": 1, "compile": 1 if compiled else 0}
    run_dir = out / "beta-1.0"
    precomputed = load_file(run_dir / "model.safetensors")
    live = load_file(dpo_dir / "beta-1.0" / "model.safetensors")
    sft_weights = load_file(f"{tiny_assets['sft_model']}/model.safetensors")
    assert any(not torch.equal(precomputed[name], sft_weights[name]) for name in sft_weights)  # it trained
    for name, tensor in live.items():
        torch.testing.assert_close(precomputed[name], tensor, rtol=0, atol=1e-5)

    resumed = tmp_path / "resumed"
    with monkeypatch.context() as patch:
        interrupt_after_checkpoint(patch, 3)
        with pytest.raises(SystemExit):
            run(dpo, *dpo_args(tiny_assets, pairs_dir, resumed, "--sweep", "beta=1.0", *speed_settings))
    run(dpo, *dpo_args(tiny_assets, pairs_dir, resumed, "--sweep", "beta=1.0", *speed_settings))
    # the interrupted run made its own pass; the resumed one read it back (the reference is the SFT model, not the
    # checkpoint it resumes: a pass of another model would have another key, and be made again)
    assert calls["reference pass"] == 2
    for name, tensor in load_file(resumed / "beta-1.0" / "model.safetensors").items():  # compiled kernels: 1e-5
        torch.testing.assert_close(tensor, precomputed[name], rtol=0, atol=1e-5 if compiled else 1e-6)


def test_a_sweep_makes_one_reference_pass_over_the_pairs_and_a_new_entry_or_a_resume_none(dpo_dir, tiny_assets,
                                                                                           pairs_dir, tmp_path,
                                                                                           monkeypatch):
    """precompute_ref_log_probs in a 4-entry sweep: the reference forward runs over the pairs once (one batch of
    precompute_ref_batch_size pairs at a time: ceil(pairs / 8) batches), not once per entry; an entry added later
    and a resumed run read the pass back from the sweep folder's .reference_logps/. The runs that read it train to
    the weights of a run with a live reference model."""
    import math

    import torch
    import trl
    from safetensors.torch import load_file

    from dpo_pipeline.stages.dpo import REFERENCE_CACHE
    from tests.conftest import interrupt_after_checkpoint

    batches = []
    compute = trl.DPOTrainer.compute_ref_log_probs

    def counting(self, model, inputs):
        batches.append(len(inputs["input_ids"]) // 2)  # [chosen; rejected] in one batch
        return compute(self, model, inputs)

    monkeypatch.setattr(trl.DPOTrainer, "compute_ref_log_probs", counting)
    pairs = len((pairs_dir / "pairs.jsonl").read_text().splitlines())
    out = tmp_path / "sweep"
    fast = ["--precompute_ref_log_probs", "true", "--precompute_ref_batch_size", 8]
    run(dpo, *dpo_args(tiny_assets, pairs_dir, out, "--sweep", "beta=0.1", "beta=1.0", "beta=0.2", "beta=0.5",
                       *fast))
    assert len(batches) == math.ceil(pairs / 8) and sum(batches) == pairs  # one pass over the pairs
    assert len(list((out / REFERENCE_CACHE).glob("train-*.safetensors"))) == 1
    run(dpo, *dpo_args(tiny_assets, pairs_dir, out, "--sweep", "beta=0.1", "beta=1.0", "beta=0.2", "beta=0.5",
                       "beta=2.0", *fast))
    with monkeypatch.context() as patch:
        interrupt_after_checkpoint(patch, 3)
        with pytest.raises(SystemExit):
            run(dpo, *dpo_args(tiny_assets, pairs_dir, out, "--sweep", "beta=3.0", *fast))
    run(dpo, *dpo_args(tiny_assets, pairs_dir, out, "--sweep", "beta=3.0", *fast))
    assert sum(batches) == pairs  # the new entry and the interrupted and resumed one read it back
    live = load_file(dpo_dir / "beta-1.0" / "model.safetensors")
    for name, tensor in load_file(out / "beta-1.0" / "model.safetensors").items():
        torch.testing.assert_close(tensor, live[name], rtol=0, atol=1e-5)


def test_eval_writes_the_frontier_for_sft_and_every_checkpoint(dpo_dir, tiny_assets, tmp_path):
    out = tmp_path / "eval"
    args = ["--sft_model_path", tiny_assets["sft_model"], "--dpo_output_dir", dpo_dir,
            "--classifier_name_or_path", tiny_assets["classifier"], "--dataset_name", tiny_assets["data"],
            "--num_prompts", 6, "--samples_per_prompt", 2, "--max_new_tokens", 8, "--classifier_max_length", 64,
            "--output_dir", out, "--report_to", "none"]
    run(eval_script, *args)
    with (out / "frontier.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["name"] for row in rows] == ["sft", "beta-0.1/step-3", "beta-0.1/step-6", "beta-1.0/step-3",
                                             "beta-1.0/step-6"]
    assert {"name", "beta", "step", "reward", "kl", "num_samples"} <= set(rows[0])
    assert float(rows[0]["kl"]) == 0.0 and rows[0]["beta"] == ""
    assert all(float(row["kl"]) > 0 for row in rows[1:])
    for row in rows:  # each model's reward and KL are the means over its 12 saved samples
        samples = read_jsonl(out / "samples" / f"{row['name'].replace('/', '__')}.jsonl")
        assert row["num_samples"] == "12" and len(samples) == 12
        assert float(row["reward"]) == pytest.approx(sum(s["reward"] for s in samples) / 12, abs=1e-6)
        assert float(row["kl"]) == pytest.approx(sum(s["kl"] for s in samples) / 12, abs=1e-5)
    assert (out / "frontier.png").stat().st_size > 10_000
    samples = read_jsonl(out / "samples" / "beta-0.1__step-6.jsonl")
    assert len(samples) == 12 and all(sample["kl"] >= 0 for sample in samples)
    cached = (out / "models" / "sft.json").stat().st_mtime_ns
    run(eval_script, *args)  # results are cached per model: nothing is evaluated again
    assert (out / "models" / "sft.json").stat().st_mtime_ns == cached


def test_lora_dpo_uses_the_base_model_as_reference_and_saves_merged_weights(tiny_assets, pairs_dir, tmp_path):
    """dpo.py with TRL's LoRA flags: the reference is the SFT model itself (the adapters disabled), so the implicit
    reward margin starts at 0; the run saves full merged weights that eval.py loads, changed only where LoRA
    trained (the attention projections)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    run(dpo, *dpo_args(tiny_assets, pairs_dir, out, "--sweep", "beta=0.1", "--use_peft", "true", "--lora_r", 4,
                       "--lora_alpha", 8, "--learning_rate", 5e-2))
    run_dir = out / "beta-0.1"
    logs = [row for row in read_jsonl(run_dir / "metrics.jsonl") if "rewards/margins" in row]
    assert abs(logs[0]["rewards/margins"]) < 1e-4 and abs(logs[-1]["rewards/margins"]) > 1e-3
    assert not (run_dir / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(run_dir)
    base = load_file(f"{tiny_assets['sft_model']}/model.safetensors")
    changed = [name for name, weight in merged.state_dict().items() if name in base and not weight.equal(base[name])]
    assert changed and all("attn" in name for name in changed)


def test_overwrite_true_replaces_a_folder_of_another_run(tiny_assets, pairs_dir, dpo_dir, tmp_path):
    """A folder made with another config is refused (test_bad_input); with --overwrite true its files are gone and
    the new run is complete in their place."""
    import shutil

    out = tmp_path / "sweep"
    shutil.copytree(dpo_dir / "beta-0.1", out / "beta-0.1")
    (out / "beta-0.1" / "left-over.txt").write_text("from the other run")
    run(dpo, *dpo_args(tiny_assets, pairs_dir, out, "--sweep", "beta=0.1", "--learning_rate", 5e-4,
                       "--overwrite", "true"))
    run_dir = out / "beta-0.1"
    assert not (run_dir / "left-over.txt").exists()
    config = json.loads((run_dir / "run_config.json").read_text())
    assert config["configs"]["training"]["learning_rate"] == 5e-4
    assert json.loads((run_dir / "stage_complete.json").read_text())["config_hash"] == config["config_hash"]


def test_the_users_settings_reach_trl_and_the_record_says_what_trained(tiny_assets, pairs_dir, dpo_dir, tmp_path,
                                                                       monkeypatch, capfd):
    """model_init_kwargs are merged with the model settings (the user's keys win, a replaced one is said in one line):
    attn_implementation and TRL 1.16's use_kernels reach the model's loading; ref_model_name_or_path is the loss's
    reference (here the finished beta-1.0 model of another sweep, loaded as the policy is); a user's
    resume_from_checkpoint is the checkpoint a one-entry sweep resumes from; run_config.json records the precision
    that trained."""
    import transformers
    import trl.trainer.utils

    from tests.conftest import interrupt_after_checkpoint

    loaded = []
    create = trl.trainer.utils.create_model_from_path

    def recording(path, *args, **kwargs):
        loaded.append((str(path), dict(kwargs)))
        kwargs.pop("use_kernels", None)  # the Hub kernels are not installed offline: recorded, then loaded without
        return create(path, *args, **kwargs)

    for module in (trl.trainer.utils, trl.trainer.dpo_trainer):
        monkeypatch.setattr(module, "create_model_from_path", recording)
    import dpo_pipeline.stages.dpo  # noqa: F401 (its reference loader imports create_model_from_path when called)

    out = tmp_path / "sweep"
    reference = dpo_dir / "beta-1.0"
    run(dpo, *dpo_args(tiny_assets, pairs_dir, out, "--sweep", "beta=0.1", "--attn_implementation", "sdpa",
                       "--model_init_kwargs", '{"attn_implementation": "eager", "use_kernels": true}',
                       "--ref_model_name_or_path", reference))
    policy = [kwargs for path, kwargs in loaded if path == str(tiny_assets["sft_model"])]
    assert policy and policy[0]["attn_implementation"] == "eager" and policy[0]["use_kernels"] is True
    assert "model_init_kwargs: attn_implementation='eager' replaces 'sdpa'" in capfd.readouterr().err
    assert [path for path, _ in loaded if path == str(reference)]  # the reference, loaded as the policy was
    info = json.loads((out / "beta-0.1" / "sweep_run.json").read_text())
    assert info["reference_model"] == str(reference)
    recorded = json.loads((out / "beta-0.1" / "run_config.json").read_text())
    assert recorded["configs"]["precision"] == {"mixed_precision": "no"}

    resumed = tmp_path / "resumed"
    with monkeypatch.context() as patch:
        interrupt_after_checkpoint(patch, 3)
        with pytest.raises(SystemExit):
            run(dpo, *dpo_args(tiny_assets, pairs_dir, resumed, "--sweep", "beta=1.0"))
    starts = []
    train = transformers.Trainer.train
    monkeypatch.setattr(transformers.Trainer, "train",
                        lambda self, *a, **k: starts.append(k.get("resume_from_checkpoint")) or train(self, *a, **k))
    checkpoint = resumed / "beta-1.0" / "checkpoint-3"
    run(dpo, *dpo_args(tiny_assets, pairs_dir, resumed, "--sweep", "beta=1.0", "--resume_from_checkpoint", checkpoint))
    assert starts == [str(checkpoint)]


def test_push_to_hub_uploads_the_merged_final_model_and_its_card_once(tiny_assets, pairs_dir, tmp_path, monkeypatch):
    """push_to_hub: true on a LoRA run, the Hub client recorded instead of reached: one upload, after the run is
    complete, of the final model's files (the adapters merged in: a plain model) and a model card holding TRL's card,
    the run's settings and its last live figures where there are some; never the checkpoints, the staging folder,
    wandb's files or the run's records. The Trainer itself pushes nothing."""
    import fnmatch
    from pathlib import Path

    import huggingface_hub
    import transformers

    uploads, repos = [], []

    def record_upload(self, *, repo_id, folder_path, allow_patterns=None, **kwargs):
        folder = Path(folder_path)
        files = sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()
                       and any(fnmatch.fnmatch(str(path.relative_to(folder)), pattern) for pattern in allow_patterns))
        uploads.append({"repo_id": repo_id, "files": files, "complete": (folder / "stage_complete.json").is_file()})

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", record_upload)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kwargs: repos.append(repo_id))
    for method in ("push_to_hub", "init_hf_repo", "_push_from_checkpoint"):
        monkeypatch.setattr(transformers.Trainer, method, lambda *a, **k: pytest.fail("the Trainer pushed"))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    out = tmp_path / "sweep"
    run(dpo, *dpo_args(tiny_assets, pairs_dir, out, "--sweep", "beta=0.1", "--use_peft", "true", "--lora_r", "4",
                       "--push_to_hub", "true", "--hub_model_id", "someone/tiny-dpo"))
    assert repos == ["someone/tiny-dpo"] and len(uploads) == 1
    upload = uploads[0]
    assert upload["complete"] and "README.md" in upload["files"] and "model.safetensors" in upload["files"]
    assert not [name for name in upload["files"] if name.startswith(("checkpoint-", "wandb", ".")) or "adapter" in name
                or name in ("run_config.json", "stage_complete.json", "sweep_run.json", "metrics.jsonl")]
    card = (out / "beta-0.1" / "README.md").read_text()
    assert "someone/tiny-dpo" in card and "## Training run" in card and "`beta`: 0.1" in card
