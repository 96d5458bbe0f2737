"""Loading data as users have it: one split of a dataset from the Hugging Face Hub, a local folder (`<split>.jsonl`,
`.csv` or `.parquet` files, or one saved with `save_to_disk`) or a single local file; and the prompts every task's
sampling starts from, as token ids."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import PipelineError
from .hub import require_source
from .inputs import load_local_split


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
    require_source(name_or_path, "dataset", field_name)
    path = Path(name_or_path)
    if path.exists():  # every local file is read through one place, whatever its bytes
        return load_local_split(path, split, field_name)
    import datasets

    def load_from_the_hub():
        try:
            return datasets.load_dataset(name_or_path, name=config_name, split=split)
        except ConnectionError:
            snapshot = _offline_hub_snapshot(name_or_path)
            if snapshot is None:
                raise
            return datasets.load_dataset(snapshot, name=config_name, split=split)

    try:
        dataset = load_from_the_hub()
    except (KeyError, ValueError) as error:
        raise PipelineError(f"{field_name}: cannot load split '{split}' of {name_or_path}: {error}") from None
    except (OSError, ConnectionError) as error:
        raise PipelineError(f"{field_name}: cannot load {name_or_path}: {' '.join(str(error).split())}") from None
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


def load_texts(name_or_path: str, split: str, config_name: str | None, text_column: str, clean: Callable[[str], str],
               field_name: str = "dataset_name", extra_columns: dict[str, Callable] | None = None,
               rename: dict[str, str] | None = None):
    """One split of a text dataset as a `datasets.Dataset` with a `text` column (and the `extra_columns` kept, each
    converted by its function and renamed by `rename`), every text cleaned by `clean` (a task's `clean_text`) and
    empty texts dropped. A text column that holds anything but strings is a `PipelineError`."""
    dataset = load_split(name_or_path, split, config_name, field_name)
    extra_columns = extra_columns or {}
    wanted = [text_column, *extra_columns]
    require_columns(dataset, wanted, name_or_path, split, field_name)
    dataset = dataset.select_columns(wanted)
    for column, convert in extra_columns.items():
        converted = convert(dataset[column])
        dataset = dataset.remove_columns(column).add_column((rename or {}).get(column, column), converted)
    if text_column != "text":
        dataset = dataset.rename_column(text_column, "text")
    non_text = next((value for value in dataset["text"] if value is not None and not isinstance(value, str)), None)
    if non_text is not None:
        kind = type(non_text).__name__
        raise PipelineError(f"{field_name}: {name_or_path} ({split}) column {text_column} holds {kind} values such as "
                            f"{non_text!r}, not text")
    return dataset.map(lambda row: {"text": clean(row["text"] or "")}).filter(lambda row: len(row["text"]) > 0)
