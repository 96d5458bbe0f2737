"""Bad input of every kind: one line naming the file or field and what is wrong, exit code 2, and nothing on disk
changed (no output folder created, an existing one untouched). Most cases run in process (fast); a sample of them also
runs as a real command line, where no traceback may reach the terminal. Full-scale configs on a machine without the
hub, steps run before their inputs exist, and the online RL scripts' settings are here too; tests/test_fuzz.py draws
many more inputs at random."""

import json
import shutil
import subprocess

import pytest

import dpo
import eval as eval_script
import preference_pairs
import sft
from dpo_pipeline.cli import run_script
from tests.conftest import REPO, TRAINING_ON_CPU, snapshot, tiny_workspace
from tests.helpers import run_command, run_python

GOOD_PAIR = {"prompt": "The film is", "chosen": " great and moving.", "rejected": " dull."}
CHAT_PAIR = {"prompt": [{"role": "user", "content": "Review the film."}],
             "chosen": [{"role": "assistant", "content": "Great and moving."}],
             "rejected": [{"role": "assistant", "content": "Dull."}]}


@pytest.fixture
def workspace(tmp_path, tiny_assets):
    """A folder with good and bad inputs, and a finished-looking output folder of another run."""
    (tmp_path / "pairs.jsonl").write_text(json.dumps(GOOD_PAIR) + "\n")
    other_run = tmp_path / "other-run"
    other_run.mkdir()
    (other_run / "run_config.json").write_text(json.dumps({"stage": "dpo", "config_hash": "0123456789abcdef"}))
    (other_run / "model.safetensors").write_bytes(b"weights of another run")
    shutil.copytree(other_run, tmp_path / "other-sweep" / "beta-0.1")
    unlabelled = tmp_path / "classifier-without-positive"
    shutil.copytree(tiny_assets["classifier"], unlabelled)
    config = json.loads((unlabelled / "config.json").read_text())
    config.update(id2label={"0": "LABEL_0", "1": "LABEL_1"}, label2id={"LABEL_0": 0, "LABEL_1": 1})
    (unlabelled / "config.json").write_text(json.dumps(config))
    (tmp_path / "empty-data").mkdir()
    (tmp_path / "empty-data" / "train.jsonl").write_text("")
    (tmp_path / "no-text-data").mkdir()
    (tmp_path / "no-text-data" / "train.jsonl").write_text(json.dumps({"review": "Good.", "label": 1}) + "\n")
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "imdb-neutral.csv").write_text('review,sentiment\n"A fine film, really.",positive\n'
                                              '"It was a film, of sorts.",neutral\n')
    (tmp_path / "numbers-data").mkdir()
    (tmp_path / "numbers-data" / "train.jsonl").write_text("".join(json.dumps({"text": i, "label": i % 2}) + "\n"
                                                                   for i in range(4)))
    (tmp_path / "list.yaml").write_text("- beta: 0.1\n")
    (tmp_path / "broken.yaml").write_text("beta: [0.1\n")
    return tmp_path


