"""make results writes the README's and docs/results.md's figures from the files the demos leave, never by hand."""

import csv
import re

import pytest

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
    from dpo_pipeline.report import frontier_columns

    (tmp_path / "configs/tiny").mkdir(parents=True)
    (tmp_path / "configs/tiny/dpo.yaml").write_text("sweep:\n  - beta=0.1\n")
    eval_dir = tmp_path / "runs/tiny/eval"
    eval_dir.mkdir(parents=True)
    with (eval_dir / "frontier.csv").open("w") as file:
        writer = csv.DictWriter(file, fieldnames=frontier_columns(), extrasaction="ignore")
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


CLAIM = re.compile(
    r"- (?P<label>.+) \((?P<seeds>\d+) seeds\): KL (?P<kl>\S+) ± (?P<kl_se>\S+), reward (?P<reward>\S+) ± "
    r"(?P<reward_se>\S+); the DPO curve there between (?P<lower>\S+) \(chord\) and (?P<upper>\S+) \(upper bound\); "
    r"reward minus chord (?P<d_lower>\S+) ± (?P<se_lower>\S+) \(t = (?P<t_lower>\S+)\), minus upper bound "
    r"(?P<d_upper>\S+) ± (?P<se_upper>\S+) \(t = (?P<t_upper>\S+)\); critical t (?P<t_crit>\S+) \((?P<df>\d+) df\): "
    r"(?P<verdict>.+)\.$")


DELTA_METHOD = 0.04


