"""The chat task as users run it: a chat model trained by sft.py on message lists, DPO on a hand-made
multi-turn conversational JSONL given as --dataset_name, and eval.py's chat report (held-out accuracy on the test
pairs, exact KL, win rates of the classifier and of an LLM judge, response lengths). The scripts run as subprocesses
with real command lines; the tokenization of conversations is checked against the chat template by hand."""

import csv
import json
import random

import pytest

from tests.conftest import TRAINING_ON_CPU, synthetic_review
from tests.helpers import run_command

MOVIES = ["Heat", "Alien", "Vertigo", "Jaws", "Up", "Rocky", "Psycho", "Fargo"]


def request(movie: str, rng: random.Random, multi_turn: bool) -> list[dict]:
    if not multi_turn:
        return [{"role": "user", "content": f"Review {movie} for me."}]
    return [{"role": "system", "content": "You review movies."},
            {"role": "user", "content": f"Have you seen {movie}?"},
            {"role": "assistant", "content": "I have. Shall I tell you what I thought?"},
            {"role": "user", "content": rng.choice(["Yes, go on.", "Please do."])}]


def write_jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def chat_data(root):
    """sft/{train,test}.jsonl of {"messages"}, and prefs/{train,test}.jsonl of conversational pairs (half of them
    multi-turn, with a system turn): chosen a positive review of the movie asked about, rejected a negative one."""
    rng = random.Random(0)
    for split, size in (("train", 96), ("test", 24)):
        conversations = [{"messages": request(rng.choice(MOVIES), rng, i % 2 == 1) +
                          [{"role": "assistant", "content": synthetic_review(rng, i % 3 > 0)}]} for i in range(size)]
        write_jsonl(root / "sft" / f"{split}.jsonl", conversations)
        pairs = [{"prompt": request(rng.choice(MOVIES), rng, i % 2 == 1),
                  "chosen": [{"role": "assistant", "content": synthetic_review(rng, 1)}],
                  "rejected": [{"role": "assistant", "content": synthetic_review(rng, 0)}]} for i in range(size)]
        write_jsonl(root / "prefs" / f"{split}.jsonl", pairs)


@pytest.fixture(scope="module")
def chat(tiny_assets, tmp_path_factory):
    """A chat workspace: chat-init/ (the tiny tokenizer with chat turns and a template, a 2-layer GPT-2 config),
    the data, and runs/sft: the chat model sft.py trains from scratch on the conversations."""
    from dpo_pipeline.tasks.chat.config import ChatAssetsArguments
    from dpo_pipeline.tasks.chat.embedded import save_chat_init

    root = tmp_path_factory.mktemp("chat")
    save_chat_init(tiny_assets["policy_init"], ChatAssetsArguments(n_layer=2, n_embd=32, n_head=2, n_positions=512),
                   root / "chat-init")
    chat_data(root)
    run_command("sft.py", "--model_name_or_path", "chat-init", "--from_scratch", "true", "--dataset_name", "sft",
                "--output_dir", "runs/sft", "--max_steps", 12, "--per_device_train_batch_size", 16,
                "--learning_rate", 5e-3, "--max_length", 96, "--report_to", "none", *TRAINING_ON_CPU, cwd=root)
    return root


def test_conversations_are_tokenized_by_the_chat_template_whole_history_included(chat):
    """TRL renders a multi-turn prompt with the chat template (the assistant's turn opened) and each answer as the
    tokens that follow it, ending in the end-of-turn token; an implicit prompt (UltraFeedback's layout: a text prompt
    beside whole conversations) becomes the same ids."""
    from transformers import AutoTokenizer

    from dpo_pipeline.preference_data import load_preferences
    from dpo_pipeline.trainers import tokenize_preference_pairs

    tokenizer = AutoTokenizer.from_pretrained(chat / "runs/sft")
    explicit = load_preferences(str(chat / "prefs/train.jsonl"))
    records = explicit.to_list()[:8]
    implicit_file = write_jsonl(chat / "ultrafeedback-layout.jsonl", [
        {"prompt": record["prompt"][-1]["content"], "chosen": record["prompt"] + record["chosen"],
         "rejected": record["prompt"] + record["rejected"]} for record in records])
    implicit = load_preferences(str(implicit_file))
    assert implicit.column_names == ["chosen", "rejected"]  # the text prompt dropped: TRL extracts the shared turns
    for pairs in (explicit.select(range(8)), implicit):
        tokenized = tokenize_preference_pairs(pairs, tokenizer)
        for record, row in zip(records, tokenized):
            history = "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in record["prompt"])
            assert tokenizer.decode(row["prompt_ids"]) == history + "<|assistant|>"
            assert tokenizer.decode(row["chosen_ids"]) == record["chosen"][0]["content"] + "<|end|>"
            assert tokenizer.decode(row["rejected_ids"]) == record["rejected"][0]["content"] + "<|end|>"
    assert any(len(record["prompt"]) == 4 for record in records)  # multi-turn histories were among them