def tokenized_pair(assets, **changes):
    """A pair in TRL's tokenized format whose ids spell its text with the tiny model's tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(assets["sft_model"])
    pair = dict(GOOD_PAIR)
    for key in ("prompt", "chosen", "rejected"):
        pair[f"{key}_ids"] = tokenizer(pair[key], add_special_tokens=False)["input_ids"]
    return {**pair, **changes}


def write_pairs(path, *records, raw_lines=()):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + "".join(line + "\n" for line in raw_lines))
    return path


def dpo_args(workspace, assets, pairs_file, *extra):
    return ["--model_name_or_path", assets["sft_model"], "--pairs_file", pairs_file,
            "--output_dir", workspace / "dpo-out", "--sweep", "beta=0.1", "--max_steps", 1, "--report_to", "none",
            *TRAINING_ON_CPU, *extra]


def sft_args(workspace, assets, dataset, *extra):
    return ["--model_name_or_path", assets["sft_model"], "--dataset_name", dataset,
            "--clean_reviews", "true", "--output_dir",
            workspace / "sft-out", "--max_steps", 1, "--report_to", "none", *TRAINING_ON_CPU, *extra]


def pairs_args(workspace, assets, *extra):
    return ["--model_name_or_path", assets["sft_model"], "--classifier_name_or_path", assets["classifier"],
            "--dataset_name", assets["data"], "--num_prompts", 4, "--max_new_tokens", 4,
            "--output_dir", workspace / "pairs-out", "--report_to", "none", *extra]


def eval_args(workspace, assets, *extra):
    return ["--sft_model_path", assets["sft_model"], "--classifier_name_or_path", assets["classifier"],
            "--dataset_name", assets["data"], "--num_prompts", 2, "--samples_per_prompt", 1, "--max_new_tokens", 4,
            "--output_dir", workspace / "eval-out", "--report_to", "none", *extra]


def truncated_model(assets, workspace, name="truncated-model"):
    """A copy of the tiny SFT model whose model.safetensors was cut short (a copy or download stopped half-way)."""
    folder = workspace / name
    shutil.copytree(assets["sft_model"], folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return folder


def sweep_with_a_truncated_model(assets, workspace):
    """A sweep folder holding one finished-looking run whose final weights are cut short."""
    run_dir = truncated_model(assets, workspace, "sweep-of-a-truncated-run/beta-0.1")
    (run_dir / "sweep_run.json").write_text(json.dumps({"name": "beta-0.1", "method": "dpo", "beta": 0.1}))
    (run_dir / "stage_complete.json").write_text(json.dumps({"summary": {"global_step": 1}}))
    return run_dir.parent


def not_a_config(workspace):
    (workspace / "not-a-config.yaml").write_text("- just\n- a list\n")
    return workspace / "not-a-config.yaml"


# (id, script, arguments made from (workspace, assets), fragments the one-line message must hold)
CASES = [
    ("missing dataset", sft, lambda w, a: sft_args(w, a, w / "no-such-data"), ["dataset_name", "does not exist"]),
    ("empty dataset", sft, lambda w, a: sft_args(w, a, w / "empty-data"), ["dataset_name", "empty"]),
    ("dataset without its text column", sft, lambda w, a: sft_args(w, a, w / "no-text-data"),
     ["dataset_name", "no column(s) text"]),
    ("missing pairs file", dpo, lambda w, a: dpo_args(w, a, w / "missing.jsonl"), ["pairs_file", "does not exist"]),
    ("empty pairs file", dpo, lambda w, a: dpo_args(w, a, write_pairs(w / "empty.jsonl")), ["pairs_file", "empty"]),
    ("pairs file line that is not JSON", dpo,
     lambda w, a: dpo_args(w, a, write_pairs(w / "bad.jsonl", GOOD_PAIR, raw_lines=['{"prompt": "x", chosen'])),
     ["pairs_file", "line 2 is not JSON"]),
    ("pairs file without a rejected column", dpo,
     lambda w, a: dpo_args(w, a, write_pairs(w / "cols.jsonl", {"prompt": "x", "chosen": " y"})),
     ["pairs_file", "record 1 lacks rejected"]),
    ("chosen equal to rejected", dpo,
     lambda w, a: dpo_args(w, a, write_pairs(w / "same.jsonl", GOOD_PAIR,
                                             {**GOOD_PAIR, "rejected": GOOD_PAIR["chosen"]})),
     ["pairs_file", "record 2", "chosen equals rejected"]),
    ("empty completion", dpo,
     lambda w, a: dpo_args(w, a, write_pairs(w / "blank.jsonl", {**GOOD_PAIR, "chosen": "  "})),
     ["pairs_file", "record 1", "empty completion"]),
    ("prompt longer than max_length", dpo,
     lambda w, a: dpo_args(w, a, write_pairs(w / "long.jsonl", GOOD_PAIR, {**GOOD_PAIR, "prompt": "the film " * 40}),
                           "--max_length", 32),
     ["pairs_file", "record 2", "max_length 32"]),
    ("beta zero", dpo, lambda w, a: dpo_args(w, a, w / "pairs.jsonl", "--beta", "0"), ["beta must be a positive"]),
    ("beta negative in the sweep", dpo, lambda w, a: dpo_args(w, a, w / "pairs.jsonl", "--sweep", "beta=-1"),
     ["beta must be a positive", "-1"]),
    ("beta not a number", dpo, lambda w, a: dpo_args(w, a, w / "pairs.jsonl", "--sweep", "beta=nan"),
     ["beta must be a positive", "nan"]),
    ("beta not a number at all", dpo, lambda w, a: dpo_args(w, a, w / "pairs.jsonl", "--sweep", "beta=high"),
     ["sweep: beta='high' is not a valid value"]),
    ("fewer than 2 completions per prompt", preference_pairs,
     lambda w, a: pairs_args(w, a, "--completions_per_prompt", 1), ["completions_per_prompt must be at least 2"]),
    ("unknown config key", dpo, lambda w, a: dpo_args(w, a, w / "pairs.jsonl", "--betta", "0.1"), ["betta"]),
    ("model path that does not exist", dpo,
     lambda w, a: [*dpo_args(w, a, w / "pairs.jsonl"), "--model_name_or_path", str(w / "no-model")],
     ["model_name_or_path", "no-model", "does not exist"]),
    ("classifier without a POSITIVE label (pairs)", preference_pairs,
     lambda w, a: [*pairs_args(w, a), "--classifier_name_or_path", str(w / "classifier-without-positive")],
     ["classifier_name_or_path", "POSITIVE", "LABEL_0"]),
    ("classifier without a POSITIVE label (eval)", eval_script,
     lambda w, a: [*eval_args(w, a), "--classifier_name_or_path", str(w / "classifier-without-positive")],
     ["classifier_name_or_path", "POSITIVE"]),
    ("output folder holding another run", dpo,
     lambda w, a: [*dpo_args(w, a, w / "pairs.jsonl"), "--output_dir", str(w / "other-sweep")],
     ["beta-0.1", "--overwrite true"]),
    ("pairs output folder holding another run", preference_pairs,
     lambda w, a: [*pairs_args(w, a), "--output_dir", str(w / "other-run")], ["other-run", "different config"]),
    ("label-noise pairs that were never made", dpo,
     lambda w, a: dpo_args(w, a, w / "pairs.jsonl", "--sweep", "beta=0.1,label_noise=0.3"),
     ["label_noise=0.3", "pairs_noise-0.3.jsonl", "does not exist"]),
    ("held-out pairs file that does not exist", eval_script,
     lambda w, a: eval_args(w, a, "--heldout_pairs_file", w / "nope.jsonl"), ["heldout_pairs_file", "does not exist"]),
    ("judge template without placeholders", eval_script,
     lambda w, a: eval_args(w, a, "--judge_template", "Which is better?"), ["judge_template lacks {prompt}"]),
    ("temperature zero", preference_pairs, lambda w, a: pairs_args(w, a, "--temperature", 0),
     ["temperature must be a positive number"]),
    ("config file that does not exist", dpo, lambda w, a: ["--config", str(w / "missing.yaml")],
     ["missing.yaml does not exist"]),
    # settings that cannot train, data as users have it, silent no-ops, token ids that do not fit
    ("negative learning rate", dpo, lambda w, a: dpo_args(w, a, w / "pairs.jsonl", "--learning_rate=-1e-5"),
     ["learning_rate must be a positive number", "-1e-05"]),
    ("learning rate that is not a number", dpo, lambda w, a: dpo_args(w, a, w / "pairs.jsonl", "--learning_rate", "x"),
     ["--learning_rate", "invalid float value"]),
    ("zero epochs", sft, lambda w, a: sft_args(w, a, a["data"], "--max_steps", "-1", "--num_train_epochs", "0"),
     ["num_train_epochs must be positive"]),
    ("negative epochs", dpo,
     lambda w, a: dpo_args(w, a, w / "pairs.jsonl", "--max_steps", "-1", "--num_train_epochs", "-2"),
     ["num_train_epochs must be positive"]),
    ("zero batch size", sft, lambda w, a: sft_args(w, a, a["data"], "--per_device_train_batch_size", "0"),
     ["per_device_train_batch_size must be at least 1"]),
    ("zero accumulation", dpo, lambda w, a: dpo_args(w, a, w / "pairs.jsonl", "--gradient_accumulation_steps", "0"),
     ["gradient_accumulation_steps must be at least 1"]),
    ("negative warm-up", dpo, lambda w, a: dpo_args(w, a, w / "pairs.jsonl", "--warmup_steps", "-5"),
     ["warmup_steps must be a non-negative number"]),
    ("max_length of one token", dpo, lambda w, a: dpo_args(w, a, w / "pairs.jsonl", "--max_length", "1"),
     ["max_length must be at least 2"]),
    ("training output_dir that is a file", dpo,
     lambda w, a: [*dpo_args(w, a, w / "pairs.jsonl"), "--output_dir", str(w / "a-file")], ["output_dir", "is a file"]),
    ("SFT output_dir below a file", sft,
     lambda w, a: [*sft_args(w, a, a["data"]), "--output_dir", str(w / "a-file" / "sft")], ["output_dir", "is a file"]),
    ("pairs output_dir that is a file", preference_pairs,
     lambda w, a: [*pairs_args(w, a), "--output_dir", str(w / "a-file")], ["output_dir", "a-file is a file"]),
    ("eval output_dir below a file", eval_script,
     lambda w, a: [*eval_args(w, a), "--output_dir", str(w / "a-file" / "eval")], ["output_dir", "a-file is a file"]),
    ("a string label that is no class", preference_pairs,
     lambda w, a: pairs_args(w, a, "--dataset_name", w / "imdb-neutral.csv", "--text_column", "review",
                             "--label_column", "sentiment"),
     ["label_column", "'neutral'", "column sentiment"]),
    ("a text column of numbers", sft, lambda w, a: sft_args(w, a, w / "numbers-data"), ["dataset_name", "holds int"]),
    ("a split the dataset does not have", preference_pairs,
     lambda w, a: pairs_args(w, a, "--dataset_split", "validation"), ["dataset_name", "validation"]),
    ("no prompts asked for", preference_pairs, lambda w, a: pairs_args(w, a, "--num_prompts", "0"),
     ["num_prompts must be at least 1"]),
    ("no new tokens", eval_script, lambda w, a: eval_args(w, a, "--max_new_tokens", "0"),
     ["max_new_tokens must be at least 1"]),
    ("label smoothing under a loss that ignores it", dpo,
     lambda w, a: dpo_args(w, a, w / "pairs.jsonl", "--sweep", "beta=0.1,label_smoothing=0.1"),
     ["sweep entry", "label_smoothing=0.1 has no effect with loss_type sigmoid", "robust"]),
    ("label smoothing in the base config under the default loss", dpo,
     lambda w, a: dpo_args(w, a, w / "pairs.jsonl", "--label_smoothing", "0.2"),
     ["label_smoothing=0.2 has no effect"]),
    ("discopop_tau without discopop", dpo, lambda w, a: dpo_args(w, a, w / "pairs.jsonl", "--discopop_tau", "0.5"),
     ["discopop_tau=0.5 has no effect"]),
    ("loss weights that do not match the losses", dpo,
     lambda w, a: dpo_args(w, a, w / "pairs.jsonl", "--loss_type", "sigmoid", "--loss_weights", "1", "0.5"),
     ["loss_weights", "2 weights for 1 loss types"]),
    ("token ids outside the vocabulary", dpo,
     lambda w, a: dpo_args(w, a, write_pairs(w / "ids.jsonl", tokenized_pair(a, chosen_ids=[5, 10_000_000]))),
     ["pairs_file", "record 1", "chosen_ids", "outside"]),
    ("token ids of another tokenizer", dpo,
     lambda w, a: dpo_args(w, a, write_pairs(w / "ids.jsonl", tokenized_pair(a), tokenized_pair(a, prompt_ids=[7, 8]))),
     ["pairs_file", "record 2", "prompt_ids does not spell its prompt", "another tokenizer"]),
    ("token ids that are not a list of ids", dpo,
     lambda w, a: dpo_args(w, a, write_pairs(w / "ids.jsonl", tokenized_pair(a, rejected_ids="12 13"))),
     ["pairs_file", "record 1", "rejected_ids is not a non-empty list of token ids"]),
    ("chosen ids equal to rejected ids", dpo,
     lambda w, a: dpo_args(w, a, write_pairs(w / "ids.jsonl",
                                             tokenized_pair(a, rejected_ids=[3, 4], chosen_ids=[3, 4]))),
     ["pairs_file", "record 1", "chosen equals rejected"]),
    ("a config file that holds a list", dpo, lambda w, a: ["--config", str(w / "list.yaml")],
     ["list.yaml must hold a YAML mapping"]),
    ("a config file that is not YAML", dpo, lambda w, a: ["--config", str(w / "broken.yaml")],
     ["broken.yaml line 2 is not valid YAML"]),
    ("a malformed sweep entry", dpo, lambda w, a: dpo_args(w, a, w / "pairs.jsonl", "--sweep", "beta"),
     ["sweep entry 'beta'", "key=value"]),
    ("a sweep shard that is not k/n", dpo, lambda w, a: dpo_args(w, a, w / "pairs.jsonl", "--sweep_shard", "2/2"),
     ["sweep_shard must be k/n with 0 <= k < n", "'2/2'"]),
    ("a sweep shard with no entry of the sweep", dpo,
     lambda w, a: dpo_args(w, a, w / "pairs.jsonl", "--sweep_shard", "1/3"),
     ["sweep_shard 1/3 leaves this command no run", "the sweep has 1 entry"]),
    ("a sweep folder with no finished run", eval_script,
     lambda w, a: eval_args(w, a, "--dpo_output_dir", w / "empty-data"), ["dpo_output_dir", "no finished run"]),
    # ModelConfig flags do what they say or are refused
    ("QLoRA without bitsandbytes or a GPU", dpo,
     lambda w, a: dpo_args(w, a, w / "pairs.jsonl", "--use_peft", "true", "--load_in_4bit", "true"),
     ["load_in_4bit needs"]),
    ("4-bit weights without LoRA adapters", dpo,
     lambda w, a: dpo_args(w, a, w / "pairs.jsonl", "--load_in_4bit", "true"),
     ["load_in_4bit", "only through LoRA adapters", "use_peft"]),
    ("LoRA settings without LoRA", dpo, lambda w, a: dpo_args(w, a, w / "pairs.jsonl", "--lora_r", "8"),
     ["lora_r only act on LoRA adapters", "use_peft"]),
    ("a quantization setting without 4 or 8 bits", sft,
     lambda w, a: sft_args(w, a, a["data"], "--bnb_4bit_quant_type", "fp4"), ["bnb_4bit_quant_type", "load_in_4bit"]),
    ("flash attention without a GPU", sft,
     lambda w, a: sft_args(w, a, a["data"], "--attn_implementation", "flash_attention_2"),
     ["attn_implementation flash_attention_2 needs an NVIDIA GPU"]),
    ("conversational pairs for a tokenizer without a chat template", dpo,
     lambda w, a: dpo_args(w, a, write_pairs(w / "chat.jsonl", CHAT_PAIR)), ["chat template"]),
    ("held-out split that does not exist", preference_pairs,
     lambda w, a: pairs_args(w, a, "--heldout_prompts", "2", "--heldout_split", "unsupervised"),
     ["dataset_name", "unsupervised"]),
    # settings TRL would drop or that would name something else than what trains
    ("padding_free, which TRL's DPOTrainer turns off", dpo,
     lambda w, a: dpo_args(w, a, w / "pairs.jsonl", "--padding_free", "true"), ["padding_free", "pads anyway"]),
    ("resume_from_checkpoint in a sweep of several runs", dpo,
     lambda w, a: dpo_args(w, a, w / "pairs.jsonl", "--sweep", "beta=0.1", "beta=1.0", "--resume_from_checkpoint",
                           w / "other-run"), ["resume_from_checkpoint", "names one checkpoint", "2 runs"]),
    ("resume_from_checkpoint that is no checkpoint", dpo,
     lambda w, a: dpo_args(w, a, w / "pairs.jsonl", "--resume_from_checkpoint", w / "other-run"),
     ["resume_from_checkpoint", "is not a complete checkpoint"]),
    ("model_init_kwargs that is not JSON", dpo,
     lambda w, a: dpo_args(w, a, w / "pairs.jsonl", "--model_init_kwargs", "{dtype: float32"),
     ["model_init_kwargs"]),
    ("model weights cut short (training)", dpo,
     lambda w, a: [*dpo_args(w, a, w / "pairs.jsonl"), "--model_name_or_path", str(truncated_model(a, w))],
     ["model_name_or_path", "truncated-model/model.safetensors", "cut short"]),
    ("model weights cut short (evaluation)", eval_script,
     lambda w, a: eval_args(w, a, "--dpo_output_dir", sweep_with_a_truncated_model(a, w)),
     ["dpo_output_dir", "beta-0.1/model.safetensors", "cut short"]),
    ("live_eval_config that is no config", dpo,
     lambda w, a: dpo_args(w, a, w / "pairs.jsonl", "--live_eval_config", not_a_config(w)),
     ["not-a-config.yaml"]),
    ("reference model that does not exist", dpo,
     lambda w, a: dpo_args(w, a, w / "pairs.jsonl", "--ref_model_name_or_path", w / "no-reference"),
     ["ref_model_name_or_path", "no-reference", "does not exist"]),
]


@pytest.mark.parametrize("script, make_args, fragments", [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_bad_input_gets_one_line_exit_2_and_changes_nothing(script, make_args, fragments, workspace, tiny_assets,
                                                            capsys):
    args = [str(arg) for arg in make_args(workspace, tiny_assets)]
    before = snapshot(workspace, tiny_assets["root"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_script(script.main, script.dataclass_types(), args)
    assert exit_info.value.code == 2
    error_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, error_lines
    for fragment in fragments:
        assert fragment in error_lines[0]
    assert snapshot(workspace, tiny_assets["root"]) == before


# A sample of the cases above, run as the command lines users type: exit code 2, one line, no traceback.
COMMAND_LINE_CASES = ["negative learning rate", "zero epochs", "a string label that is no class",
                      "a sweep shard that is not k/n",
                      "QLoRA without bitsandbytes or a GPU"]


@pytest.mark.parametrize("case", COMMAND_LINE_CASES)
def test_bad_input_on_the_command_line_is_one_line_without_a_traceback(case, workspace, tiny_assets):
    import os

    _, script, make_args, fragments = next(c for c in CASES if c[0] == case)
    args = [str(arg) for arg in make_args(workspace, tiny_assets)]
    before = snapshot(workspace, tiny_assets["root"])
    result = run_python([script.__file__, *args], workspace, {**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and all(fragment in errors[0] for fragment in fragments), errors
    assert snapshot(workspace, tiny_assets["root"]) == before


# Files whatever their bytes: undecodable, cut short, wrongly typed. Each is read through dpo_pipeline/inputs.py.
RANDOM_BYTES = bytes(range(256)) * 2  # never UTF-8: byte 0x80 follows an ASCII one (and byte 10 ends line 1)


def write_bytes(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def cut_short(path, *records):
    """JSONL whose last record is cut in the middle, as a copy interrupted mid-file leaves it."""
    text = "".join(json.dumps(record) + "\n" for record in records)
    return write_bytes(path, text[: text.rindex("\n", 0, len(text) - 1) + 12].encode())


REVIEW = {"text": "The film is great.", "label": 1}
FILE_CASES = [
    ("a dataset file of random bytes", sft,
     lambda w, a: sft_args(w, a, write_bytes(w / "random-data" / "train.jsonl", RANDOM_BYTES)),
     ["dataset_name", "random-data/train.jsonl line 2 is not UTF-8 text"]),
    ("a CSV dataset of random bytes", preference_pairs,
     lambda w, a: pairs_args(w, a, "--dataset_name", write_bytes(w / "random.csv", RANDOM_BYTES)),
     ["dataset_name", "random.csv line 2 is not UTF-8 text"]),
    ("a Parquet file that is not one", sft,
     lambda w, a: sft_args(w, a, write_bytes(w / "fake-parquet" / "train.parquet", b"text,label\nGreat.,1\n")),
     ["dataset_name", "train.parquet is not a Parquet file"]),
    ("a JSONL dataset cut short", sft,
     lambda w, a: sft_args(w, a, cut_short(w / "cut-data" / "train.jsonl", REVIEW, REVIEW, REVIEW).parent),
     ["dataset_name", "train.jsonl line 3 is not JSON", "cut short"]),
    ("a JSON dataset cut short", sft,
     lambda w, a: sft_args(w, a, write_bytes(w / "cut.json", b'[{"text": "Great.", "label": 1},\n {"text": "Du')),
     ["dataset_name", "cut.json line 2 is not JSON"]),
    ("a dataset line that is no JSON object", sft,
     lambda w, a: sft_args(w, a, write_bytes(w / "list-data" / "train.jsonl", b'{"text": "a", "label": 1}\n[1, 2]\n')),
     ["dataset_name", "line 2 is not a JSON object (it is a list)"]),
    ("pairs of random bytes", dpo, lambda w, a: dpo_args(w, a, write_bytes(w / "random.jsonl", RANDOM_BYTES)),
     ["pairs_file", "random.jsonl line 2 is not UTF-8 text"]),
    ("pairs cut short", dpo, lambda w, a: dpo_args(w, a, cut_short(w / "cut.jsonl", GOOD_PAIR, GOOD_PAIR)),
     ["pairs_file", "cut.jsonl line 2 is not JSON"]),
    ("held-out pairs of random bytes", eval_script,
     lambda w, a: eval_args(w, a, "--heldout_pairs_file", write_bytes(w / "random.jsonl", RANDOM_BYTES)),
     ["heldout_pairs_file", "line 2 is not UTF-8 text"]),
    ("pairs whose messages differ in type from record to record", dpo,
     lambda w, a: dpo_args(w, a, write_pairs(w / "mixed.jsonl", CHAT_PAIR, {
         **CHAT_PAIR, "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "Great."}]}]})),
     ["pairs_file", "mixed.jsonl", "differ in type from record to record"]),
]


@pytest.mark.parametrize("script, make_args, fragments", [case[1:] for case in FILE_CASES],
                         ids=[case[0] for case in FILE_CASES])
def test_a_bad_file_is_one_line_naming_the_file_and_the_line(script, make_args, fragments, workspace, tiny_assets,
                                                             capsys):
    test_bad_input_gets_one_line_exit_2_and_changes_nothing(script, make_args, fragments, workspace, tiny_assets,
                                                            capsys)


def test_a_config_file_that_yaml_cannot_build_is_one_line(tmp_path, capsys):
    """YAML that parses but holds a value it cannot build (a 13th month) or a key that is no name."""
    for text in ("beta: 0.1\nseed: 2024-13-45\n", "beta: 0.1\n12: 3\n"):
        (tmp_path / "config.yaml").write_text(text)
        assert_one_line_error(run_in_process("dpo", "--config", tmp_path / "config.yaml", capsys=capsys),
                              "config.yaml")


def test_a_config_file_of_random_bytes_is_one_line(tmp_path, capsys):
    write_bytes(tmp_path / "random.yaml", RANDOM_BYTES)
    assert_one_line_error(run_in_process("dpo", "--config", tmp_path / "random.yaml", capsys=capsys),
                          "random.yaml line 2 is not UTF-8 text")


# Models of the wrong kind are refused from their config alone, before any weights load.
@pytest.mark.parametrize("script, config, option, model, fragments", [
    ("preference_pairs", "pairs.yaml", "--classifier_name_or_path", "runs/tiny/sft",
     ["classifier_name_or_path", "is a GPT2LMHeadModel, not a sequence classifier"]),
    ("eval", "eval.yaml", "--classifier_name_or_path", "runs/tiny/sft",
     ["classifier_name_or_path", "is a GPT2LMHeadModel, not a sequence classifier"]),
    ("preference_pairs", "pairs.yaml", "--model_name_or_path", ".cache/embedded/classifier",
     ["model_name_or_path", "is a RobertaForSequenceClassification, not a causal language model"]),
], ids=["pairs with a causal LM as classifier", "eval with a causal LM as classifier",
        "pairs with a classifier as policy"])
def test_a_model_of_the_wrong_kind_is_refused_before_any_weights_load(script, config, option, model, fragments,
                                                                     tiny_pipeline, tmp_path, monkeypatch, capsys):
    from transformers import PreTrainedModel

    def no_weights(cls, *args, **kwargs):
        raise AssertionError(f"{cls.__name__} weights were loaded before the check")

    workspace = tiny_workspace(tiny_pipeline, script, tmp_path / "workspace")
    monkeypatch.chdir(workspace)
    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(no_weights))
    before = snapshot(workspace / "runs", workspace / "generations")
    result = run_in_process(script, "--config", REPO / "configs" / "tiny" / config, option, model, capsys=capsys)
    assert_one_line_error(result, *fragments)
    assert snapshot(workspace / "runs", workspace / "generations") == before


# The online RL settings, on configs/tiny/rl.yaml in a folder holding every step's input.
@pytest.mark.parametrize("sweep, extra, fragments", [
    ("method=ppo,beta=0.1", [], ["method=ppo is not one of rloo, grpo, online_dpo"]),
    ("beta=0.1", ["--loss_type", "grpo"], ["loss_type has no effect with method rloo"]),
    ("method=online_dpo,beta=0.1", [], ["num_generations=4 has no effect with method online_dpo", "2 completions"]),
    ("method=online_dpo,beta=0.1,num_generations=2", ["--num_iterations", "2", "--loss_type", "grpo"],
     ["loss_type, num_iterations have no effect with method online_dpo"]),
    ("beta=-1", [], ["beta must be a positive number", "-1"]),
    ("beta=0.1", ["--disable_dropout", "false"], ["disable_dropout: false is refused", "online RL"]),
    ("beta=0.1,disable_dropout=false", [], ["disable_dropout: false is refused"]),
    ("method=grpo,beta=0.1", ["--cast_lm_head_to_fp32", "true"], ["cast_lm_head_to_fp32", "float32 already"]),
    ("reward=reward_model,beta=0.1", ["--reward_model_path", "no-such-folder"],
     ["reward_model_path", "no finished reward model"]),
])
def test_bad_rl_input_is_one_line_and_writes_nothing(sweep, extra, fragments, tiny_pipeline, tmp_path, monkeypatch,
                                                     capsys):
    workspace = tiny_workspace(tiny_pipeline, "rl", tmp_path / "workspace")
    monkeypatch.chdir(workspace)
    before = snapshot(workspace / "runs", workspace / "generations")
    result = run_in_process("rl", "--config", REPO / "configs" / "tiny" / "rl.yaml", "--sweep", sweep, *extra,
                            capsys=capsys)
    assert_one_line_error(result, *fragments)
    assert snapshot(workspace / "runs", workspace / "generations") == before


# Full-scale configs on a machine without the hub, and steps run before their inputs exist.
def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    for fragment in fragments:
        assert fragment in last, last


UNREACHABLE_HUB = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens on port 9


def run_in_process(script_name, *args, capsys):
    """The script's entry point in this process (cheaper than a new interpreter): its exit code and stderr."""
    import importlib

    from dpo_pipeline.cli import run_script

    script = importlib.import_module(script_name)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        run_script(script.main, script.dataclass_types(), [str(arg) for arg in args])
    return subprocess.CompletedProcess(args, stopped.value.code, "", capsys.readouterr().err)


