"""make results writes the README's and docs/results.md's figures from the files the demos leave, never by hand."""

import csv

from tests.conftest import REPO
from tests.helpers import run_python

FRONTIER = [
    {"name": "sft", "run": "sft", "method": "sft", "loss_type": "sft", "step": 0, "is_final": True, "reward": 0.5125,
     "reward_sem": 0.01, "kl": 0.0, "kl_sem": 0.0, "num_samples": 512, "num_prompts": 128},
    {"name": "beta-0.1/step-72", "run": "beta-0.1", "method": "dpo", "beta": 0.1, "loss_type": "sigmoid",
     "label_noise": 0.0, "step": 72, "is_final": True, "reward": 0.8125, "reward_sem": 0.004, "kl": 12.375,
     "kl_sem": 0.25, "num_samples": 512, "num_prompts": 128, "heldout_accuracy": 0.6875, "win_rate": 0.9375,
     "heldout_accuracy_se": 0.03125, "win_rate_se": 0.015, "setting": "beta-0.1#0123abcd",
     "mean_response_tokens": 17.5},
    {"name": "beta-0.1/step-36", "run": "beta-0.1", "method": "dpo", "beta": 0.1, "loss_type": "sigmoid",
     "label_noise": 0.0, "step": 36, "is_final": False, "reward": 0.7, "kl": 3.0, "num_samples": 512,
     "num_prompts": 128},
]


def test_results_come_from_the_run_files_and_the_recorded_times(tmp_path):
    from dpo_pipeline.report import FRONTIER_COLUMNS

    (tmp_path / "configs/tiny").mkdir(parents=True)
    (tmp_path / "configs/tiny/dpo.yaml").write_text("sweep:\n  - beta=0.1\n")
    eval_dir = tmp_path / "runs/tiny/eval"
    eval_dir.mkdir(parents=True)
    with (eval_dir / "frontier.csv").open("w") as file:
        writer = csv.DictWriter(file, fieldnames=FRONTIER_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(FRONTIER)
    timings = tmp_path / "runs/tiny/timings"
    timings.mkdir()
    for step, seconds in {"assets": 40, "sft": 125, "pairs": 30, "dpo": 200, "eval": 80}.items():
        (timings / f"{step}.seconds").write_text(f"{seconds}\n")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv/install.seconds").write_text("100\n")
    (tmp_path / "README.md").write_text("# Title\n\n<!-- results -->\nold figures\n<!-- /results -->\n\nEnd.\n")
    result = run_python(["-m", "tools.results", "--root", tmp_path], REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    readme = (tmp_path / "README.md").read_text()
    assert "old figures" not in readme and readme.startswith("# Title") and readme.endswith("End.\n")
    assert "`make demo`: 9 min 35 s in all" in readme  # 100 + 40 + 125 + 30 + 200 + 80 s
    assert "| DPO β=0.1 (step 72) | 0.812 ± 0.004 | 12.38 ± 0.25 | 0.688 ± 0.031 | 0.938 ± 0.015 | 17.5 |" in readme
    assert "step 36" not in readme  # final models only
    docs = (tmp_path / "docs/results.md").read_text()
    assert "SFT 2 min 05 s" in docs and "| SFT | 0.512 ± 0.010 |" in docs
    (tmp_path / "runs").rename(tmp_path / "elsewhere")
    result = run_python(["-m", "tools.results", "--root", tmp_path], REPO, timeout=120)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error: no results yet")


def test_claims_against_the_dpo_curve_say_only_what_survives_the_spread_worked_by_hand(tmp_path):
    """SFT at (0, 0.5 ± 0.01); DPO means (2, 0.7 ± 0.03) and (10, 0.9 ± 0.04). RLOO A at KL 1: the curve 0.6 ±
    0.0158, A 0.7 ± 0.01: +0.1 ± 0.0187, above. RLOO B at KL 6: the curve 0.8 ± 0.025, B 0.78 ± 0.02: -0.02 ± 0.032,
    within noise. RLOO C at KL 12: past DPO's range. Unlikelihood, one seed: named, not compared."""
    from tools.results import claims_against_the_dpo_curve

    columns = ["setting", "label", "method", "loss_type", "label_noise", "num_seeds", "runs", "kl_mean", "kl_se",
               "reward_mean", "reward_se"]
    groups = [("d1", "DPO β=1", "dpo", "sigmoid", 2.0, 0.1, 0.7, 0.03), ("d2", "DPO β=0.1", "dpo", "sigmoid", 10.0,
                                                                          0.5, 0.9, 0.04),
              ("a", "RLOO A", "rloo", "classifier", 1.0, 0.1, 0.7, 0.01),
              ("b", "RLOO B", "rloo", "classifier", 6.0, 0.5, 0.78, 0.02),
              ("c", "RLOO C", "rloo", "reward_model", 12.0, 1.0, 0.95, 0.01)]
    path = tmp_path / "frontier_seeds.csv"
    with path.open("w") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        for setting, label, method, loss, kl, kl_se, reward, reward_se in groups:
            writer.writerow({"setting": setting, "label": label, "method": method, "loss_type": loss,
                             "label_noise": 0.0, "num_seeds": 3, "runs": f"{setting}-0 {setting}-1 {setting}-2",
                             "kl_mean": kl, "kl_se": kl_se, "reward_mean": reward, "reward_se": reward_se})
    rows = [{"run": "sft", "method": "sft", "is_final": True, "reward": 0.5, "reward_sem": 0.01, "kl": 0.0},
            {"run": "ul", "method": "unlikelihood", "loss_type": "unlikelihood", "alpha": 0.1, "is_final": True,
             "reward": 0.6, "kl": 1.5}]
    lines = claims_against_the_dpo_curve(path, rows)
    assert lines[2:] == [
        "- RLOO A (3 seeds): KL 1.00 ± 0.10, reward 0.700 ± 0.010; the DPO curve there 0.600 ± 0.016: +0.100 ± 0.019, "
        "above the DPO curve.",
        "- RLOO B (3 seeds): KL 6.00 ± 0.50, reward 0.780 ± 0.020; the DPO curve there 0.800 ± 0.025: -0.020 ± 0.032, "
        "within noise of the DPO curve.",
        "- RLOO C (3 seeds): KL 12.00 ± 1.00, reward 0.950 ± 0.010: past DPO's largest mean KL (10.00), no DPO point "
        "to compare with.",
        "- One training seed, so not compared: Unlikelihood α=0.1."]
