"""Every file a user hands the pipeline is read here: JSONL records (pairs, held-out pairs, samples), JSON, YAML
configs, and the local files of a dataset (.jsonl, .json, .csv, .parquet, a folder of them). Whatever the bytes
(undecodable, truncated, wrongly typed, empty), a bad file is a one-line `PipelineError` naming the option, the file
and, where the content has lines, the line.

Text files must be UTF-8 (with or without a byte-order mark), as the datasets library and TRL read them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from .errors import PipelineError

# datasets' builder for each local file format a split may come in.
LOCAL_FORMATS = {"jsonl": "json", "json": "json", "csv": "csv", "parquet": "parquet"}
BYTE_ORDER_MARK = b"\xef\xbb\xbf"
# What a line of a bad file shows of itself in an error: enough to recognise it, never a screenful.
SHOWN_CHARACTERS = 60


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _require_file(path: Path, field_name: str) -> None:
    if not path.exists():
        raise PipelineError(f"{field_name}: {path} does not exist")
    if not path.is_file():
        raise PipelineError(f"{field_name}: {path} is not a file")


def read_bytes(path: str | Path, field_name: str) -> bytes:
    path = Path(path)
    _require_file(path, field_name)
    try:
        return path.read_bytes()
    except OSError as error:
        raise PipelineError(f"{field_name}: cannot read {path}: {_one_line(error.strerror or error)}") from None


def decode_text(data: bytes, path: str | Path, field_name: str) -> str:
    """`data` as UTF-8 text; undecodable bytes are an error naming the line they are on (a file of random bytes,
    a binary file given where text is expected, text in another encoding)."""
    if data.startswith(BYTE_ORDER_MARK):
        data = data[len(BYTE_ORDER_MARK):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise PipelineError(f"{field_name}: {path} line {line} is not UTF-8 text (byte {error.start + 1} is "
                            f"0x{data[error.start]:02x}): give a text file in UTF-8") from None


def read_text(path: str | Path, field_name: str) -> str:
    return decode_text(read_bytes(path, field_name), path, field_name)


def _shown(line: str) -> str:
    line = _one_line(line)
    return repr(line if len(line) <= SHOWN_CHARACTERS else line[:SHOWN_CHARACTERS] + "...")


def _parse_json_line(line: str, number: int, path, field_name: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise PipelineError(f"{field_name}: {path} line {number} is not JSON ({error.msg} at column {error.colno}; "
                            f"the file may be cut short): {_shown(line)}") from None
    except RecursionError:
        raise PipelineError(f"{field_name}: {path} line {number} is JSON nested too deeply to read") from None


def iter_jsonl(text: str, path, field_name: str):
    """(line number, record) of each non-blank line of JSONL `text`; a line that is not a JSON object is an error."""
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        record = _parse_json_line(line, number, path, field_name)
        if not isinstance(record, dict):
            raise PipelineError(f"{field_name}: {path} line {number} is not a JSON object (it is a "
                                f"{type(record).__name__}): {_shown(line)}")
        yield number, record


def read_jsonl(path: str | Path, field_name: str, required: Iterable[str] = ()) -> list[dict]:
    """Records of a JSONL file; a missing, unreadable or empty file, a line that is not UTF-8 or not a JSON object,
    or a record without a `required` key is a `PipelineError` naming the file and the line."""
    text = read_text(path, field_name)
    required = list(required)
    records = []
    for number, record in iter_jsonl(text, path, field_name):
        missing = [key for key in required if key not in record]
        if missing:
            raise PipelineError(f"{field_name}: {path} line {number} lacks {', '.join(missing)}")
        records.append(record)
    if not records:
        raise PipelineError(f"{field_name}: {path} is empty")
    return records


def read_json(path: str | Path, field_name: str):
    """The one JSON document of a file, or a `PipelineError` naming the file and the line where it goes wrong."""
    text = read_text(path, field_name)
    if not text.strip():
        raise PipelineError(f"{field_name}: {path} is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise PipelineError(f"{field_name}: {path} line {error.lineno} is not JSON ({error.msg} at column "
                            f"{error.colno}; the file may be cut short)") from None
    except RecursionError:
        raise PipelineError(f"{field_name}: {path} is JSON nested too deeply to read") from None


def read_config_file(path: str | Path) -> dict:
    """A YAML config: a mapping whose keys are text. Undecodable bytes, YAML errors (with their line), values YAML
    cannot build (a date such as 2024-13-45) and a document that is no mapping are one-line errors."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise PipelineError(f"config file {path} does not exist")
    text = read_text(path, "config")
    try:
        config = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = error.problem or error.context or type(error).__name__
        raise PipelineError(f"{path}{where} is not valid YAML: {_one_line(problem)}") from None
    except yaml.YAMLError as error:
        raise PipelineError(f"{path} is not valid YAML: {_one_line(error)}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as error:  # a value YAML parses but cannot build
        raise PipelineError(f"{path} holds a value YAML cannot read: {_one_line(error) or type(error).__name__}") \
            from None
    if not isinstance(config, dict):
        raise PipelineError(f"{path} must hold a YAML mapping of config keys")
    not_text = [key for key in config if not isinstance(key, str)]
    if not_text:
        raise PipelineError(f"{path}: config keys are names, and {not_text[0]!r} is a {type(not_text[0]).__name__}")
    return config


def local_format(file: Path) -> str | None:
    """The datasets builder that reads `file` (json, csv, parquet), from its suffix; None for other files."""
    return LOCAL_FORMATS.get(file.suffix.lstrip(".").lower())


def is_blank(file: Path) -> bool:
    """No data in the file: empty, or white space only (read in chunks: dataset files can be large)."""
    with file.open("rb") as handle:
        while chunk := handle.read(1 << 16):
            if chunk.strip():
                return False
    return True


def first_problem(file: Path, field_name: str) -> str | None:
    """What is wrong with a local data file, named by file and line, as a one-line message; None where nothing is
    found (the datasets library's own message is then the one to give). Only run once the library failed: it reads
    the whole file."""
    builder = local_format(file)
    try:
        if builder == "parquet":
            data = read_bytes(file, field_name)
            if not (data.startswith(b"PAR1") and data.endswith(b"PAR1")):
                return (f"{field_name}: {file} is not a Parquet file (a Parquet file starts and ends with PAR1; it may "
                        "be cut short)")
            return None
        text = read_text(file, field_name)
        if builder == "json" and file.suffix.lower() == ".json" and text.lstrip()[:1] in ("[", "{"):
            try:
                json.loads(text)
                return None
            except json.JSONDecodeError as error:
                if text.lstrip().startswith("["):  # one array: where the document goes wrong
                    return (f"{field_name}: {file} line {error.lineno} is not JSON ({error.msg} at column "
                            f"{error.colno}; the file may be cut short)")
                # else JSON lines of objects, perhaps: checked line by line below
            except RecursionError:
                return f"{field_name}: {file} is JSON nested too deeply to read"
        if builder == "json":
            for _ in iter_jsonl(text, file, field_name):
                pass
    except PipelineError as error:
        return str(error)
    return None


def local_split_files(path: Path, split: str, field_name: str) -> tuple[str, list[Path]]:
    """The datasets builder and the files of one split of a local dataset: the file itself, or a folder's
    `<split>.<format>` files (any split name: IMDb's `unsupervised` too)."""
    files = [path] if path.is_file() else sorted(file for file in path.glob(f"{split}.*") if file.is_file())
    if not files:
        found = sorted(file.name for file in path.iterdir() if file.is_file())
        raise PipelineError(f"{field_name}: {path} has no file for split '{split}' ({split}.jsonl, .csv or .parquet); "
                            f"it has {', '.join(found) or 'no files'}")
    builders = {local_format(file) for file in files}
    if None in builders or len(builders) != 1:
        raise PipelineError(f"{field_name}: cannot read {', '.join(map(str, files))}: a split is one .jsonl, .json, "
                            ".csv or .parquet file")
    if all(is_blank(file) for file in files):
        raise PipelineError(f"{field_name}: split '{split}' of {path} is empty ({files[0]})")
    return builders.pop(), files


def load_local_split(path: Path, split: str, field_name: str):
    """One split of a local dataset: a folder saved with `save_to_disk`, a folder of `<split>.<format>` files or a
    single data file (then it is the split, whatever its name); an empty split is an error."""
    if path.is_dir() and (path / "dataset_dict.json").exists():
        import datasets

        try:
            dataset = datasets.load_from_disk(str(path))[split]
        except KeyError:
            raise PipelineError(f"{field_name}: {path} has no split '{split}'") from None
        except Exception as error:  # a saved dataset whose files are damaged or of another library version
            raise PipelineError(f"{field_name}: cannot load {path} (saved with save_to_disk): "
                                f"{_one_line(error) or type(error).__name__}") from None
    else:
        builder, files = local_split_files(path, split, field_name)
        dataset = load_local_dataset(builder, files, split, field_name)
    if len(dataset) == 0:
        raise PipelineError(f"{field_name}: split '{split}' of {path} is empty")
    return dataset


def load_local_dataset(builder: str, files: list[Path], split: str, field_name: str):
    """The `datasets.Dataset` of one split's local `files` (read by the datasets `builder`). A file the library
    cannot read is a one-line error naming the file and, where it has lines, the line."""
    import datasets

    for file in files:  # undecodable text is found before the library, which would name no line
        if local_format(file) != "parquet":
            read_text(file, field_name)
    try:
        return datasets.load_dataset(builder, data_files={split: [str(file) for file in files]})[split]
    except Exception as error:  # the library's (and pyarrow's and pandas') many errors on a malformed file
        for file in files:
            problem = first_problem(file, field_name)
            if problem:
                raise PipelineError(problem) from None
        message = _one_line(error) or type(error).__name__
        named = ", ".join(map(str, files))
        raise PipelineError(f"{field_name}: cannot read split '{split}' from {named}: {message}") from None


def dataset_from_records(records: list[dict], source, field_name: str):
    """A `datasets.Dataset` of checked records: values of one column that differ in type from record to record
    (text in one, a list in another) are an error, as Arrow needs one type per column."""
    from datasets import Dataset

    try:
        return Dataset.from_list(records)
    except Exception as error:  # pyarrow's ArrowInvalid / ArrowTypeError: a column of mixed types
        raise PipelineError(f"{field_name}: {source}: the records' fields differ in type from record to record "
                            f"({_one_line(error)[:200]}); give every record the same layout") from None
