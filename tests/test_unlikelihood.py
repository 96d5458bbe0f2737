"""The unlikelihood baseline: its loss against numbers worked out by hand, dpo.py training it from the tiny SFT model
on the tiny pairs (the command a user types), eval.py placing it as its own series, and bad weights refused."""

import csv
import json
import math
import shutil

import pytest
import torch

from dpo_pipeline.losses import log1m_exp, unlikelihood_loss
from tests.conftest import REPO, TRAINING_ON_CPU, snapshot
from tests.helpers import run_command


def test_the_unlikelihood_loss_against_numbers_worked_out_by_hand():
    """Two pairs, alpha = 0.5, token probabilities chosen so that the logs are exact:

    pair 1: chosen p = (1/2, 1/4) -> NLL = ln 2 + ln 4 = ln 8 = 2.0794415
            rejected p = (1/2, 9/10, [masked]) -> -sum log(1 - p) = ln 2 + ln 10 = ln 20 = 2.9957323
            L1 = ln 8 + 0.5 ln 20 = 3.5773077
    pair 2: chosen p = (4/5, [masked: -inf]) -> NLL = -ln 0.8 = 0.2231436
            rejected p = (1/5, 1/5) -> -2 ln 0.8 = 0.4462871
            L2 = 0.2231436 + 0.5 * 0.4462871 = 0.4462871
    loss = (L1 + L2) / 2 = 2.0117974 (sums over tokens, mean over pairs).
    Gradient in the rejected log-prob of a token: d/d log p [-alpha log(1 - p)] = alpha p / (1 - p), over B = 2:
    p = 1/2 -> 0.25, p = 9/10 -> 2.25, p = 1/5 -> 0.0625; masked positions 0.
    """
    log = math.log
    chosen = torch.tensor([[log(0.5), log(0.25), 0.0], [log(0.8), -math.inf, 0.0]], dtype=torch.float64)
    rejected = torch.tensor([[log(0.5), log(0.9), 0.0], [log(0.2), log(0.2), 0.0]], dtype=torch.float64,
                            requires_grad=True)
    chosen_mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    rejected_mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    terms = unlikelihood_loss(chosen, rejected, chosen_mask, rejected_mask, alpha=0.5)
    torch.testing.assert_close(terms["chosen_nll"], torch.tensor([2.0794415, 0.2231436], dtype=torch.float64))
    torch.testing.assert_close(terms["rejected_unlikelihood"], torch.tensor([2.9957323, 0.4462871],
                                                                            dtype=torch.float64))
    torch.testing.assert_close(terms["loss"], torch.tensor(2.0117974, dtype=torch.float64))
    torch.testing.assert_close(terms["rejected_logps"], torch.tensor([log(0.45), log(0.04)], dtype=torch.float64))
    terms["loss"].backward()
    torch.testing.assert_close(rejected.grad, torch.tensor([[0.25, 2.25, 0.0], [0.0625, 0.0625, 0.0]],
                                                           dtype=torch.float64))
    # alpha = 0 is plain likelihood on the chosen completions
    assert unlikelihood_loss(chosen, rejected, chosen_mask, rejected_mask, alpha=0.0)["loss"].item() == \
        pytest.approx((2.0794415 + 0.2231436) / 2)


def test_log_one_minus_p_is_stable_near_p_one_and_clamped_at_certainty():
    """p = 1 - 1e-5 in float32: log(1 - p) = ln 1e-5 = -11.512925 (1 - exp(log p) in float32 is off by ~0.6%);
    p = 1 (log p = 0) is clamped to p = 1 - 1e-6: ln 1e-6 = -13.815511, finite, with a zero gradient."""
    logp = torch.tensor([math.log1p(-1e-5), 0.0], dtype=torch.float32, requires_grad=True)
    value = log1m_exp(logp)
    torch.testing.assert_close(value, torch.tensor([-11.512925, -13.815511]), rtol=1e-5, atol=0)
    value.sum().backward()
    assert torch.isfinite(logp.grad).all() and logp.grad[1] == 0


@pytest.fixture(scope="module")
def unlikelihood_run(tiny_pipeline, tmp_path_factory):
    """configs/tiny/unlikelihood.yaml with one of its weights and fewer steps (at a learning rate that moves the
    random tiny SFT model in 8 steps), beside the tiny pipeline's DPO run; then eval.py over the sweep folder."""
    root = tmp_path_factory.mktemp("unlikelihood") / "workspace"
    shutil.copytree(tiny_pipeline, root, symlinks=True)
    started = run_command("dpo.py", "--config", REPO / "configs/tiny/unlikelihood.yaml", "--sweep",
                          "method=unlikelihood,alpha=1", "--max_steps", 8, "--save_steps", 4, "--logging_steps", 1,
                          "--eval_steps", 4, "--warmup_steps", 0, "--learning_rate", 5e-3, "--report_to", "none",
                          *TRAINING_ON_CPU, cwd=root)
    run_command("eval.py", "--config", REPO / "configs/tiny/eval.yaml", "--num_prompts", 4, "--samples_per_prompt",
                2, "--best_of_n", 1, "--report_to", "none", cwd=root)
    return root, started


def completion_logps(model_path, pairs):
    from transformers import AutoModelForCausalLM

    from dpo_pipeline.generation import completion_logps as logps

    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    prompts = [pair["prompt_ids"] for pair in pairs]
    with torch.no_grad():
        chosen = logps(model, prompts, [pair["chosen_ids"] for pair in pairs], 0, 16)
        rejected = logps(model, prompts, [pair["rejected_ids"] for pair in pairs], 0, 16)
    return chosen, rejected


