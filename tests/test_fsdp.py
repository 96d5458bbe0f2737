"""The sharded launcher configs on 2 CPU processes, launched as users launch them: `accelerate launch --config_file`
with the CPU variant of a shipped config (use_cpu, no mixed precision, 2 processes, everything else as shipped).

- FSDP (configs/accelerate/fsdp.yaml): accelerate applies FSDP only to processes on GPUs; on the CPU it keeps the
  FSDP plugin unused and trains plain data-parallel, saying nothing. Every training stage (SFT, DPO, DPO with LoRA,
  the reward model, RL) therefore stops with one line, before anything is written.
- DeepSpeed ZeRO-2 / ZeRO-3 (zero2.yaml, zero3.yaml): an optional extra, not in requirements.txt. Installed, it
  trains on the CPU (its CPU accelerator, gloo); these tests then check that a DPO run reaches the one-process
  weights, that the final save is a plain model folder, and that a run killed after a checkpoint resumes to the
  same weights. Without deepspeed they are skipped."""

import importlib.util

import pytest
import torch
import yaml
from safetensors.torch import load_file

import dpo
from tests.conftest import REPO, TRAINING_ON_CPU, snapshot, tiny_workspace
from tests.helpers import launch, run_in_process

REFUSAL = ("error: this launch asks for FSDP, but accelerate {version} shards only processes on GPUs: on the CPU each "
           "process would train the whole model unsharded (plain data-parallel). On a CPU, launch with "
           "configs/accelerate/ddp.yaml (the same training); FSDP needs GPUs that torch sees")


def on_cpu(name, folder):
    """configs/accelerate/<name>.yaml as shipped, but for 2 CPU processes, written into `folder`."""
    config = yaml.safe_load((REPO / "configs/accelerate" / f"{name}.yaml").read_text())
    config.update(use_cpu=True, mixed_precision="no", num_processes=2)
    path = folder / f"{name}_cpu.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def fsdp_on_cpu(tmp_path_factory):
    return on_cpu("fsdp", tmp_path_factory.mktemp("accelerate"))


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


needs_deepspeed = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                                     reason="deepspeed is an optional extra, not installed here")
# 4 steps of 8 pairs (4 per process on 2, 4 x 2 accumulated on 1), a checkpoint at step 2.
DPO_FLAGS = ["--sweep", "beta=0.1", "--max_steps", 4, "--save_steps", 2, "--per_device_train_batch_size", 4,
             "--global_batch_size", 8, "--learning_rate", 1e-3, "--max_length", 32, "--logging_steps", 1,
             "--report_to", "none", *TRAINING_ON_CPU]
# The largest distance, per weight, of a 2-process run from the one-process run (measured: 2.4e-7 under ZeRO-2 and
# ZeRO-3, as under DDP: the order of the additions differs).
TOLERANCE = 1e-5


def dpo_inputs(tiny_assets, pairs_dir):
    return ["--model_name_or_path", tiny_assets["sft_model"], "--pairs_file", pairs_dir / "pairs.jsonl"]


@pytest.fixture(scope="module")
def one_process_weights(tiny_assets, pairs_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("one-process") / "dpo"
    run_in_process(dpo, *dpo_inputs(tiny_assets, pairs_dir), *DPO_FLAGS, "--output_dir", out)
    return load_file(out / "beta-0.1" / "model.safetensors")


def assert_same_weights(weights, reference):
    # ZeRO-2's save also writes the output layer that GPT-2 ties to its input embedding: a copy, equal to it
    extra = weights.keys() - reference.keys()
    assert extra <= {"lm_head.weight"} and reference.keys() <= weights.keys()
    if extra:
        assert torch.equal(weights["lm_head.weight"], weights["transformer.wte.weight"])
    for name, tensor in reference.items():
        torch.testing.assert_close(weights[name], tensor, rtol=0, atol=TOLERANCE, msg=name)


@needs_deepspeed
@pytest.mark.parametrize("name", ["zero2", "zero3"])
def test_dpo_under_deepspeed_on_two_cpu_processes_reaches_the_one_process_weights(name, tiny_assets, pairs_dir,
                                                                                  one_process_weights, tmp_path):
    from transformers import AutoModelForCausalLM

    launch("dpo.py", *dpo_inputs(tiny_assets, pairs_dir), *DPO_FLAGS, "--output_dir", tmp_path / "dpo",
           cwd=tmp_path, config_file=on_cpu(name, tmp_path))
    run_dir = tmp_path / "dpo" / "beta-0.1"
    assert (run_dir / "stage_complete.json").is_file() and not (run_dir / ".final-model.tmp").exists()
    weights = load_file(run_dir / "model.safetensors")  # whole tensors, gathered from the shards under ZeRO-3
    assert_same_weights(weights, one_process_weights)
    # A plain model folder: what eval.py and every later stage load
    loaded = AutoModelForCausalLM.from_pretrained(run_dir).state_dict()
    for tensor_name, tensor in weights.items():
        assert torch.equal(loaded[tensor_name], tensor), tensor_name


@needs_deepspeed
def test_a_zero3_run_killed_after_a_checkpoint_resumes_to_the_same_weights(tiny_assets, pairs_dir,
                                                                           one_process_weights, tmp_path):
    args = [*dpo_inputs(tiny_assets, pairs_dir), *DPO_FLAGS, "--output_dir", tmp_path / "dpo"]
    config = on_cpu("zero3", tmp_path)
    killed = launch("tests/stop_after_first_checkpoint.py", REPO / "dpo.py", *args, cwd=tmp_path, config_file=config,
                    check=False)
    run_dir = tmp_path / "dpo" / "beta-0.1"
    assert killed.returncode != 0
    assert (run_dir / "checkpoint-2").is_dir() and not (run_dir / "checkpoint-4").exists()
    assert list((run_dir / "checkpoint-2").glob("global_step*"))  # DeepSpeed's sharded optimizer state
    assert not (run_dir / "stage_complete.json").exists()
    saved_at = (run_dir / "checkpoint-2" / "model.safetensors").stat().st_mtime_ns
    resumed = launch("dpo.py", *args, cwd=tmp_path, config_file=config)
    assert f"Resuming from {run_dir / 'checkpoint-2'}" in resumed.stderr
    assert "holds weights only" not in resumed.stderr
    # Steps 3 and 4 only: a run started over would have written checkpoint-2 again
    assert (run_dir / "checkpoint-2" / "model.safetensors").stat().st_mtime_ns == saved_at
    assert_same_weights(load_file(run_dir / "model.safetensors"), one_process_weights)
