"""The DPO sweep: entries are sets of DPOConfig overrides, converted as the command line converts them."""

import pytest

from dpo_pipeline.errors import PipelineError
from dpo_pipeline.arguments import DPOTrainingConfig
from dpo_pipeline.methods.dpo import check_dpo_settings
from dpo_pipeline.runs import sweep_run_name
from dpo_pipeline.sweep import apply_overrides, parse_sweep_entry, plan_sweep


@pytest.fixture
def base_config(tmp_path):
    return DPOTrainingConfig(output_dir=str(tmp_path), bf16=False, beta=0.1, report_to="none")


def test_entries_parse_into_overrides_and_folder_names():
    overrides = parse_sweep_entry(" beta=0.05 , loss_type=ipo ")
    assert overrides == {"beta": "0.05", "loss_type": "ipo"}
    assert sweep_run_name(overrides) == "beta-0.05_loss_type-ipo"
    assert sweep_run_name({"beta": "1.0", "label_smoothing": "0.1"}) == "beta-1.0_label_smoothing-0.1"


@pytest.mark.parametrize("entry", ["", "beta", "beta=", "=0.1", "beta=0.1,,loss_type"])
def test_malformed_entries_are_errors(entry):
    with pytest.raises(PipelineError):
        parse_sweep_entry(entry)


def test_overrides_are_typed_and_leave_the_base_config_alone(base_config):
    run = apply_overrides(base_config, {"beta": "0.05", "loss_type": "robust", "label_smoothing": "0.1"})
    assert run.beta == 0.05 and isinstance(run.beta, float)
    assert run.loss_type == ["robust"]
    assert run.label_smoothing == 0.1
    assert base_config.beta == 0.1 and base_config.loss_type == ["sigmoid"]


@pytest.mark.parametrize(
    "overrides, message",
    [({"betta": "0.1"}, r"not a DPO\w*Config field"), ({"beta": "high"}, "not a valid value"),
     ({"beta": "-1"}, "positive"), ({"beta": "nan"}, "positive"), ({"output_dir": "x"}, r"not a DPO\w*Config field"),
     ({"loss_type": "nonexistent"}, "not a loss of TRL's DPOTrainer"),
     ({"loss_type": "robust", "label_smoothing": "0.7"}, "label_smoothing < 0.5")],
)
def test_bad_overrides_are_one_line_errors(base_config, overrides, message):
    """A sweep entry is checked as the same settings given as flags are (`check_dpo_settings`), before any run."""
    entry = ",".join(f"{key}={value}" for key, value in overrides.items())
    with pytest.raises(PipelineError, match=message):
        plan_sweep(base_config, [entry], "sweep", check=lambda args, where: check_dpo_settings(args, {}, where))


def test_compilation_can_be_turned_off_by_an_override(base_config):
    """TrainingArguments turns torch_compile back on when a compile backend is set, as its first __post_init__ does."""
    compiled = apply_overrides(base_config, {"torch_compile": "true"})
    assert compiled.torch_compile and compiled.torch_compile_backend
    assert not apply_overrides(compiled, {"torch_compile": "false"}).torch_compile


def test_overrides_apply_to_sft_configs_too(tmp_path):
    from dpo_pipeline.arguments import SFTTrainingConfig

    sft_config = SFTTrainingConfig(output_dir=str(tmp_path), bf16=False, report_to="none")
    assert apply_overrides(sft_config, {"per_device_train_batch_size": "4"}).per_device_train_batch_size == 4