def test_claims_against_the_dpo_curve_say_only_what_survives_every_error_worked_by_hand(tmp_path):
    """SFT (KL 0 exact, reward 0.5 ± 0.02 over prompts); DPO, 3 seeds each: (2 ± 0.2, 0.7 ± 0.03), (10 ± 0.5,
    0.9 ± 0.04); a label-noise DPO run that must change nothing. By the delta method (the Monte Carlo's errors
    agree within 4%, see the tolerance below):

    RLOO A, KL 1 ± 0.1, reward 0.73 ± 0.01: the chord y_0 + (y_1 - y_0) k / x_1 = 0.6 has derivatives 1/2, 1/2 in
    y_0, y_1, 0.1 in k, -0.05 in x_1: error^2 = 0.01^2 + 0.01^2 + 0.015^2 + 0.01^2 + 0.01^2 = 6.25e-4, se 0.025,
    t = 0.13 / 0.025 = 5.2 > 4.30. The upper bound, the next chord extended back, y_1 + (y_2 - y_1)(k - x_1) /
    (x_2 - x_1) = 0.675: derivatives 9/8, -1/8 in y_1, y_2, 0.025 in k, -9/64 * 0.2 = -0.028125 in x_1, 1/64 * 0.2
    = 0.003125 in x_2: error^2 = 1e-4 + 0.03375^2 + 0.005^2 + 0.0025^2 + 0.005625^2 + 0.0015625^2 = 1.3044e-3,
    se 0.036117, t = 0.055 / 0.036117 = 1.52: over the chord, not clear of the upper bound (the old rule said above).
    RLOO B, KL 6 ± 0.5, reward 0.78 ± 0.02: chord 0.8, derivatives 1/2, 1/2, 0.025 in k, -1/16 * 0.2 = -0.0125 in
    x_1 and in x_2: error^2 = 4e-4 + 2.25e-4 + 4e-4 + 1.5625e-4 + 6.25e-6 + 3.90625e-5 = 1.2266e-3, se 0.035022,
    t = -0.02 / 0.035022 = -0.57; the upper bound is the next point's 0.9 (the previous chord extended, 1.1, is
    higher): se sqrt(0.02^2 + 0.04^2) = 0.044721, t = -0.12 / 0.044721 = -2.68: within noise.
    RLOO C at KL 12: past DPO's range. RLOO D, as A with reward 0.9: t_upper = 0.225 / 0.036117 = 6.23, above.
    RLOO E and F, as B with reward 0.6: t_lower = -0.2 / 0.035022 = -5.71, t_upper = -0.3 / 0.044721 = -6.71; F, of
    3 seeds, is below (critical 4.30); E, of 2 seeds, has 1 df and critical 12.71: within noise.
    Unlikelihood, one seed: named, not compared."""
    from tools.results import claims_against_the_dpo_curve

    columns = ["setting", "label", "method", "loss_type", "label_noise", "num_seeds", "runs", "kl_mean", "kl_se",
               "reward_mean", "reward_se"]
    groups = [("d1", "DPO β=1", "dpo", 0.0, 3, 2.0, 0.2, 0.7, 0.03),
              ("d2", "DPO β=0.1", "dpo", 0.0, 3, 10.0, 0.5, 0.9, 0.04),
              ("dn", "DPO β=0.1 noise 0.4", "dpo", 0.4, 3, 5.0, 0.1, 0.3, 0.01),
              ("a", "RLOO A", "rloo", 0.0, 3, 1.0, 0.1, 0.73, 0.01),
              ("b", "RLOO B", "rloo", 0.0, 3, 6.0, 0.5, 0.78, 0.02),
              ("c", "RLOO C", "rloo", 0.0, 3, 12.0, 1.0, 0.95, 0.01),
              ("d", "RLOO D", "rloo", 0.0, 3, 1.0, 0.1, 0.9, 0.01),
              ("e", "RLOO E", "rloo", 0.0, 2, 6.0, 0.5, 0.6, 0.02),
              ("f", "RLOO F", "rloo", 0.0, 3, 6.0, 0.5, 0.6, 0.02)]
    path = tmp_path / "frontier_seeds.csv"
    with path.open("w") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        for setting, label, method, noise, seeds, kl, kl_se, reward, reward_se in groups:
            writer.writerow({"setting": setting, "label": label, "method": method,
                             "loss_type": "sigmoid" if method == "dpo" else "classifier", "label_noise": noise,
                             "num_seeds": seeds, "runs": " ".join(f"{setting}-{seed}" for seed in range(seeds)),
                             "kl_mean": kl, "kl_se": kl_se, "reward_mean": reward, "reward_se": reward_se})
    rows = [{"run": "sft", "method": "sft", "is_final": True, "reward": 0.5, "reward_sem": 0.02, "kl": 0.0},
            {"run": "ul", "method": "unlikelihood", "loss_type": "unlikelihood", "alpha": 0.1, "is_final": True,
             "reward": 0.6, "kl": 1.5}]
    intro, blank, *lines = claims_against_the_dpo_curve(path, rows)
    assert blank == "" and "t quantile with n − 1 degrees of freedom" in intro and "upper bound" in intro
    assert lines[2] == ("- RLOO C (3 seeds): KL 12.00 ± 1.00, reward 0.950 ± 0.010: past DPO's largest mean KL "
                        "(10.00), no DPO point to compare with.")
    assert lines[-1] == "- One training seed, so not compared: Unlikelihood α=0.1."
    claims = {match["label"]: match for match in map(CLAIM.match, lines[:2] + lines[3:-1])}
    within_bracket = "within the bracket of the DPO curve (over its chord, not clear of its upper bound)"
    expected = {  # label: (seeds, chord, upper bound, d, se, t to the chord, the same to the upper bound, df, verdict)
        "RLOO A": (3, 0.6, 0.675, 0.13, 0.025, 5.2, 0.055, 0.036117, 1.52, 2, within_bracket),
        "RLOO B": (3, 0.8, 0.9, -0.02, 0.035022, -0.57, -0.12, 0.044721, -2.68, 2, "within noise of the DPO curve"),
        "RLOO D": (3, 0.6, 0.675, 0.3, 0.025, 12.0, 0.225, 0.036117, 6.23, 2,
                   "above the DPO curve (clears its upper bound)"),
        "RLOO E": (2, 0.8, 0.9, -0.2, 0.035022, -5.71, -0.3, 0.044721, -6.71, 1, "within noise of the DPO curve"),
        "RLOO F": (3, 0.8, 0.9, -0.2, 0.035022, -5.71, -0.3, 0.044721, -6.71, 2,
                   "below the DPO curve (under its chord)"),
    }
    assert set(claims) == set(expected) and None not in claims.values()
    for label, (seeds, lower, upper, d_lower, se_lower, t_lower, d_upper, se_upper, t_upper, df, verdict) in \
            expected.items():
        claim = claims[label]
        assert (int(claim["seeds"]), int(claim["df"]), claim["verdict"]) == (seeds, df, verdict), label
        printed = {key: float(claim[key]) for key in ("lower", "upper", "d_lower", "d_upper", "se_lower", "se_upper",
                                                      "t_lower", "t_upper", "t_crit")}
        # Printed to 3 decimals (bounds, differences, errors) or 2 (t): half a unit of the last digit. The errors and
        # t also differ from the delta method's by up to 4%: the second-order terms it drops (the chord's 1 / x_1,
        # with x_1's error 10% of it, adds 2% to RLOO A's error) and the draws' 0.2%.
        assert [printed[key] for key in ("lower", "upper", "d_lower", "d_upper")] == pytest.approx(
            [lower, upper, d_lower, d_upper], abs=5e-4), label
        for key, value, rounding in (("se_lower", se_lower, 5e-4), ("se_upper", se_upper, 5e-4),
                                     ("t_lower", t_lower, 5e-3), ("t_upper", t_upper, 5e-3)):
            assert printed[key] == pytest.approx(value, abs=DELTA_METHOD * abs(value) + rounding), (label, key)
        assert printed["t_crit"] == pytest.approx({2: 4.303, 1: 12.706}[df], abs=5e-3)


