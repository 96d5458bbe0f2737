"""Bad input never gets a traceback, whatever the bytes: each of the six scripts runs, as a user types it, with the
shipped configs/tiny config plus one drawn input (a file of random bytes, truncated JSONL, records of any JSON, a
mangled YAML config; a negative, zero, NaN or huge number; a random string for a choice option or a sweep entry).

Every run ends in exit 0 or in exit 2 with one `error:` line and no traceback, and nothing under runs/ or
generations/ changes. A run that gets past every check stops where it would first write (tests/stop_before_writing),
with exit 0: what is checked is everything a run does before it writes.

Each script tries FUZZ_EXAMPLES drawn inputs (3 by default, the same ones on every run; set FUZZ_EXAMPLES=40 for a
long, randomised search). Each example is a new interpreter: several seconds.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import REPO, snapshot, tiny_workspace
from tests.helpers import run_python

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "3"))
# No shrinking: each example is a new interpreter, and shrinking a failure would take tens of them; the failing
# input is printed as drawn.
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, database=None, derandomize="FUZZ_EXAMPLES" not in os.environ,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
PROBE = REPO / "tests" / "stop_before_writing"

# Options of each script drawn as numbers, and options drawn as strings (choices, column and split names).
NUMERIC = {
    "sft": ["learning_rate", "num_train_epochs", "per_device_train_batch_size", "global_batch_size", "warmup_steps",
            "max_length", "max_steps", "save_steps", "logging_steps", "seed", "max_grad_norm", "max_train_samples"],
    "preference_pairs": ["num_prompts", "completions_per_prompt", "min_prefix_tokens", "max_prefix_tokens",
                         "max_new_tokens", "temperature", "generation_batch_size", "classifier_batch_size",
                         "classifier_max_length", "heldout_prompts", "label_noise", "seed"],
    "dpo": ["beta", "learning_rate", "label_smoothing", "max_length", "warmup_steps", "num_train_epochs",
            "per_device_train_batch_size", "global_batch_size", "max_train_pairs", "max_eval_pairs", "eval_steps",
            "save_steps"],
    "reward_model": ["learning_rate", "num_train_epochs", "per_device_train_batch_size", "global_batch_size",
                     "max_length", "center_rewards_coefficient", "max_train_pairs"],
    "rl": ["beta", "num_generations", "max_completion_length", "temperature", "learning_rate", "global_batch_size",
           "per_device_train_batch_size", "max_prompts", "classifier_max_length", "classifier_batch_size"],
    "eval": ["num_prompts", "samples_per_prompt", "max_new_tokens", "temperature", "best_of_n", "best_of_n_prompts",
             "report_prompts", "generation_batch_size", "classifier_batch_size", "classifier_max_length",
             "kl_batch_size", "win_rate_tie_tolerance", "min_prefix_tokens", "max_prefix_tokens", "max_heldout_pairs"],
}
CHOICES = {
    "sft": ["lr_scheduler_type", "train_sampling_strategy", "report_to", "dtype", "optim", "packing", "text_column",
            "dataset_train_split"],
    "preference_pairs": ["pair_mode", "dtype", "measure_dtype", "dataset_split", "heldout_split", "text_column",
                         "label_column"],
    "dpo": ["loss_type", "lr_scheduler_type", "f_divergence_type", "dataset_train_split"],
    "reward_model": ["lr_scheduler_type"],
    "rl": ["loss_type", "lr_scheduler_type"],
    "eval": ["dtype", "dataset_split", "task"],
}
# The input files of each script: (option, what it holds). "pairs" files are JSONL pairs; "dataset" is any local
# dataset (a file or a folder of split files).
INPUT_FILES = {
    "sft": [("dataset_name", "dataset")],
    "preference_pairs": [("dataset_name", "dataset")],
    "dpo": [("pairs_file", "pairs"), ("eval_pairs_file", "pairs"), ("dataset_name", "dataset")],
    "reward_model": [("pairs_file", "pairs"), ("eval_pairs_file", "pairs")],
    "rl": [("pairs_file", "pairs")],
    "eval": [("heldout_pairs_file", "pairs"), ("dataset_name", "dataset")],
}
CONFIG = {"sft": "sft.yaml", "preference_pairs": "pairs.yaml", "dpo": "dpo.yaml", "reward_model": "reward_model.yaml",
          "rl": "rl.yaml", "eval": "eval.yaml"}
SWEEP_KEYS = {"dpo": ["beta", "loss_type", "label_smoothing", "label_noise", "learning_rate", "max_length"],
              "rl": ["method", "reward", "beta", "loss_type", "num_generations", "learning_rate"]}

NUMBERS = st.one_of(
    st.sampled_from(["0", "-1", "nan", "-nan", "inf", "-inf", "1e309", "1e30", "-1e30", "1e-320", "-0.0",
                     "99999999999999999999999", "0x10", "1_000", "", " "]),
    st.integers(min_value=-10**20, max_value=10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
# Any text a command line can carry (no NUL byte, no lone surrogate).
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=24)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats(allow_nan=True) | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4), max_leaves=12)
PAIR_KEYS = ["prompt", "chosen", "rejected", "prompt_ids", "chosen_ids", "rejected_ids", "text", "label",
             "messages", "role", "content"]
RECORDS = st.lists(st.dictionaries(st.sampled_from(PAIR_KEYS) | TEXT, JSON_VALUES, max_size=6), max_size=4)


def fields_of(script: str) -> set[str]:
    module = importlib.import_module(script)
    return {field.name for config in module.dataclass_types() for field in dataclasses.fields(config)}


@pytest.mark.parametrize("script", list(CONFIG))
def test_every_fuzzed_option_is_one_the_script_has(script):
    """A renamed option would make every draw an 'unknown key' error, and the fuzzing would test nothing."""
    drawn = NUMERIC[script] + CHOICES[script] + [option for option, _ in INPUT_FILES[script]]
    assert set(drawn) <= fields_of(script)


@st.composite
def truncated(draw, data: bytes) -> bytes:
    """`data` (JSONL or YAML) cut inside one of its lines: the last line is left unfinished."""
    lines = data.split(b"\n")
    candidates = [index for index, line in enumerate(lines) if len(line) > 1]
    index = draw(st.sampled_from(candidates))
    cut = draw(st.integers(min_value=1, max_value=len(lines[index]) - 1))
    return b"\n".join(lines[:index] + [lines[index][:cut]])


def jsonl(records) -> bytes:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records).encode()


def file_contents(valid: bytes):
    """Random bytes, the valid file cut short, records of any JSON, or the valid file with one line of it replaced."""
    return st.one_of(
        st.binary(max_size=512),
        truncated(valid),
        RECORDS.map(jsonl),
        st.tuples(st.just(valid), st.binary(max_size=64)).map(lambda pair: pair[1] + pair[0][len(pair[1]):]),
    )


@st.composite
def drawn_input(draw, script: str, valid: dict[str, bytes]):
    """(files to write into the workspace: {relative path: bytes}, extra command-line arguments)."""
    kind = draw(st.sampled_from(["file", "number", "choice", "config"] + (["sweep"] if script in SWEEP_KEYS else [])))
    if kind == "number":
        return {}, [f"--{draw(st.sampled_from(NUMERIC[script]))}={draw(NUMBERS)}"]
    if kind == "choice":
        return {}, [f"--{draw(st.sampled_from(CHOICES[script]))}={draw(TEXT)}"]
    if kind == "sweep":
        entry = draw(st.one_of(
            TEXT,
            st.lists(st.tuples(st.sampled_from(SWEEP_KEYS[script]) | TEXT, NUMBERS | TEXT), min_size=1, max_size=3)
            .map(lambda items: ",".join(f"{key}={value}" for key, value in items)),
        ))
        return {}, [f"--sweep={entry}"]
    if kind == "config":
        shipped = (REPO / "configs" / "tiny" / CONFIG[script]).read_bytes()
        lines = shipped.split(b"\n")
        index = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        mangled = b"\n".join(lines[:index] + [lines[index].split(b":")[0] + b": " + draw(TEXT).encode()]
                             + lines[index + 1:])
        contents = [truncated(shipped), st.just(mangled), st.binary(max_size=512)]
        return {"fuzzed.yaml": draw(st.one_of(contents))}, ["--config", "fuzzed.yaml"]
    option, holds = draw(st.sampled_from(INPUT_FILES[script]))
    content = draw(file_contents(valid[holds]))
    if holds == "dataset":
        name = draw(st.sampled_from(["train.jsonl", "train.json", "train.csv", "train.parquet", "test.jsonl"]))
        in_folder = draw(st.booleans())
        path = f"fuzzed-data/{name}" if in_folder else f"fuzzed-{name}"
        return {path: content}, [f"--{option}", "fuzzed-data" if in_folder else path]
    return {"fuzzed.jsonl": content}, [f"--{option}", "fuzzed.jsonl"]


def run_fuzzed(script: str, workspace, files: dict[str, bytes], arguments: list[str]):
    for name, content in files.items():
        (workspace / name).parent.mkdir(parents=True, exist_ok=True)
        (workspace / name).write_bytes(content)
    config = ["--config", str(REPO / "configs" / "tiny" / CONFIG[script])]
    if "--config" in arguments:
        config = []
    command = [sys.executable, str(REPO / f"{script}.py"), *config, *arguments]
    outputs = [workspace / "runs", workspace / "generations"]
    before = snapshot(*outputs)
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROBE), str(REPO)]), "HF_HUB_OFFLINE": "1",
                   "WANDB_MODE": "offline"}
    result = run_python(command[1:], workspace, environment, timeout=300, errors="replace")
    shown = f"{' '.join(command[1:])}\nexit {result.returncode}; stderr ends:\n{result.stderr[-3000:]}"
    if os.environ.get("FUZZ_LOG"):  # a long search leaves a record of every input it tried and how each ended
        with open(os.environ["FUZZ_LOG"], "a") as log:
            last = (result.stderr.strip().splitlines() or [""])[-1]
            log.write(json.dumps({"script": script, "arguments": arguments, "files": {name: content[:200].decode(
                errors="replace") for name, content in files.items()}, "exit": result.returncode,
                "traceback": "Traceback" in result.stderr, "last_line": last[:300]}) + "\n")
    assert result.returncode in (0, 2), shown
    assert "Traceback" not in result.stderr, shown
    if result.returncode == 2:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0], shown
    assert snapshot(*outputs) == before, shown
    return result


def valid_inputs(tiny_pipeline) -> dict[str, bytes]:
    """The valid files that fuzzed ones are cut from and mangled: the pairs and a dataset split."""
    return {"pairs": (tiny_pipeline / "generations" / "tiny" / "heldout_pairs.jsonl").read_bytes(),
            "dataset": (tiny_pipeline / ".cache" / "embedded" / "data" / "test.jsonl").read_bytes()}


@pytest.mark.parametrize("script", list(CONFIG))
@FUZZ_SETTINGS
@given(data=st.data())
def test_a_fuzzed_input_is_refused_in_one_line_or_passes_every_check(script, tiny_pipeline, tmp_path_factory, data):
    files, arguments = data.draw(drawn_input(script, valid_inputs(tiny_pipeline)), label="input")
    workspace = tiny_workspace(tiny_pipeline, script, tmp_path_factory.mktemp(script) / "workspace")
    run_fuzzed(script, workspace, files, arguments)


# A file of random bytes once stopped these with a UnicodeDecodeError traceback, as users typed them.
RANDOM_BYTES = bytes(range(256)) * 2  # never UTF-8: byte 0x80 follows an ASCII one


@pytest.mark.parametrize("script, option", [("dpo", "--pairs_file"), ("rl", "--pairs_file"),
                                            ("eval", "--heldout_pairs_file")])
def test_a_pairs_file_of_random_bytes_is_one_line_naming_the_line(script, option, tiny_pipeline, tmp_path):
    workspace = tiny_workspace(tiny_pipeline, script, tmp_path / "workspace")
    result = run_fuzzed(script, workspace, {"random.jsonl": RANDOM_BYTES}, [option, "random.jsonl"])
    assert result.returncode == 2
    assert f"{option[2:]}: random.jsonl line 2 is not UTF-8 text" in result.stderr  # byte 10 ends line 1