def test_dpo_py_trains_unlikelihood_without_reference_and_pushes_rejected_down(unlikelihood_run):
    root, started = unlikelihood_run
    run_dir = root / "runs/tiny/dpo/method-unlikelihood_alpha-1"
    info = json.loads((run_dir / "sweep_run.json").read_text())
    assert info["method"] == "unlikelihood" and info["alpha"] == 1.0 and info["beta"] is None
    assert info["loss_type"] == ["unlikelihood"]
    assert (run_dir / "model.safetensors").is_file() and (run_dir / "checkpoint-4").is_dir()
    summary = json.loads((run_dir / "stage_complete.json").read_text())["summary"]
    assert summary["global_step"] == 8 and "logps/margins" in summary and "eval_logps/margins" in summary
    config = json.loads((run_dir / "run_config.json").read_text())["configs"]["training"]
    assert config["disable_dropout"] is True and config["precompute_ref_log_probs"] is True  # no reference model
    assert "training Unlikelihood α=1" in started.stderr
    # Each logged loss is the batch's -log p(chosen) + alpha * -sum log(1 - p(rejected)), alpha = 1
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [entry for entry in logged if "unlikelihood/rejected" in entry]
    assert len(steps) == 8 and all(entry["unlikelihood/rejected"] > 0 for entry in steps)
    for entry in steps:
        assert entry["loss"] == pytest.approx(-entry["logps/chosen"] + entry["unlikelihood/rejected"], rel=1e-4)
    # Learned: on the pairs it trained on, log p(rejected) fell relative to log p(chosen), from the SFT model's.
    # (The random tiny SFT model gives each token p ~ 1/400, so the likelihood term leads and lifts the rejected
    # completions' shared words too: the margin grows, not necessarily each rejected log-prob's fall.)
    pairs = [json.loads(line) for line in (root / "generations/tiny/pairs.jsonl").read_text().splitlines()]
    before_chosen, before_rejected = completion_logps(root / "runs/tiny/sft", pairs)
    after_chosen, after_rejected = completion_logps(run_dir, pairs)
    assert (after_rejected - before_rejected).mean() < (after_chosen - before_chosen).mean() - 1.0
    assert ((after_chosen - after_rejected) > (before_chosen - before_rejected)).float().mean() > 0.8


def test_eval_py_places_unlikelihood_as_its_own_series(unlikelihood_run):
    root, _ = unlikelihood_run
    with (root / "runs/tiny/eval/frontier.csv").open() as handle:
        rows = [row for row in csv.DictReader(handle)]
    ours = [row for row in rows if row["run"] == "method-unlikelihood_alpha-1"]
    assert {row["step"] for row in ours} == {"4", "8"}
    assert all(row["method"] == "unlikelihood" and row["alpha"] == "1.0" and row["beta"] == "" for row in ours)
    assert any(row["run"] == "beta-0.1" and row["method"] == "dpo" for row in rows)  # beside the DPO run
    from dpo_pipeline.methods import series_label

    assert series_label({"method": "unlikelihood", "loss_type": "unlikelihood", "alpha": 1.0}) == \
        "Unlikelihood α=1"
    assert "Unlikelihood α=1" in (root / "runs/tiny/eval/report.md").read_text()


BAD_ENTRIES = [
    ("method=unlikelihood,alpha=-0.1", "alpha must be a finite number >= 0, got '-0.1'"),
    ("method=unlikelihood,alpha=much", "alpha='much' is not a number"),
    ("method=unlikelihood,alpha=nan", "alpha must be a finite number >= 0, got 'nan'"),
    ("method=unlikelihood", "method=unlikelihood needs its weight alpha"),
    ("alpha=0.1", "alpha is a setting of method unlikelihood; add method=unlikelihood"),
    ("method=unlikelihood,alpha=0.1,beta=0.5", "beta is a DPO setting the unlikelihood loss does not read"),
    ("method=ppo,alpha=0.1", "method=ppo is not one dpo.py trains: dpo, simpo, orpo, kto, unlikelihood"),
]


def assert_one_line_error(code, stderr, message):
    assert code == 2, stderr[-2000:]
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, last


@pytest.mark.parametrize("entry, message", BAD_ENTRIES)
def test_bad_unlikelihood_entries_exit_2_with_one_line_and_change_nothing(entry, message, tiny_pipeline, tmp_path,
                                                                          monkeypatch, capsys):
    """In process (cheap); the next test runs one of them as a user types it."""
    import dpo
    from dpo_pipeline.cli import run_script

    root = tmp_path / "workspace"
    shutil.copytree(tiny_pipeline, root, symlinks=True)
    monkeypatch.chdir(root)
    before = snapshot(root)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        run_script(dpo.main, dpo.dataclass_types(), ["--config", str(REPO / "configs/tiny/unlikelihood.yaml"),
                                                     "--sweep", "beta=0.1", entry, "--report_to", "none"])
    assert_one_line_error(stopped.value.code, capsys.readouterr().err, message)
    assert snapshot(root) == before


def test_a_negative_alpha_on_the_command_line_is_one_line_and_exit_2(tiny_pipeline, tmp_path):
    root = tmp_path / "workspace"
    shutil.copytree(tiny_pipeline, root, symlinks=True)
    before = snapshot(root)
    result = run_command("dpo.py", "--config", REPO / "configs/tiny/unlikelihood.yaml", "--sweep",
                         "method=unlikelihood,alpha=-1", "--report_to", "none", cwd=root, check=False)
    assert_one_line_error(result.returncode, result.stderr, "alpha must be a finite number >= 0, got '-1'")
    assert snapshot(root) == before