def test_the_demo_spread_across_machines_worked_by_hand(tmp_path):
    """KL of one model on 4 CPU configurations: 1, 2, 3, 6. Mean 3, sd sqrt((4 + 1 + 0 + 9) / 3) = 2.1602; the 95%
    prediction interval of a 5th run: 3 ± t(3) sd sqrt(1 + 1/4) = 3 ± 3.182 x 2.1602 x 1.1180 = 3 ± 7.685. Quoted to
    the first significant digit of the sd: 0 decimals for 2.16, 2 for 0.016, 3 for 0.0076, and at most 3."""
    from tools.results import demo_spread, supported_decimals

    assert [supported_decimals(sd) for sd in (5.9, 2.16, 0.28, 0.016, 0.0076, 0.00001)] == [0, 0, 1, 2, 3, 3]
    path = tmp_path / "demo_spread.csv"
    path.write_text("# a comment\nconfiguration,commit,pairs,name,reward,kl,heldout_accuracy,win_rate,"
                    "mean_response_tokens\n" + "".join(f"c{i},x,10,beta-0.1,0.8,{kl},,0.9,20\n"
                                                       for i, kl in enumerate((1, 2, 3, 6))))
    kl = demo_spread(path)["beta-0.1"]["kl"]
    assert kl["mean"] == pytest.approx(3) and kl["sd"] == pytest.approx(2.1602, abs=1e-4)
    assert (kl["low"], kl["high"]) == pytest.approx((3 - 7.685, 3 + 7.685), abs=2e-3)
    assert kl["decimals"] == 0


def test_the_leaderboard_reads_each_method_along_its_own_curve_worked_by_hand(tmp_path):
    """SFT at (0, 0.5), exact. DPO's two settings (3 seeds): (2, 0.7) and (10, 0.9); RLOO with the true reward (3
    seeds): (4, 0.72) and (8, 0.8), errors 1e-4 on the rewards and 0 on the KLs so the figures are those of the
    lines. At KL 2: DPO 0.7, RLOO 0.5 + 0.22 x 2/4 = 0.61. At KL 5: DPO 0.7 + 0.2 x 3/8 = 0.775, RLOO 0.72 + 0.08/4
    = 0.74. At KL 10: DPO 0.9, RLOO — (its settings stop at 8). Ranked at KL 5: DPO, then RLOO, separated (their
    intervals, ± 4.303 x ~1e-4, are far apart). With RLOO's reward errors 0.02 it is "≈" DPO at KL 5."""
    from tools.results import leaderboard

    def write(reward_se):
        seeds = tmp_path / "frontier_seeds.csv"
        rows = [("beta-0.1", "DPO β=0.1", "dpo", 0.1, "sigmoid", 2.0, 0.7, 1e-4),
                ("beta-0.05", "DPO β=0.05", "dpo", 0.05, "sigmoid", 10.0, 0.9, 1e-4),
                ("rloo-a", "RLOO (true reward) β=0.05", "rloo", 0.05, "classifier", 4.0, 0.72, reward_se),
                ("rloo-b", "RLOO (true reward) β=0.01", "rloo", 0.01, "classifier", 8.0, 0.8, reward_se)]
        with seeds.open("w") as handle:
            handle.write("setting,label,method,beta,loss_type,label_smoothing,label_noise,num_seeds,seeds,runs,"
                         "reward_mean,reward_sd,reward_se,kl_mean,kl_sd,kl_se\n")
            for setting, label, method, beta, loss, kl, reward, se in rows:
                handle.write(f"{setting},{label},{method},{beta},{loss},,0.0,3,0 1 2,{setting},{reward},0,{se},{kl},"
                             "0,0\n")
        return seeds

    sft = {"run": "sft", "method": "sft", "reward": 0.5, "reward_sem": 0.0, "kl": 0.0, "is_final": True}
    lines = leaderboard(write(1e-4), [sft], tmp_path / "sweep")
    table = [line for line in lines if line.startswith("| 1 ") or line.startswith("| 2 ")]
    assert table[0].startswith("| 1 | DPO | 0.700 ± 0.000 | 0.775 ± 0.000 | 0.900 ± 0.000 | DPO β=0.05: 10.0, 0.900")
    assert table[1].startswith("| 2 | RLOO (true reward) | 0.610 ± 0.000 | 0.740 ± 0.000 | — |")
    assert "≈" not in "".join(table)
    close = [line for line in leaderboard(write(0.02), [sft], tmp_path / "sweep") if line.startswith("| 1 ")]
    assert close[0].split(" | ")[3] == "0.775 ± 0.000 ≈"  # RLOO's interval at KL 5 reaches DPO's


