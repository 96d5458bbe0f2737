"""FSDP on 2 CPU processes, launched as users launch it: `accelerate launch --config_file` with the CPU variant of
configs/accelerate/fsdp.yaml (use_cpu, no mixed precision, 2 processes, everything else as shipped). accelerate
applies FSDP only to processes on GPUs: on the CPU it keeps the FSDP plugin unused and trains plain data-parallel,
saying nothing. Every training stage (SFT, DPO, DPO with LoRA, the reward model, RL) therefore stops with one line,
before anything is written, instead of training something other than what the launch asked for."""

import pytest
import yaml

from tests.conftest import REPO, TRAINING_ON_CPU, snapshot, tiny_workspace
from tests.helpers import launch

REFUSAL = ("error: this launch asks for FSDP, but accelerate {version} shards only processes on GPUs: on the CPU each "
           "process would train the whole model unsharded (plain data-parallel). On a CPU, launch with "
           "configs/accelerate/ddp.yaml (the same training); FSDP needs GPUs that torch sees")


@pytest.fixture(scope="module")
def fsdp_on_cpu(tmp_path_factory):
    """configs/accelerate/fsdp.yaml as shipped, but for 2 CPU processes."""
    config = yaml.safe_load((REPO / "configs/accelerate/fsdp.yaml").read_text())
    assert config["distributed_type"] == "FSDP"
    config.update(use_cpu=True, mixed_precision="no", num_processes=2)
    path = tmp_path_factory.mktemp("accelerate") / "fsdp_cpu.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# The shipped tiny configs with what a user passes on 2 CPU processes: half the per-device batch where the config's
# global batch is one process's whole batch, 2 steps, no tracking.
STAGES = {
    "sft": ["sft.py", "sft", "--per_device_train_batch_size", 16],
    "dpo": ["dpo.py", "dpo", "--sweep", "beta=0.1"],
    "dpo-lora": ["dpo.py", "dpo", "--sweep", "beta=0.1", "--use_peft", "true"],
    "reward_model": ["reward_model.py", "reward_model", "--per_device_train_batch_size", 16],
    "rl": ["rl.py", "rl", "--sweep", "method=rloo,reward=classifier,beta=0.05", "--per_device_train_batch_size", 16],
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_training_stage_under_fsdp_on_the_cpu_is_refused_before_anything_is_written(stage, fsdp_on_cpu,
                                                                                      tiny_pipeline, tmp_path):
    import accelerate

    script, config, *flags = STAGES[stage]
    workspace = tiny_workspace(tiny_pipeline, config, tmp_path / "workspace")
    before = snapshot(workspace)
    result = launch(script, "--config", REPO / "configs/tiny" / f"{config}.yaml", *flags, "--max_steps", 2,
                    "--report_to", "none", *TRAINING_ON_CPU, cwd=workspace, config_file=fsdp_on_cpu, check=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [REFUSAL.format(version=accelerate.__version__)], result.stderr[-3000:]
    assert "]: Traceback" not in result.stderr  # no process's own traceback (the launcher sums up the exit codes)
    assert snapshot(workspace) == before
