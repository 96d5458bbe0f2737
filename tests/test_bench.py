"""The benchmark harness at tiny scale on the CPU: every stage runs at the batch and with the settings asked for, the
plain-TRL column with TRL's defaults; its arithmetic (FLOPs, the workload, the end-to-end estimate) against numbers
worked out by hand. The figures themselves belong to a GPU run, not to a test."""

import dataclasses
import json

import pytest

from bench.estimate import (
    MethodsWorkload,
    PipelineWorkload,
    methods_estimate,
    methods_workload_of,
    pipeline_estimate,
    pipeline_workload,
)
from bench.harness import config_label, forward_flops_per_token, synthetic_tokenizer
from dpo_pipeline.cli import parse_config
from tests.conftest import REPO
from tests.helpers import run_python


def test_synthetic_tokenizer_gives_one_token_per_word():
    tokenizer = synthetic_tokenizer(100)
    assert tokenizer("t5 t99 t1", add_special_tokens=False)["input_ids"] == [5, 99, 1]
    assert len(tokenizer) == 100 and tokenizer.eos_token_id == 0


def test_forward_flops_of_gpt2_large_worked_by_hand():
    from transformers import GPT2Config

    config = GPT2Config(n_embd=1280, n_layer=36, n_head=20, vocab_size=50257)
    # blocks: 36 x (12 x 1280^2 + 13 x 1280) = 708,387,840; final norm 2,560; LM head 1280 x 50257 = 64,328,960.
    # With the 1,310,720 position embeddings that makes GPT-2 Large's 774,030,080 parameters.
    parameters = 708_387_840 + 2_560 + 64_328_960
    assert parameters + 1_310_720 == 774_030_080
    assert forward_flops_per_token(config, 73) == 2 * parameters + 2 * 36 * 73 * 1280


