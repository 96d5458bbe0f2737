"""Reviews in, prompts out: loading (hub id or local folder), cleaning, and the 2-to-8-token review prefixes."""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .cli import PipelineError, require_source

logger = logging.getLogger(__name__)

_HTML_BREAK = re.compile(r"<br\s*/?>", flags=re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


def clean_review(text: str) -> str:
    """Remove HTML line breaks (IMDb reviews are full of `<br />`) and collapse runs of white space."""
    return _WHITESPACE.sub(" ", _HTML_BREAK.sub(" ", text)).strip()


def _is_blank(file: Path) -> bool:
    """No data in the file: empty, or white space only (read in chunks: dataset files can be large)."""
    with file.open("rb") as handle:
        while chunk := handle.read(1 << 16):
            if chunk.strip():
                return False
    return True


def load_reviews(name_or_path: str, split: str, config_name: str | None = None, text_column: str = "text",
                 label_column: str | None = "label", field_name: str = "dataset_name"):
    """Load one split of a review dataset as a `datasets.Dataset` with cleaned `text` (and `label`) columns.

    `name_or_path` is a hub id (`stanfordnlp/imdb`), a folder with `<split>.jsonl`/`.csv`/`.parquet` files or one
    saved with `save_to_disk`, or a single data file.
    """
    import datasets

    require_source(name_or_path, "dataset", field_name)
    path = Path(name_or_path)
    split_files = [path] if path.is_file() else sorted(path.glob(f"{split}.*")) if path.is_dir() else []
    if split_files and all(_is_blank(file) for file in split_files):
        raise PipelineError(f"{field_name}: split '{split}' of {name_or_path} is empty ({split_files[0]})")
    try:
        if path.is_dir() and (path / "dataset_dict.json").exists():
            dataset = datasets.load_from_disk(str(path))[split]
        elif path.is_file():
            suffix = path.suffix.lstrip(".")
            dataset = datasets.load_dataset({"jsonl": "json"}.get(suffix, suffix), data_files={split: str(path)})[split]
        else:
            dataset = datasets.load_dataset(name_or_path, name=config_name, split=split)
    except (KeyError, ValueError) as error:
        raise PipelineError(f"{field_name}: cannot load split '{split}' of {name_or_path}: {error}") from None
    except (OSError, ConnectionError) as error:
        raise PipelineError(f"{field_name}: cannot load {name_or_path}: {' '.join(str(error).split())}") from None
    except Exception as error:  # the datasets library's own errors on a malformed local file
        if not path.exists():
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        raise PipelineError(f"{field_name}: cannot load split '{split}' of {name_or_path}: {message}") from None
    if len(dataset) == 0:
        raise PipelineError(f"{field_name}: split '{split}' of {name_or_path} is empty")
    wanted = [text_column] + ([label_column] if label_column else [])
    missing = [column for column in wanted if column not in dataset.column_names]
    if missing:
        raise PipelineError(
            f"{field_name}: {name_or_path} ({split}) has no column(s) {', '.join(missing)}; "
            f"it has {', '.join(dataset.column_names)}"
        )
    dataset = dataset.select_columns(wanted)
    if text_column != "text":
        dataset = dataset.rename_column(text_column, "text")
    if label_column and label_column != "label":
        dataset = dataset.rename_column(label_column, "label")
    return dataset.map(lambda row: {"text": clean_review(row["text"] or "")}).filter(lambda row: len(row["text"]) > 0)


def draw_prefix_lengths(count: int, min_tokens: int, max_tokens: int, seed: int) -> np.ndarray:
    """`count` prefix lengths drawn uniformly from {min_tokens, ..., max_tokens} (both ends included), seeded."""
    return np.random.default_rng(seed).integers(min_tokens, max_tokens + 1, size=count)


@dataclass(frozen=True)
class Prompt:
    """A review prefix: the prompt text, its length in policy tokens, and the review (row and class) it came from."""

    prompt_index: int
    source_index: int
    label: int
    prompt: str
    prefix_tokens: int

    def to_record(self) -> dict:
        return asdict(self)


def build_prompts(reviews, tokenizer, num_prompts: int, min_tokens: int, max_tokens: int, seed: int) -> list[Prompt]:
    """Take `num_prompts` review prefixes, as balanced over the review classes as the data allows.

    Reviews are visited in a seeded random order; each visited review gets a prefix length drawn uniformly from
    [min_tokens, max_tokens] and gives the prompt `decode(tokens[:length])` if the review is longer than that
    (a prefix must leave something to complete). Classes take turns until each has its share, so that positive
    and negative reviews are both represented.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(reviews))
    lengths = draw_prefix_lengths(len(reviews), min_tokens, max_tokens, seed + 1)
    labels = np.asarray(reviews["label"]) if "label" in reviews.column_names else np.zeros(len(reviews), int)
    classes = sorted(set(labels.tolist()))
    quota = {label: num_prompts // len(classes) + (1 if i < num_prompts % len(classes) else 0)
             for i, label in enumerate(classes)}
    taken = {label: 0 for label in classes}
    texts = reviews["text"]
    prompts: list[Prompt] = []
    for position, source_index in enumerate(order.tolist()):
        if len(prompts) == num_prompts:
            break
        label = int(labels[source_index])
        if taken[label] >= quota[label]:
            continue
        token_ids = tokenizer(texts[source_index], add_special_tokens=False)["input_ids"]
        length = int(lengths[position])
        if len(token_ids) <= length:
            continue
        prompt_text = tokenizer.decode(token_ids[:length])
        prompts.append(Prompt(len(prompts), source_index, label, prompt_text, length))
        taken[label] += 1
    if len(prompts) < num_prompts:
        logger.warning("Only %d reviews are long enough for a prefix; asked for %d prompts", len(prompts), num_prompts)
    if not prompts:
        raise PipelineError("no review is longer than its prefix: the dataset has no usable prompts")
    # Interleave the classes so any leading slice of the prompts is balanced too.
    by_class = {label: [p for p in prompts if p.label == label] for label in classes}
    interleaved = [p for group in zip(*by_class.values()) for p in group]
    interleaved += [p for p in prompts if p not in set(interleaved)]
    return [Prompt(i, p.source_index, p.label, p.prompt, p.prefix_tokens) for i, p in enumerate(interleaved)]
