"""The benchmark harness at tiny scale on the CPU: every stage runs and reports positive figures (the figures
themselves belong to a GPU run, not to a test)."""

import json

import pytest

from sentiment_dpo.benchmark import forward_flops_per_token, synthetic_tokenizer
from sentiment_dpo.cli import run_script
from tests.conftest import REPO


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


def test_the_harness_times_every_stage_at_tiny_scale(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_run", REPO / "bench" / "run.py")
    bench_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_run)
    monkeypatch.chdir(REPO)  # the bench config names the repository's own configs
    output = tmp_path / "tiny.json"
    run_script(bench_run.main, bench_run.dataclass_types(),
               ["--config", "bench/configs/tiny.yaml", "--output_file", str(output)])
    results = json.loads(output.read_text())
    stages = results["stages"]
    assert set(stages) == {"sft", "dpo", "sample", "score", "kl"} and results["shape"] == "tiny"
    assert stages["sft"]["tokens_per_s"] > 0 and stages["sft"]["mfu"] > 0
    for batch in (4, 8):
        plain, ours = stages["dpo"][f"plain_trl_batch_{batch}"], stages["dpo"][f"ours_batch_{batch}"]
        assert plain["pairs_per_s"] > 0 and ours["pairs_per_s"] > 0
        assert stages["dpo"][f"speedup_batch_{batch}"] == pytest.approx(ours["pairs_per_s"] / plain["pairs_per_s"])
    assert stages["sample"]["completions_per_s"] > 0 and stages["sample"]["completions"] == 32
    assert stages["score"]["texts_per_s"] > 0 and stages["kl"]["sequences_per_s"] > 0
