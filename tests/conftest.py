"""Tiny assets the tests build themselves (never the hub): a synthetic review corpus, a byte-level BPE tokenizer,
a 2-layer GPT-2 and a 1-layer sentiment classifier, made with the same functions the embedded default uses."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

POSITIVE_WORDS = ["great", "wonderful", "moving", "brilliant", "funny", "charming", "superb", "delightful"]
NEGATIVE_WORDS = ["awful", "boring", "dull", "terrible", "messy", "tedious", "clumsy", "lifeless"]
# Command-line overrides that train the tiny test models on the CPU, in float32, without progress bars: what a CPU
# user passes. Not --use_cpu: a launch of 2 processes must train data-parallel on a CPU without it.
TRAINING_ON_CPU = ["--bf16", "false", "--activation_checkpointing", "false", "--disable_tqdm", "true",
                   "--dataloader_pin_memory", "false"]
SUBJECTS = ["the film", "this movie", "the story", "the cast", "the script", "every scene", "the ending"]


def pytest_configure(config):
    """The machine's cores shared out between pytest-xdist's workers (`make test` runs 2): each worker, and each
    script it starts, computes with cores / workers threads. Left to itself every process would take all the cores,
    and two workers training side by side on a 2-core machine would run 4 busy threads on 2 cores: the suite took
    670 s that way and 390 s with one thread each."""
    cores = os.cpu_count() or 1
    # in a worker, xdist says how many there are; in the process that starts them, the -n option does
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT") or getattr(config.option, "numprocesses", None) or 1
    workers = cores if workers in ("auto", "logical") else int(workers)
    threads = str(max(1, cores // max(1, workers)))
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, threads)
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(autouse=True)
def _no_network_no_tracking(monkeypatch):
    """Tests never reach the hub or wandb's servers, whatever the machine they run on."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


def synthetic_review(rng: random.Random, label: int) -> str:
    words = POSITIVE_WORDS if label == 1 else NEGATIVE_WORDS
    first, second = rng.sample(words, 2)
    subject = rng.choice(SUBJECTS)
    review = f"{subject.capitalize()} is {first} and {second}, and {rng.choice(SUBJECTS)} is {rng.choice(words)}."
    return review + (" <br /><br />Really." if rng.random() < 0.2 else "")