def test_make_methods_wall_time_and_its_steps_come_from_the_recorded_times(tmp_path):
    """The steps of make methods ran two at a time: its line says the recorded wall time, not their sum."""
    from tools.results import methods_timing

    assert methods_timing(tmp_path) == ""  # not finished once yet
    for step, seconds in {"methods": 1500, "methods-shard-0-of-2": 900, "methods-shard-1-of-2": 880,
                          "dpo-study": 250, "eval-methods": 300}.items():
        (tmp_path / f"{step}.seconds").write_text(f"{seconds}\n")
    line = methods_timing(tmp_path)
    assert line.startswith("`make methods`: 25 min 00 s of wall time (")
    assert ("methods-shard-0-of-2 15 min 00 s, methods-shard-1-of-2 14 min 40 s, dpo-study 4 min 10 s, "
            "eval-methods 5 min 00 s)") in line


def test_the_leaderboard_ranks_every_method_at_the_largest_kl_all_reach_and_reads_a_methods_own_settings(tmp_path):
    """DPO as above, (2, 0.7) and (10, 0.9); SimPO (γ=0.5, a column of its own in frontier_seeds.csv) at (1, 0.52)
    and (3, 0.58): it stops short of KL 5, so the methods are ranked at KL 2, where both have a reading: DPO 0.7,
    SimPO 0.52 + 0.06 x 1/2 = 0.55; SimPO's KL 5 and 10 cells are "—", its series named with its γ as a number."""
    from tools.results import leaderboard

    seeds = tmp_path / "frontier_seeds.csv"
    rows = [("beta-0.1", "DPO β=0.1", "dpo", 0.1, "", "sigmoid", 2.0, 0.7),
            ("beta-0.05", "DPO β=0.05", "dpo", 0.05, "", "sigmoid", 10.0, 0.9),
            ("simpo-a", "SimPO β=2 γ=0.5", "simpo", 2.0, "0.5", "simpo", 1.0, 0.52),
            ("simpo-b", "SimPO β=1 γ=0.5", "simpo", 1.0, "0.5", "simpo", 3.0, 0.58)]
    with seeds.open("w") as handle:
        handle.write("setting,label,method,beta,gamma,loss_type,label_smoothing,label_noise,num_seeds,seeds,runs,"
                     "reward_mean,reward_sd,reward_se,kl_mean,kl_sd,kl_se\n")
        for setting, label, method, beta, gamma, loss, kl, reward in rows:
            handle.write(f"{setting},{label},{method},{beta},{gamma},{loss},,0.0,3,0 1 2,{setting},{reward},0,1e-4,"
                         f"{kl},0,0\n")
    sft = {"run": "sft", "method": "sft", "reward": 0.5, "reward_sem": 0.0, "kl": 0.0, "is_final": True}
    lines = leaderboard(seeds, [sft], tmp_path / "sweep")
    assert "Ranked at KL 2, the largest of these KLs that every method reaches:" in lines[0]
    assert lines[2].startswith("| rank at KL 2 | method |")
    table = [line for line in lines if line.startswith("| 1 ") or line.startswith("| 2 ")]
    assert table[0].startswith("| 1 | DPO | 0.700 ± 0.000 | 0.775 ± 0.000 | 0.900 ± 0.000 |")
    assert table[1].startswith("| 2 | SimPO γ=0.5 | 0.550 ± 0.000 | — | — | SimPO β=1 γ=0.5: 3.0, 0.580")
