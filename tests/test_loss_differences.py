"""The differences from the DPO reference code that docs/experiment.md names, measured by `python -m
tools.loss_differences` on one fixed batch: TRL's IPO is the reference's IPO on per-token averaged log-ratios, not on
the summed ones; TRL's "robust" loss is not the reference's conservative DPO (cDPO)."""

import pytest

from pathlib import Path

from tools.loss_differences import formatted, measure


def test_trl_ipo_averages_per_token_and_robust_is_not_cdpo():
    figures = measure()
    doc = (Path(__file__).parents[1] / "docs" / "experiment.md").read_text()
    assert formatted(figures) in doc  # the doc quotes the command's output, never numbers typed by hand
    # TRL's IPO matches the averaged form, and is far from the summed form the reference code trains on
    assert figures["ipo_trl"] == pytest.approx(figures["ipo_reference_averaged"], rel=1e-4)
    assert abs(figures["ipo_trl"] - figures["ipo_reference_summed"]) > 1.0
    # our transcription of TRL's robust loss is TRL's (so its gradient is), and that gradient is not cDPO's
    assert figures["robust_trl"] == pytest.approx(figures["robust_transcribed"], rel=1e-4)
    assert abs(figures["robust_gradient"] - figures["cdpo_gradient"]) > 0.01