def write_review_splits(folder: Path, train_size: int = 400, test_size: int = 80, seed: int = 0) -> dict:
    rng = random.Random(seed)
    splits = {}
    folder.mkdir(parents=True, exist_ok=True)
    for split, size in (("train", train_size), ("test", test_size)):
        rows = [{"text": synthetic_review(rng, i % 2), "label": i % 2} for i in range(size)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        splits[split] = rows
    return splits


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory):
    """Paths of: data/ (train/test.jsonl), policy-init/ (tokenizer + GPT-2 config), sft-model/ (random GPT-2
    weights), classifier/ (trained on the synthetic reviews, labels NEGATIVE/POSITIVE)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dpo_pipeline.tasks.sentiment.config import EmbeddedAssetsArguments
    from dpo_pipeline.tasks.sentiment.embedded import save_policy_init, train_classifier, train_tokenizer
    from dpo_pipeline.tasks.sentiment.reviews import clean_review

    root = tmp_path_factory.mktemp("tiny_assets")
    os.environ.setdefault("WANDB_MODE", "offline")
    splits = write_review_splits(root / "data")
    cleaned = {split: [{**row, "text": clean_review(row["text"])} for row in rows] for split, rows in splits.items()}
    args = EmbeddedAssetsArguments(output_dir=str(root), vocab_size=400, n_layer=2, n_embd=32, n_head=2,
                                   n_positions=64, classifier_epochs=15, classifier_hidden_size=32,
                                   classifier_layers=1, seed=0)
    tokenizer_object = train_tokenizer([row["text"] for row in cleaned["train"]], args.vocab_size)
    save_policy_init(tokenizer_object, args, root / "policy-init")
    metrics = train_classifier(tokenizer_object, cleaned, args, root / "classifier")

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(root / "policy-init")
    from transformers import AutoConfig

    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(root / "policy-init"))
    model.save_pretrained(root / "sft-model")
    tokenizer.save_pretrained(root / "sft-model")
    return {
        "root": root, "data": root / "data", "policy_init": root / "policy-init", "sft_model": root / "sft-model",
        "classifier": root / "classifier", "classifier_accuracy": metrics["test_accuracy"],
    }


def interrupt_after_checkpoint(monkeypatch, step: int) -> None:
    """Make the next in-process training run stop as a kill would, right after checkpoint-<step> is saved (and the
    older checkpoints cut down to their weights): the state on disk is the one a real interruption there leaves."""
    from dpo_pipeline.checkpoints import KeepResumeStateOfTheLatestCheckpoint

    on_save = KeepResumeStateOfTheLatestCheckpoint.on_save

    def on_save_then_stop(self, args, state, control, **kwargs):
        on_save(self, args, state, control, **kwargs)
        if state.global_step == step:
            raise KeyboardInterrupt

    monkeypatch.setattr(KeepResumeStateOfTheLatestCheckpoint, "on_save", on_save_then_stop)


@pytest.fixture(scope="module")
def pairs_dir(tiny_assets, tmp_path_factory):
    """The pairs the tiny SFT model sampled and the tiny classifier scored (preference_pairs.py, in process)."""
    import preference_pairs
    from tests.helpers import run_in_process

    out = tmp_path_factory.mktemp("generations") / "tiny"
    run_in_process(preference_pairs, "--model_name_or_path", tiny_assets["sft_model"],
                   "--classifier_name_or_path", tiny_assets["classifier"], "--dataset_name", tiny_assets["data"],
                   "--num_prompts", 12, "--completions_per_prompt", 4, "--max_new_tokens", 8,
                   "--generation_batch_size", 4, "--classifier_max_length", 64, "--output_dir", out, "--report_to",
                   "none", "--seed", 3)
    return out


# The folders each configs/tiny config writes into: a script's own output is left out of its workspace, so that a
# run checks its inputs as on a first run (an output folder of another config would stop it first).
TINY_OUTPUTS = {"sft": ["runs/tiny/sft"], "preference_pairs": ["generations/tiny"], "dpo": ["runs/tiny/dpo"],
                "reward_model": ["runs/tiny/reward_model"], "rl": ["runs/tiny/dpo"], "eval": ["runs/tiny/eval"]}


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_assets, tmp_path_factory):
    """A folder laid out as the configs/tiny configs expect, with every step's input in place: the embedded assets
    (.cache/embedded: data, classifier, gpt2-init), the SFT model (runs/tiny/sft), the pairs and held-out pairs
    (generations/tiny), a finished reward model (runs/tiny/reward_model) and a finished DPO run
    (runs/tiny/dpo/beta-0.1), each made by the step's own script on the tiny models (one training step)."""
    import shutil

    import dpo
    import preference_pairs
    import reward_model
    from dpo_pipeline.cli import run_script

    root = tmp_path_factory.mktemp("tiny_pipeline")
    embedded = root / ".cache" / "embedded"
    for name, source in (("data", "data"), ("classifier", "classifier"), ("gpt2-init", "policy_init")):
        shutil.copytree(tiny_assets[source], embedded / name)
    shutil.copytree(tiny_assets["sft_model"], root / "runs" / "tiny" / "sft")
    configs = REPO / "configs" / "tiny"
    made = root / "made"
    previous = Path.cwd()
    os.chdir(root)  # the configs name their inputs relative to the folder they run in
    try:
        run_script(preference_pairs.main, preference_pairs.dataclass_types(),
                   ["--config", str(configs / "pairs.yaml"), "--num_prompts", "16", "--heldout_prompts", "8",
                    "--output_dir", str(made / "pairs"), "--report_to", "none"])
        (root / "generations" / "tiny").mkdir(parents=True)
        for pairs in (made / "pairs").glob("*pairs*.jsonl"):
            shutil.copy(pairs, root / "generations" / "tiny" / pairs.name)
        one_step = ["--max_steps", "1", "--report_to", "none", *TRAINING_ON_CPU]
        run_script(reward_model.main, reward_model.dataclass_types(),
                   ["--config", str(configs / "reward_model.yaml"), *one_step])
        run_script(dpo.main, dpo.dataclass_types(), ["--config", str(configs / "dpo.yaml"), "--sweep", "beta=0.1",
                                                     *one_step])
    finally:
        os.chdir(previous)
    shutil.rmtree(made)
    return root


def tiny_workspace(tiny_pipeline: Path, script: str, into: Path) -> Path:
    """A copy of `tiny_pipeline` for `script` (sft, preference_pairs, dpo, reward_model, rl, eval) without the
    folder that script's configs/tiny config writes into."""
    import shutil

    shutil.copytree(tiny_pipeline, into, symlinks=True)
    for output in TINY_OUTPUTS[script]:
        shutil.rmtree(into / output, ignore_errors=True)
    return into


def snapshot(*roots: Path) -> dict:
    """Every file under `roots` with its size and modification time, and every folder: what 'nothing changed' is
    checked against."""
    return {str(path): (path.stat().st_size, path.stat().st_mtime_ns) if path.is_file() else "folder"
            for root in roots if root.exists() for path in sorted(root.rglob("*"))}
