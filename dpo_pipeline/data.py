"""Loading data as users have it: one split of a dataset from the Hugging Face Hub, a local folder (`<split>.jsonl`,
`.csv` or `.parquet` files, or one saved with `save_to_disk`) or a single local file; and the prompts every task's
sampling starts from, as token ids."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from .cli import PipelineError, require_source

# datasets' builder for each local file format a split may come in.
LOCAL_FORMATS = {"jsonl": "json", "json": "json", "csv": "csv", "parquet": "parquet"}


def _is_blank(file: Path) -> bool:
    """No data in the file: empty, or white space only (read in chunks: dataset files can be large)."""
    with file.open("rb") as handle:
        while chunk := handle.read(1 << 16):
            if chunk.strip():
                return False
    return True


def _local_split_files(path: Path, split: str, field_name: str) -> tuple[str, list[Path]]:
    """The datasets builder and the files of one split of a local dataset: the file itself, or a folder's
    `<split>.<format>` files (any split name: IMDb's `unsupervised` too)."""
    files = [path] if path.is_file() else sorted(file for file in path.glob(f"{split}.*") if file.is_file())
    if not files:
        found = sorted(file.name for file in path.iterdir() if file.is_file())
        raise PipelineError(f"{field_name}: {path} has no file for split '{split}' ({split}.jsonl, .csv or .parquet); "
                            f"it has {', '.join(found) or 'no files'}")
    builders = {LOCAL_FORMATS.get(file.suffix.lstrip(".").lower()) for file in files}
    if None in builders or len(builders) != 1:
        raise PipelineError(f"{field_name}: cannot read {', '.join(map(str, files))}: a split is one .jsonl, .json, "
                            ".csv or .parquet file")
    if all(_is_blank(file) for file in files):
        raise PipelineError(f"{field_name}: split '{split}' of {path} is empty ({files[0]})")
    return builders.pop(), files


def _offline_hub_snapshot(repo_id: str) -> str | None:
    """With HF_HUB_OFFLINE=1, the folder of the dataset's files in the Hub cache (what `hf download` leaves), or None.

    Offline, `datasets.load_dataset(<hub id>)` reloads only the Arrow files it prepared itself during an online load;
    a dataset fetched with `hf download` (files in the Hub cache, nothing prepared) is then "unreachable". Its
    snapshot folder loads as a local dataset, with the repo's own configs, split names and columns."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    if not constants.HF_HUB_OFFLINE:
        return None
    try:
        return snapshot_download(repo_id, repo_type="dataset", local_files_only=True)
    except (LocalEntryNotFoundError, ValueError, OSError):
        return None


def load_split(name_or_path: str, split: str, config_name: str | None = None, field_name: str = "dataset_name"):
    """One split of a dataset as a `datasets.Dataset`, every failure a one-line `PipelineError` naming `field_name`.

    `name_or_path` is a hub id (`stanfordnlp/imdb`), a folder with `<split>.<format>` files (any split name), a folder
    saved with `save_to_disk`, or a single data file (then it is the split, whatever its name).
    """
    import datasets

    require_source(name_or_path, "dataset", field_name)
    path = Path(name_or_path)
    saved_to_disk = path.is_dir() and (path / "dataset_dict.json").exists()
    if path.exists() and not saved_to_disk:
        builder, files = _local_split_files(path, split, field_name)

    def read():
        if saved_to_disk:
            return datasets.load_from_disk(str(path))[split]
        if path.exists():
            return datasets.load_dataset(builder, data_files={split: [str(file) for file in files]})[split]
        try:
            return datasets.load_dataset(name_or_path, name=config_name, split=split)
        except ConnectionError:
            snapshot = _offline_hub_snapshot(name_or_path)
            if snapshot is None:
                raise
            return datasets.load_dataset(snapshot, name=config_name, split=split)

    try:
        dataset = read()
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
    return dataset


def require_columns(dataset, columns, name_or_path: str, split: str, field_name: str = "dataset_name") -> None:
    missing = [column for column in columns if column not in dataset.column_names]
    if missing:
        raise PipelineError(f"{field_name}: {name_or_path} ({split}) has no column(s) {', '.join(missing)}; "
                            f"it has {', '.join(dataset.column_names)}")


@dataclass(frozen=True)
class Prompt:
    """A review prefix: its policy token ids and their text, and the review (split, row and class) it came from.

    The token ids are the review's own first `prefix_tokens` tokens; sampling continues exactly these ids (never a
    re-tokenization of the text, which can differ), and they are what DPO trains on.
    """

    prompt_index: int
    source_index: int
    label: int
    prompt: str
    prefix_tokens: int
    prompt_token_ids: tuple[int, ...] = ()
    split: str = ""

    def to_record(self) -> dict:
        record = asdict(self)
        record["prompt_token_ids"] = list(self.prompt_token_ids)
        return record


def decode_tokens(tokenizer, token_ids) -> str:
    """The text of `token_ids` exactly as the tokenizer's bytes give it: special tokens (EOS) dropped, and no
    "clean-up" of spaces before punctuation, which would make the text differ from what the ids spell."""
    return tokenizer.decode(list(token_ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


def chat_token_ids(tokenizer, messages, add_generation_prompt: bool = True) -> list[int]:
    """The token ids of a conversation rendered by the tokenizer's chat template (with the turn that opens the
    assistant's answer, by default), as TRL renders prompts."""
    rendered = tokenizer.apply_chat_template(list(messages), add_generation_prompt=add_generation_prompt, tokenize=True)
    return list(rendered["input_ids"] if hasattr(rendered, "keys") else rendered)


def conversation_text(messages) -> str:
    """A conversation as plain text for people and judges: "User: ...\\nAssistant: ..."."""
    return "\n".join(f"{message['role'].capitalize()}: {message['content']}" for message in messages)