def test_a_full_scale_config_fails_with_one_line_when_the_hub_is_unreachable(tmp_path):
    """As a user types it: no traceback reaches the terminal, and nothing is half-made."""
    result = run_command("sft.py", "--config", REPO / "configs/gpt2-large/sft.yaml", cwd=tmp_path,
                         env=UNREACHABLE_HUB, check=False)
    assert_one_line_error(result, "cannot reach the Hugging Face Hub")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("script, config", [
    ("preference_pairs", "gpt2-large/pairs.yaml"), ("eval", "gpt2-large/eval.yaml"),
    ("preference_pairs", "paper/pairs.yaml"), ("eval", "paper/eval.yaml"),
    ("dpo", "ultrafeedback/dpo_full_8x80gb.yaml"), ("eval", "ultrafeedback/eval.yaml"),
])
def test_every_full_scale_config_fails_with_one_line_when_the_hub_is_unreachable(script, config, tmp_path,
                                                                               monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for key, value in UNREACHABLE_HUB.items():
        monkeypatch.setenv(key, value)
    result = run_in_process(script, "--config", REPO / "configs" / config, capsys=capsys)
    assert_one_line_error(result, "cannot reach the Hugging Face Hub")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "generations").exists()  # nothing half-made


def test_the_ultrafeedback_qlora_config_fails_with_one_line_offline(tmp_path):
    """As a user types it on a machine without the hub, bitsandbytes or a GPU: one line, whichever is missing first."""
    result = run_command("dpo.py", "--config", REPO / "configs/ultrafeedback/dpo_lora_24gb.yaml", cwd=tmp_path,
                         env=UNREACHABLE_HUB, check=False)
    assert_one_line_error(result, "")
    assert any(reason in result.stderr for reason in ("load_in_4bit needs", "cannot reach the Hugging Face Hub"))
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("script", ["reward_model", "rl"])
def test_the_full_scale_rl_configs_fail_offline_with_one_line(script, tmp_path, monkeypatch, capsys):
    """Run before the SFT model and the pairs exist, with the hub unreachable: one line naming what is missing (RL
    starts from the SFT model, which does not exist yet; the reward model from the base model, on the Hub)."""
    monkeypatch.chdir(tmp_path)
    for key, value in UNREACHABLE_HUB.items():
        monkeypatch.setenv(key, value)
    missing = {"rl": "does not exist", "reward_model": "cannot reach the Hugging Face Hub"}[script]
    for scale in ("gpt2-large", "paper"):
        result = run_in_process(script, "--config", REPO / "configs" / scale / f"{script}.yaml", capsys=capsys)
        assert_one_line_error(result, missing)
    assert not any(tmp_path.iterdir())  # nothing half-made


