"""Preference data in every layout TRL's DPOTrainer takes, checked record by record with one-line errors.

    tokenized       prompt_ids, chosen_ids, rejected_ids         what preference_pairs.py samples; trained on as is
    standard        prompt, chosen, rejected: text               TRL tokenizes prompt + completion (+ EOS)
    conversational  prompt, chosen, rejected: lists of messages  TRL applies the tokenizer's chat template; the
                                                                 prompt may hold a multi-turn history
    implicit prompt chosen, rejected only (text or messages)     TRL takes their common beginning as the prompt

A source is a local JSONL file (errors name the line), or any dataset `data.load_split` reads: a hub id, a local
folder or file. UltraFeedback's layout (a text `prompt` beside conversations that repeat it) is read as an implicit
prompt, as TRL needs.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from .data import chat_token_ids, decode_tokens, load_split
from .errors import PipelineError
from .inputs import dataset_from_records, read_jsonl
from .pair_building import TEXT_COLUMNS, TOKENIZED_COLUMNS

logger = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant", "tool")
# Columns TRL's DPOTrainer reads besides the pair itself.
EXTRA_COLUMNS = ("tools", "chat_template_kwargs")


def _is_token_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(token, int) and not isinstance(token, bool) for token in value)


def _is_conversation(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(message, dict) for message in value)


def _check_conversation(value, key: str, where: str) -> None:
    for position, message in enumerate(value, start=1):
        if message.get("role") not in ROLES or not isinstance(message.get("content"), (str, list)):
            raise PipelineError(f"{where}: message {position} of {key} needs a role ({', '.join(ROLES)}) and a "
                                f"content, got {sorted(message)}")


def check_record(record: dict, where: str) -> str:
    """The layout of one record ("tokenized", "standard", "conversational"), or a one-line error."""
    if all(key in record for key in TOKENIZED_COLUMNS):
        for key in TOKENIZED_COLUMNS:
            if not _is_token_list(record[key]) or not record[key]:
                raise PipelineError(f"{where}: {key} is not a non-empty list of token ids")
        if record["chosen_ids"] == record["rejected_ids"]:
            raise PipelineError(f"{where}: chosen equals rejected")
        return "tokenized"
    missing = [key for key in ("chosen", "rejected") if key not in record]
    if missing:
        raise PipelineError(f"{where} lacks {', '.join(missing)}")
    keys = [key for key in TEXT_COLUMNS if key in record]
    if all(isinstance(record[key], str) for key in keys):
        if not record["chosen"].strip() or not record["rejected"].strip():
            raise PipelineError(f"{where} has an empty completion")
        layout = "standard"
    elif all(_is_conversation(record[key]) for key in keys):
        for key in keys:
            _check_conversation(record[key], key, where)
        layout = "conversational"
    else:
        kinds = ", ".join(f"{key} is {type(record[key]).__name__}" for key in keys)
        raise PipelineError(f"{where}: prompt, chosen and rejected must all be text or all be lists of messages "
                            f"({kinds})")
    if record["chosen"] == record["rejected"]:
        raise PipelineError(f"{where}: chosen equals rejected")
    return layout


def _as_implicit_prompt(record: dict) -> dict:
    """UltraFeedback's layout: a text prompt beside chosen/rejected conversations that start with it as their user
    turn. TRL reads such a record as an implicit prompt (the conversations' common beginning): the text is dropped."""
    if isinstance(record.get("prompt"), str) and _is_conversation(record["chosen"]) and \
            _is_conversation(record["rejected"]):
        return {key: value for key, value in record.items() if key != "prompt"}
    return record


def load_preferences(source: str, split: str = "train", config_name: str | None = None, max_pairs: int | None = None,
                     seed: int = 0, field_name: str = "pairs_file"):
    """The pairs of `source` as a `datasets.Dataset` of one layout (see the module's docstring), checked record by
    record, with only the columns TRL reads. A local .jsonl file is read line by line (errors name the line); any
    other source through `datasets`. `max_pairs` keeps a seeded random subset."""
    path = Path(source)
    if path.suffix == ".jsonl" or (not path.exists() and source.endswith(".jsonl")):
        records = read_jsonl(source, field_name)
        where = f"{field_name}: {source} record"
    else:
        records = load_split(source, split, config_name, field_name).to_list()
        where = f"{field_name}: {source} ({split}) record"
    records = [_as_implicit_prompt(record) for record in records]
    layouts = {check_record(record, f"{where} {number}") for number, record in enumerate(records, start=1)}
    if len(layouts) > 1:
        raise PipelineError(f"{field_name}: {source} mixes layouts ({', '.join(sorted(layouts))}); use one")
    (layout,) = layouts
    columns = TOKENIZED_COLUMNS if layout == "tokenized" else tuple(key for key in TEXT_COLUMNS if key in records[0])
    if layout == "tokenized":  # the text, where the pairs have it, is kept for reading and checking
        columns += tuple(key for key in TEXT_COLUMNS if all(key in record for record in records))
    columns += tuple(key for key in EXTRA_COLUMNS if layout != "tokenized" and key in records[0])
    if layout != "tokenized" and "prompt" not in columns and any("prompt" in record for record in records):
        raise PipelineError(f"{field_name}: {source} has a prompt in some records only")
    dataset = dataset_from_records([{key: record[key] for key in columns} for record in records], source, field_name)
    if max_pairs:
        dataset = dataset.shuffle(seed=seed).select(range(min(max_pairs, len(dataset))))
    return dataset


def is_tokenized(dataset) -> bool:
    return all(column in dataset.column_names for column in TOKENIZED_COLUMNS)


def is_conversational(dataset) -> bool:
    return not is_tokenized(dataset) and _is_conversation(dataset[0]["chosen"])


def prompt_column(dataset) -> str | None:
    """The column holding the prompts (None for an implicit prompt)."""
    if is_tokenized(dataset):
        return "prompt_ids"
    return "prompt" if "prompt" in dataset.column_names else None


def check_pairs_match_tokenizer(dataset, tokenizer, path: str, field_name: str = "pairs_file",
                                checked: int = 256) -> None:
    """Token ids are only meaningful with the tokenizer that made them: every id must be in the vocabulary, and the
    ids of the first `checked` pairs must spell their text fields (where the pairs have them). Conversations need a
    chat template."""
    if is_conversational(dataset) and not getattr(tokenizer, "chat_template", None):
        raise PipelineError(f"{field_name}: {path} holds conversations, and the model's tokenizer has no chat "
                            "template to render them: use a chat model (or set its tokenizer's chat_template)")
    if not is_tokenized(dataset):
        return
    vocabulary = len(tokenizer)
    for column in TOKENIZED_COLUMNS:
        for number, ids in enumerate(dataset[column], start=1):
            if min(ids) < 0 or max(ids) >= vocabulary:
                raise PipelineError(f"{field_name}: {path} record {number}: {column} has token ids outside the "
                                    f"{vocabulary}-token vocabulary of the model's tokenizer")
    if not all(column in dataset.column_names for column in TEXT_COLUMNS):
        return
    head = dataset.select(range(min(checked, len(dataset))))
    for number, record in enumerate(head, start=1):
        for ids_key, text_key in zip(TOKENIZED_COLUMNS, TEXT_COLUMNS):
            if decode_tokens(tokenizer, record[ids_key]) != record[text_key]:
                raise PipelineError(f"{field_name}: {path} record {number}: {ids_key} does not spell its {text_key} "
                                    "with the model's tokenizer: the pairs were sampled with another tokenizer")


def check_prompt_lengths(dataset, tokenizer, max_length: int | None, field_name: str, path: str) -> None:
    """A prompt of max_length tokens or more leaves no room for its completion, and TRL drops such a pair without a
    word: for token ids and text prompts it is an error naming the first such record; for conversations (rendered
    by the chat template) the pairs TRL will drop are counted in a warning."""
    column = prompt_column(dataset)
    if not max_length or column is None:
        return
    prompts = dataset[column]
    if is_tokenized(dataset):
        lengths = [len(ids) for ids in prompts]
    elif is_conversational(dataset):
        lengths = [len(chat_token_ids(tokenizer, prompt)) for prompt in prompts]
        dropped = sum(length >= max_length for length in lengths)
        if dropped:
            logger.warning("%d of the %d pairs of %s have a prompt of max_length %d tokens or more: TRL drops them",
                           dropped, len(dataset), path, max_length)
        return
    else:
        unique = list(dict.fromkeys(prompts))
        by_text = dict(zip(unique, map(len, tokenizer(unique, add_special_tokens=False)["input_ids"])))
        lengths = [by_text[prompt] for prompt in prompts]
    for number, length in enumerate(lengths, start=1):
        if length >= max_length:
            raise PipelineError(f"{field_name}: {path} record {number}: the prompt is {length} tokens, "
                                f"which leaves no room for a completion within max_length {max_length}")


def warn_of_truncation(dataset, max_length: int | None, path: str) -> None:
    """TRL's collator cuts a pair whose prompt + completion exceeds max_length: say how many are cut."""
    if not max_length or not is_tokenized(dataset):
        return
    cut = sum(1 for prompt, chosen, rejected in zip(*(dataset[c] for c in TOKENIZED_COLUMNS))
              if len(prompt) + max(len(chosen), len(rejected)) > max_length)
    if cut:
        logger.warning("%d of the %d pairs of %s are longer than max_length %d: TRL truncates their completions",
                       cut, len(dataset), path, max_length)


def source_fingerprint(source: str, split: str, config_name: str | None) -> str:
    """What identifies a run's pairs: the sha256 of a local file, or the hub id, config and split."""
    path = Path(source)
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(file.name.encode() + hashlib.sha256(file.read_bytes()).digest())
        return digest.hexdigest()
    return f"{source}:{config_name}:{split}"
