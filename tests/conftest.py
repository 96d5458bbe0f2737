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