def test_dpo_before_its_inputs_exist_fails_with_one_line(tmp_path, monkeypatch, capsys):
    """Step 3 run before steps 1 and 2: the first missing input is named (the SFT model, then the pairs)."""
    monkeypatch.chdir(tmp_path)
    result = run_in_process("dpo", "--config", REPO / "configs/gpt2-large/dpo.yaml", capsys=capsys)
    assert_one_line_error(result, "model_name_or_path", "runs/gpt2-large/sft", "does not exist")
    (tmp_path / "runs/gpt2-large/sft").mkdir(parents=True)
    result = run_in_process("dpo", "--config", REPO / "configs/gpt2-large/dpo.yaml", capsys=capsys)
    assert_one_line_error(result, "pairs_file", "does not exist")


def test_bad_config_key_and_bad_value_fail_with_one_line(tmp_path, capsys):
    config = tmp_path / "dpo.yaml"
    config.write_text((REPO / "configs/tiny/dpo.yaml").read_text() + "betta: 0.5\n")
    assert_one_line_error(run_in_process("dpo", "--config", config, capsys=capsys), "betta")
    assert_one_line_error(run_in_process("preference_pairs", "--config", REPO / "configs/tiny/pairs.yaml",
                                         "--completions_per_prompt", "1", capsys=capsys), "completions_per_prompt")


def test_a_launcher_imposing_another_precision_is_one_line_and_writes_nothing(workspace, tiny_assets, capsys,
                                                                              monkeypatch):
    """`accelerate launch` with a config's `mixed_precision: bf16` (the environment it sets for the script) and a run
    whose config says float32 (bf16 false, as on a CPU): transformers would train in bfloat16 while run_config.json
    said float32. Refused with the two ways out, nothing written."""
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    before = snapshot(workspace, tiny_assets["root"])
    result = run_in_process("dpo", *dpo_args(workspace, tiny_assets, workspace / "pairs.jsonl"), capsys=capsys)
    assert_one_line_error(result, "the launcher imposes mixed precision bf16", "asks for no",
                          "--mixed_precision no")
    assert snapshot(workspace, tiny_assets["root"]) == before