def test_the_harness_times_every_stage_at_tiny_scale(tmp_path):
    output = tmp_path / "tiny.json"
    # from the repository root, as the docs say: the bench config names the repository's own configs
    run = run_python(["-m", "bench.run", "--config", "bench/configs/tiny.yaml", "--output_file", output], REPO,
                     timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| dpo plain TRL @ 4 |" in run.stdout and "End-to-end estimate" in run.stdout
    results = json.loads(output.read_text())
    stages = results["stages"]
    assert set(stages) == {"sft", "dpo", "sample", "score", "kl"} and results["shape"] == "tiny"
    assert stages["sft"]["tiny/sft"]["tokens_per_s"] > 0 and stages["sft"]["tiny/sft"]["mfu"] > 0
    for batch in (4, 32):
        plain = stages["dpo"][f"plain TRL @ {batch}"]
        ours, precomputed = (stages["dpo"][f"{label} @ {batch}"]
                             for label in ("tiny/dpo", "tiny/dpo+precompute_ref_log_probs=true"))
        assert plain["activation_checkpointing"] and not ours["activation_checkpointing"]  # TRL's default, ours
        # plain TRL is TRL's own config and trainer, not the pipeline's subclasses with their checks
        assert (plain["config_class"], plain["trainer_class"]) == ("trl.trainer.dpo_config.DPOConfig",
                                                                   "trl.trainer.dpo_trainer.DPOTrainer")
        assert ours["config_class"] == "dpo_pipeline.arguments.dpo_config.DPOTrainingConfig"
        for result in (plain, ours, precomputed):
            assert result["pairs_per_s"] > 0 and result["batch"] == batch
            # the optimizer sees the batch asked for, not the config's own global_batch_size of 32
            assert result["micro_batch"] * result["gradient_accumulation_steps"] == batch
        # The reference pass that precompute_ref_log_probs runs before training is charged to every pair.
        assert plain["reference_pass_seconds_per_pair"] == ours["reference_pass_seconds_per_pair"] == 0
        assert precomputed["precompute_ref_log_probs"] and precomputed["reference_pass_seconds_per_pair"] > 0
    for cache in ("dynamic", "static"):
        sample = stages["sample"][f"{cache} cache"]
        assert sample["completions_per_s"] > 0 and sample["completions"] == 32
    assert stages["score"]["texts_per_s"] > 0 and stages["kl"]["sequences_per_s"] > 0
    estimate = results["estimate"]  # its arithmetic: test_end_to_end_estimate_worked_by_hand
    assert set(estimate["seconds"]) == {"sft", "pairs", "dpo", "eval"} and min(estimate["seconds"].values()) > 0
    # at the DPO config's own batch (32 pairs) and the eval config's KV cache
    assert estimate["rates"]["dpo_pairs_per_s"] == stages["dpo"]["tiny/dpo @ 32"]["pairs_per_s"]
    assert estimate["rates"]["completions_per_s"] == stages["sample"]["dynamic cache"]["completions_per_s"]
    methods = estimate["methods"]  # the leaderboard's: 48 offline runs of the demo's pairs, 12 online DPO runs
    assert (methods["workload"]["offline_runs"], methods["workload"]["online_runs"]) == (48, 12)
    assert methods["workload"]["eval_models"] == 60 and min(methods["seconds"].values()) > 0
    assert "Method leaderboard estimate for configs/tiny/methods.yaml" in run.stdout


def test_config_labels_name_the_file_and_its_overrides():
    assert config_label("configs/paper/dpo_24gb.yaml") == "paper/dpo_24gb"
    assert config_label("configs/paper/dpo.yaml:torch_compile=true") == "paper/dpo+torch_compile=true"


def test_end_to_end_estimate_worked_by_hand():
    work = PipelineWorkload(sft_tokens=1000, pair_completions=100, dpo_runs=2, dpo_pairs_per_run=300, eval_models=3,
                            eval_samples_per_model=10, heldout_sequences_per_model=20, best_of_n_samples=40)
    estimate = pipeline_estimate(work, sft_tokens_per_s=100, dpo_pairs_per_s=60, completions_per_s=10,
                                 texts_per_s=20, kl_sequences_per_s=5)
    # sft 1000/100 = 10 s. pairs: each completion is sampled (0.1 s) and scored (0.05 s): 100 x 0.15 = 15 s.
    # dpo: 2 runs x 300 pairs / 60 = 10 s. eval: (3 models x 10 + 40 best-of-N) x 0.15 = 10.5 s of sampling and
    # scoring, KL of the 2 models other than SFT 2 x 10 / 5 = 4 s, held-out log-probs 3 x 20 / (2 x 5) = 6 s.
    assert estimate["seconds"] == pytest.approx({"sft": 10, "pairs": 15, "dpo": 10, "eval": 20.5})
    assert estimate["total_seconds"] == pytest.approx(55.5)


def test_method_leaderboard_estimate_worked_by_hand():
    work = MethodsWorkload(offline_runs=4, pairs_per_run=300, online_runs=2, prompts_per_online_run=50, eval_models=6,
                           eval_samples_per_model=10)
    estimate = methods_estimate(work, dpo_pairs_per_s=60, completions_per_s=10, texts_per_s=20, kl_sequences_per_s=5)
    # offline: 4 runs x 300 pairs / 60 = 20 s. online: 2 runs x 50 prompts x (2 completions x (0.1 s sampled + 0.05 s
    # scored) + 1/60 s of DPO step) = 100 x 0.31667 = 31.667 s. eval: 6 models x 10 samples x (0.1 + 0.05 + 0.2) = 21 s.
    assert estimate["seconds"] == pytest.approx({"offline": 20, "online": 31.6667, "eval": 21}, rel=1e-4)
    assert estimate["total_seconds"] == pytest.approx(72.6667, rel=1e-4)


def test_the_paper_workload_worked_by_hand(monkeypatch):
    """What the paper configs ask of each stage (the estimate's input)."""
    monkeypatch.chdir(REPO)
    import dpo
    import eval as eval_script
    import preference_pairs
    import sft

    _, sft_args, _ = parse_config(sft.dataclass_types(), ["--config", "configs/gpt2-large/sft.yaml"])
    (pairs_args,) = parse_config(preference_pairs.dataclass_types(), ["--config", "configs/paper/pairs.yaml"])
    dpo_script_args, dpo_args, _ = parse_config(dpo.dataclass_types(), ["--config", "configs/paper/dpo.yaml"])
    (eval_args,) = parse_config(eval_script.dataclass_types(), ["--config", "configs/paper/eval.yaml"])
    work = pipeline_workload(sft_args, pairs_args, dpo_script_args, dpo_args, eval_args, 25_000, 270)
    # 25,000 reviews x 270 tokens; (25,000 train + 1,000 held-out prompts) x 4 completions; 4 betas x 25,000 x 6
    # pairs. 150,000 / 64 = 2,344 steps: 11 checkpoints (every 200) + the final model per beta, and SFT: 49 models.
    # 1,000 prompts x 4 samples per model; 1,000 held-out prompts x 6 pairs x 2 sequences; best-of-64 on 1,000.
    assert dataclasses.asdict(work) == {
        "sft_tokens": 6_750_000, "pair_completions": 104_000, "dpo_runs": 4, "dpo_pairs_per_run": 150_000,
        "eval_models": 49, "eval_samples_per_model": 4_000, "heldout_sequences_per_model": 12_000,
        "best_of_n_samples": 64_000}


def test_the_full_scale_leaderboard_workload_worked_by_hand(monkeypatch):
    """What configs/gpt2-large/methods.yaml and methods_online.yaml ask (the estimate's input)."""
    monkeypatch.chdir(REPO)
    work = methods_workload_of("configs/gpt2-large/methods.yaml", "configs/gpt2-large/methods_online.yaml",
                               "configs/gpt2-large/pairs.yaml", "configs/gpt2-large/eval.yaml")
    # 8 methods x 2 knob values x 3 seeds = 48 runs of 1,000 prompts x 6 pairs x 3 epochs; online DPO: 2 rewards x
    # 2 betas x 3 seeds = 12 runs of 1,000 prompts x 1 epoch; 60 new final models x 500 prompts x 4 samples.
    assert dataclasses.asdict(work) == {"offline_runs": 48, "pairs_per_run": 18_000, "online_runs": 12,
                                        "prompts_per_online_run": 1_000, "eval_models": 60,
                                        "eval_samples_per_model": 2_000}
