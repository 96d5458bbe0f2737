"""The sentiment task's data: reviews in (IMDb's or anyone's, string labels mapped by name, `<br />` removed), prompts
out (review prefixes of 2 to 8 policy tokens, as in the DPO paper's IMDb experiment, section 6.1)."""

from __future__ import annotations

import dataclasses
import logging
import re

import numpy as np

from ...errors import PipelineError
from ...data import Prompt, decode_tokens, load_texts

logger = logging.getLogger(__name__)

_HTML_BREAK = re.compile(r"<br\s*/?>", flags=re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


def clean_review(text: str) -> str:
    """Remove HTML line breaks (IMDb reviews are full of `<br />`) and collapse runs of white space."""
    return _WHITESPACE.sub(" ", _HTML_BREAK.sub(" ", text)).strip()


# String class labels users' files carry (IMDb's CSV has positive/negative, Rotten Tomatoes fresh/rotten), mapped to
# the 0/1 of the hub's IMDb; matched case-insensitively. Integer labels are kept as they are.
POSITIVE_LABEL_NAMES = ("positive", "pos", "fresh", "1")
NEGATIVE_LABEL_NAMES = ("negative", "neg", "rotten", "0")


def label_to_class(value, column: str, source: str) -> int:
    """0/1 class of one label value: an integer as it is, a string by name (positive/pos/fresh -> 1,
    negative/neg/rotten -> 0, any case). Anything else is a `PipelineError` naming the value and the column."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        name = value.strip().lower()
        if name in POSITIVE_LABEL_NAMES:
            return 1
        if name in NEGATIVE_LABEL_NAMES:
            return 0
    raise PipelineError(
        f"label_column: {source} has the label {value!r} in column {column}, which is not a class: use integers, or "
        f"the names {'/'.join(POSITIVE_LABEL_NAMES[:3])} and {'/'.join(NEGATIVE_LABEL_NAMES[:3])}"
    )


def load_reviews(name_or_path: str, split: str, config_name: str | None = None, text_column: str = "text",
                 label_column: str | None = "label", field_name: str = "dataset_name", clean: bool = True):
    """Load one split of a review dataset as a `datasets.Dataset` with `text` (and integer `label`) columns.

    `name_or_path` is a hub id (`stanfordnlp/imdb`), a folder with `<split>.jsonl`/`.csv`/`.parquet` files or one
    saved with `save_to_disk`, or a single data file. Columns of other names are mapped with `text_column` and
    `label_column`; string labels are mapped by name (`label_to_class`). With `clean`, HTML line breaks are removed
    and white space collapsed (IMDb's reviews are full of `<br />`); empty texts are dropped (`data.load_texts`).
    """
    source = f"{name_or_path} ({split})"
    labels = None
    if label_column:
        labels = {label_column: lambda values: [label_to_class(value, label_column, source) for value in values]}
    return load_texts(name_or_path, split, config_name, text_column, clean_review if clean else str.strip,
                      field_name, extra_columns=labels, rename={label_column: "label"} if label_column else None)


def draw_prefix_lengths(count: int, min_tokens: int, max_tokens: int, seed: int) -> np.ndarray:
    """`count` prefix lengths drawn uniformly from {min_tokens, ..., max_tokens} (both ends included), seeded."""
    return np.random.default_rng(seed).integers(min_tokens, max_tokens + 1, size=count)


def whole_character_prefix_length(tokenizer, token_ids: list[int], length: int, min_tokens: int, max_tokens: int,
                                  full_text: str | None = None) -> int | None:
    """A prefix length near `length` whose tokens end on a whole character, or None.

    Byte-level BPE (GPT-2's) splits a multi-byte UTF-8 character over several tokens, so a prefix can end inside
    one, and its text then ends in U+FFFD ("It doesn\ufffd"). Such a prefix is shortened token by token, down to
    `min_tokens`, and failing that lengthened up to `max_tokens`; a prefix must also leave at least one token of the
    review to complete. A prefix is whole when its text starts the text of all of the review's tokens.
    """
    candidates = [*range(length, min_tokens - 1, -1), *range(length + 1, max_tokens + 1)]
    for candidate in candidates:
        if candidate >= len(token_ids):
            continue
        text = decode_tokens(tokenizer, token_ids[:candidate])
        if "\ufffd" not in text:
            return candidate
        full_text = decode_tokens(tokenizer, token_ids) if full_text is None else full_text
        if full_text.startswith(text):  # the review itself has U+FFFD there
            return candidate
    return None


def build_prompts(reviews, tokenizer, num_prompts: int, min_tokens: int, max_tokens: int, seed: int,
                  split: str = "", first_index: int = 0, warn: bool = True) -> list[Prompt]:
    """Take `num_prompts` review prefixes, as balanced over the review classes as the data allows.

    Reviews are visited in a seeded random order; each visited review gets a prefix length drawn uniformly from
    [min_tokens, max_tokens] (moved to the nearest whole-character boundary, see `whole_character_prefix_length`)
    and gives the prompt `tokens[:length]` if the review is longer than that (a prefix must leave something to
    complete). Each class gets an equal quota, so that positive and negative reviews are both represented, and the
    classes are interleaved so that any leading slice of the prompts is balanced too. Prompts are numbered from
    `first_index`.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(reviews)).tolist()
    lengths = draw_prefix_lengths(len(reviews), min_tokens, max_tokens, seed + 1)
    labels = np.asarray(reviews["label"]) if "label" in reviews.column_names else np.zeros(len(reviews), int)
    classes = sorted(set(labels.tolist()))
    quota = {label: num_prompts // len(classes) + (1 if i < num_prompts % len(classes) else 0)
             for i, label in enumerate(classes)}
    taken = {label: 0 for label in classes}
    texts = reviews["text"]
    prompts: list[Prompt] = []
    too_short = no_whole_prefix = 0
    chunk = 1024  # reviews tokenized at a time, in visiting order: only the reviews needed are tokenized
    for chunk_start in range(0, len(order), chunk):
        if len(prompts) == num_prompts:
            break
        visit = order[chunk_start : chunk_start + chunk]
        encoded = tokenizer([texts[i] for i in visit], add_special_tokens=False)["input_ids"]
        for position, source_index, token_ids in zip(range(chunk_start, chunk_start + len(visit)), visit, encoded):
            if len(prompts) == num_prompts:
                break
            label = int(labels[source_index])
            if taken[label] >= quota[label]:
                continue
            drawn = int(lengths[position])
            if len(token_ids) <= drawn:
                too_short += 1
                continue
            length = whole_character_prefix_length(tokenizer, token_ids, drawn, min_tokens, max_tokens)
            if length is None:
                no_whole_prefix += 1
                continue
            prefix = tuple(token_ids[:length])
            prompts.append(Prompt(len(prompts), source_index, label, decode_tokens(tokenizer, prefix), length, prefix,
                                  split))
            taken[label] += 1
    if not prompts:
        raise PipelineError("no review is longer than its prefix: the dataset has no usable prompts")
    if len(prompts) < num_prompts and warn:
        reasons = []
        if too_short:
            reasons.append(f"{too_short} are no longer than the prefix length drawn for them")
        if no_whole_prefix:
            reasons.append(f"{no_whole_prefix} have no prefix of {min_tokens}-{max_tokens} tokens that ends on a "
                           "whole character")
        reasons += [f"class {label} has {taken[label]} usable reviews for its quota of {quota[label]} (prompts are "
                    "balanced over classes)" for label in classes if taken[label] < quota[label]]
        logger.warning("Made %d of the %d prompts asked for from the %d reviews%s: %s", len(prompts), num_prompts,
                       len(reviews), f" of split '{split}'" if split else "", "; ".join(reasons))
    # Interleave the classes so any leading slice of the prompts is balanced too; the rest keep their order.
    by_class = {label: [p for p in prompts if p.label == label] for label in classes}
    paired = min(len(group) for group in by_class.values())
    interleaved = [p for group in zip(*(group[:paired] for group in by_class.values())) for p in group]
    leftover = {p.prompt_index for group in by_class.values() for p in group[paired:]}
    interleaved += [p for p in prompts if p.prompt_index in leftover]
    return [dataclasses.replace(p, prompt_index=first_index + i) for i, p in enumerate(interleaved)]
