"""DPO learns from exactly what was sampled: the pairs carry the sampled token ids, a DPO training batch
holds those ids and nothing else (EOS only where it was sampled), TRL never re-tokenizes them, and every untied pair of
a prompt's completions is there, the ones that ended at once included."""

import json
import os
from itertools import combinations

import pytest
import torch

from tests.conftest import REPO, TRAINING_ON_CPU
from tests.helpers import run_python

RETOKENIZATION_WARNING = "The tokenized prompt is not a prefix of the tokenized prompt+completion"
MAX_NEW_TOKENS = 6


def run_script(*args, cwd):
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    result = run_python(args, cwd, environment)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def eos_prone_model(tiny_assets, tmp_path_factory):
    """The tiny random GPT-2 with EOS made likely (about one token in eight), so that some completions end at once
    (EOS alone, empty text) and others run to max_new_tokens without one."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_assets["sft_model"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_assets["sft_model"])
    with torch.no_grad():
        direction = torch.randn(model.config.n_embd, generator=torch.Generator().manual_seed(0))
        model.transformer.ln_f.bias.copy_(direction)
        model.transformer.wte.weight[tokenizer.eos_token_id] = 4.0 * direction / direction.square().sum()
    out = tmp_path_factory.mktemp("eos-prone-model")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def sampled_pairs(tiny_assets, eos_prone_model):
    out = eos_prone_model.parent / "pairs"
    run_script(REPO / "preference_pairs.py", "--model_name_or_path", eos_prone_model, "--classifier_name_or_path",
               tiny_assets["classifier"], "--dataset_name", tiny_assets["data"], "--num_prompts", 24,
               "--heldout_prompts", 4, "--completions_per_prompt", 4, "--max_new_tokens", MAX_NEW_TOKENS,
               "--generation_batch_size", 16, "--classifier_max_length", 64, "--output_dir", out,
               "--report_to", "none", cwd=out.parent)
    return out


def test_every_untied_pair_is_made_from_the_sampled_ids(sampled_pairs, tiny_assets):
    from transformers import AutoTokenizer

    eos = AutoTokenizer.from_pretrained(tiny_assets["sft_model"]).eos_token_id
    records = read_jsonl(sampled_pairs / "completions.jsonl")[:24]
    pairs = read_jsonl(sampled_pairs / "pairs.jsonl")
    for record in records:
        ids, rewards = record["completion_token_ids"], record["rewards"]
        for completion, ended in zip(ids, record["ended_with_eos"]):
            assert ended == (completion[-1] == eos) and eos not in completion[:-1]
            assert ended or len(completion) == MAX_NEW_TOKENS  # no EOS: cut by max_new_tokens
        expected = [(tuple(ids[i]), tuple(ids[j])) if rewards[i] > rewards[j] else (tuple(ids[j]), tuple(ids[i]))
                    for i, j in combinations(range(len(ids)), 2) if rewards[i] != rewards[j]]
        made = [(tuple(p["chosen_ids"]), tuple(p["rejected_ids"])) for p in pairs
                if p["prompt_index"] == record["prompt_index"]]
        assert sorted(made) == sorted(expected)
        assert all(p["prompt_ids"] == record["prompt_token_ids"] for p in pairs
                   if p["prompt_index"] == record["prompt_index"])
    assert all(p["chosen_reward"] > p["rejected_reward"] for p in pairs)
    ended_at_once = [p for p in pairs if [eos] in (p["chosen_ids"], p["rejected_ids"])]
    cut = [p for p in pairs if p["chosen_ids"][-1] != eos or p["rejected_ids"][-1] != eos]
    assert ended_at_once and cut  # both kinds of completion take part in pairs
    assert all(p[key] == "" for p in ended_at_once for key in ("chosen", "rejected") if p[f"{key}_ids"] == [eos])


def test_a_dpo_training_batch_holds_exactly_the_sampled_ids(sampled_pairs, tiny_assets, tmp_path):
    """Every pair's prompt, chosen and rejected ids, as sampled, and no others, reach the loss: the completion mask
    covers the completion's ids (its EOS only where one was sampled) and nothing of the prompt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dpo_pipeline.arguments import DPOTrainingConfig
    from dpo_pipeline.preference_data import load_preferences
    from dpo_pipeline.trainers import DPOTrainer

    pairs_file = sampled_pairs / "pairs.jsonl"
    args = DPOTrainingConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, max_length=64, bf16=False,
                             use_cpu=True, report_to="none", activation_checkpointing=False)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_assets["sft_model"]), args=args,
                         train_dataset=load_preferences(str(pairs_file)),
                         processing_class=AutoTokenizer.from_pretrained(tiny_assets["sft_model"]))
    seen = []
    for batch in trainer.get_train_dataloader():
        half = len(batch["input_ids"]) // 2
        for row, (ids, attention, completion) in enumerate(zip(batch["input_ids"], batch["attention_mask"],
                                                               batch["completion_mask"])):
            ids, completion = ids[attention.bool()], completion[attention.bool()].bool()
            assert completion.any() and not completion[: (~completion).sum()].any()  # prompt, then completion
            seen.append((tuple(ids[~completion].tolist()), tuple(ids[completion].tolist()), row < half))
    pairs = read_jsonl(pairs_file)
    expected = [(tuple(p["prompt_ids"]), tuple(p[key]), key == "chosen_ids") for p in pairs
                for key in ("chosen_ids", "rejected_ids")]
    assert sorted(seen) == sorted(expected)