def test_sft_trains_a_chat_model_on_message_lists(chat):
    from transformers import AutoTokenizer

    summary = json.loads((chat / "runs/sft/stage_complete.json").read_text())["summary"]
    assert summary["global_step"] == 12
    tokenizer = AutoTokenizer.from_pretrained(chat / "runs/sft")
    assert tokenizer.chat_template and tokenizer.eos_token == "<|end|>"  # the eval's samples stop at a turn's end


@pytest.fixture(scope="module")
def chat_dpo(chat):
    """dpo.py as the issue types it: --dataset_name a hand-made multi-turn conversational JSONL, the chat SFT model;
    held-out pairs evaluated during training from a second file."""
    run_command("dpo.py", "--dataset_name", "prefs/train.jsonl", "--model_name_or_path", "runs/sft",
                "--output_dir", "runs/dpo", "--sweep", "beta=0.1", "--max_steps", 6, "--save_steps", 3,
                "--per_device_train_batch_size", 8, "--learning_rate", 5e-3, "--max_length", 96,
                "--eval_pairs_file", "prefs/test.jsonl", "--eval_strategy", "steps", "--eval_steps", 3,
                "--per_device_eval_batch_size", 8, "--attn_implementation", "eager", "--report_to", "none",
                *TRAINING_ON_CPU, cwd=chat)
    return chat / "runs/dpo/beta-0.1"


def test_dpo_trains_on_a_multi_turn_conversational_dataset(chat_dpo, chat):
    import torch
    from safetensors.torch import load_file

    summary = json.loads((chat_dpo / "stage_complete.json").read_text())["summary"]
    assert summary["global_step"] == 6 and "eval_rewards/accuracies" in summary
    trained, sft = (load_file(folder / "model.safetensors") for folder in (chat_dpo, chat / "runs/sft"))
    assert any(not torch.equal(trained[name], sft[name]) for name in sft)
    info = json.loads((chat_dpo / "sweep_run.json").read_text())
    assert info["pairs_file"] == "prefs/train.jsonl" and info["beta"] == 0.1


def test_eval_reports_a_chat_task_with_judge_kl_and_held_out_accuracy(chat_dpo, chat, tiny_assets):
    """The chat report: every model answers the test split's conversations; exact KL to the SFT model, held-out
    accuracy on the test pairs, the classifier's win rate and the LLM judge's (the tiny chat model as the judge,
    greedy, each comparison in both orders), raw verdicts of both orders kept, both win-rate formulas, the mean answer length."""
    run_command("eval.py", "--task", "chat", "--sft_model_path", "runs/sft", "--dpo_output_dir", "runs/dpo",
                "--dataset_name", "prefs", "--dataset_split", "test", "--num_prompts", 8, "--samples_per_prompt", 2,
                "--max_new_tokens", 12, "--classifier_name_or_path", tiny_assets["classifier"],
                "--score_prompt", "false", "--classifier_max_length", 64, "--judge_model_path", "runs/sft",
                "--judge_prompts", 8, "--judge_max_new_tokens", 4, "--output_dir", "runs/eval", "--report_to", "none",
                cwd=chat)
    out = chat / "runs/eval"
    rows = {row["name"]: row for row in csv.DictReader((out / "frontier.csv").open())}
    assert rows.keys() == {"sft", "beta-0.1/step-3", "beta-0.1/step-6"}  # the checkpoint and the final model
    final = rows["beta-0.1/step-6"]
    assert final["is_final"] == "True"
    assert float(rows["sft"]["kl"]) == 0.0 and float(final["kl"]) > 0.0
    assert final["heldout_pairs"] == "24"  # every test pair, each a right or a wrong ranking
    assert float(final["heldout_accuracy"]) * 24 == pytest.approx(round(float(final["heldout_accuracy"]) * 24))
    for row in rows.values():
        assert float(row["mean_response_tokens"]) > 0
    verdicts = [json.loads(line) for line in (out / "judge" / "beta-0.1__step-6.jsonl").read_text().splitlines()]
    assert len(verdicts) == 8  # every comparison judged in both orders, both raw outputs kept
    assert all("judge_output" in record["model_as_A"] and "judge_output" in record["model_as_B"]
               for record in verdicts)
    wins = sum(record["winner"] == "model" for record in verdicts)
    ties = sum(record["winner"] == "tie" for record in verdicts)
    judged = sum(record["winner"] is not None for record in verdicts)
    if judged:
        assert float(final["judge_win_rate"]) == pytest.approx((wins + ties / 2) / judged)
        assert float(final["judge_win_rate_strict"]) == pytest.approx(wins / judged)
        assert float(final["judge_consistency"]) == pytest.approx(
            sum(record["agree"] is True for record in verdicts) / judged)
    assert float(final["judge_unparsable_share"]) == pytest.approx(1 - judged / 8)
    report = (out / "report.md").read_text()
    assert "win rate" in report.lower()
    assert "Have you seen" in report or "Review " in report  # sample answers shown with their conversations