def test_dpo_py_trains_on_the_ids_and_trl_never_retokenizes(sampled_pairs, tiny_assets, tmp_path, capfd):
    """The real command line on the sampled pairs: no re-tokenization warning. Text pairs (what the pipeline used to
    write) are re-tokenized by TRL, which warns when a completion merges with the prompt's last token ("gre" +
    "at" -> "great"), so the check can fail."""
    common = ["--model_name_or_path", tiny_assets["sft_model"], "--sweep", "beta=0.1", "--max_steps", 2,
              "--per_device_train_batch_size", 8, "--max_length", 64, "--report_to", "none", *TRAINING_ON_CPU]
    log = run_script(REPO / "dpo.py", "--pairs_file", sampled_pairs / "pairs.jsonl", "--output_dir", tmp_path / "ids",
                     *common, cwd=tmp_path).stderr
    assert RETOKENIZATION_WARNING not in log and (tmp_path / "ids" / "beta-0.1" / "model.safetensors").is_file()
    text_only = tmp_path / "text_pairs.jsonl"
    merging = {"prompt": "The film is gre", "chosen": "at fun.", "rejected": "y and dull."}
    text_only.write_text("".join(json.dumps(pair) + "\n" for pair in [merging] + [
        {key: p[key] for key in ("prompt", "chosen", "rejected")} for p in read_jsonl(sampled_pairs / "pairs.jsonl")
        if p["chosen"].strip() and p["rejected"].strip() and p["chosen"] != p["rejected"]]))
    import dpo
    from dpo_pipeline.cli import run_script as run_in_process

    capfd.readouterr()
    run_in_process(dpo.main, dpo.dataclass_types(),
                   [str(arg) for arg in ["--pairs_file", text_only, "--output_dir", tmp_path / "text", *common]])
    assert RETOKENIZATION_WARNING in capfd.readouterr().err


def test_users_imdb_csv_layout_and_held_out_prompts_from_another_split(tiny_assets, tmp_path):
    """The most common IMDb file is a CSV with columns review,sentiment and labels positive/negative: it runs
    through preference_pairs.py with a column mapping. Held-out prompts come from another split (IMDb's
    `unsupervised`), so the train prompts can use every review of theirs."""
    import csv

    from tests.conftest import write_review_splits

    splits = write_review_splits(tmp_path / "jsonl", train_size=40, test_size=30, seed=5)
    folder = tmp_path / "imdb-csv"
    folder.mkdir()
    for split, rows in (("train", splits["train"]), ("unsupervised", splits["test"])):
        with (folder / f"{split}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["review", "sentiment"])
            writer.writerows([row["text"], "positive" if row["label"] else "negative"] for row in rows)
    out = tmp_path / "pairs"
    run_script(REPO / "preference_pairs.py", "--model_name_or_path", tiny_assets["sft_model"],
               "--classifier_name_or_path", tiny_assets["classifier"], "--dataset_name", folder,
               "--text_column", "review", "--label_column", "sentiment", "--num_prompts", 40,
               "--heldout_prompts", 6, "--heldout_split", "unsupervised", "--max_new_tokens", 6,
               "--classifier_max_length", 64, "--output_dir", out, "--report_to", "none", cwd=tmp_path)
    records = read_jsonl(out / "completions.jsonl")
    train, heldout = records[:40], records[40:]
    assert len(heldout) == 6 and {r["split"] for r in train} == {"train"} and {r["split"] for r in heldout} == {
        "unsupervised"}
    assert sorted(r["source_index"] for r in train) == list(range(40))  # every train review gives a prompt
    assert [r["prompt_index"] for r in records] == list(range(46))
    assert sorted(r["label"] for r in train) == [0] * 20 + [1] * 20  # string labels mapped by name
    assert all("<br" not in r["prompt"] for r in records)
    heldout_pairs = read_jsonl(out / "heldout_pairs.jsonl")
    assert heldout_pairs and {p["prompt_index"] for p in heldout_pairs} <= set(range(40, 46))
    assert {p["prompt_index"] for p in read_jsonl(out / "pairs.jsonl")} <= set(range(40))
