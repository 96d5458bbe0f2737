"""The LLM-as-judge pieces: verdict parsing (including garbage), both orders of every comparison, and the tally."""

import math

import pytest

from dpo_pipeline.judge import TIE, JudgeItem, combine, judge, parse_verdict, tally_verdicts


@pytest.mark.parametrize("text, verdict", [
    ("A", "A"), (" (B)", "B"), ("B.", "B"), ("A) because it praises the acting", "A"), ("Answer: B", "B"),
    ("answer:\nB", "B"), ("The answer is A.", "A"), ("Review B is more positive than Review A.", "B"),
    ("I prefer Review A", "A"), ("**B**", "B"), ("B is better than A", "B"), ("Verdict - [A]", "A"),
    ("Response B", "B"),
])
def test_verdicts_in_the_usual_forms_are_parsed(text, verdict):
    assert parse_verdict(text) == verdict


@pytest.mark.parametrize("text", [
    "", "   ", "A great movie, really.", "Both are positive.", "Review A and Review B are both fine",
    "the answer is a good one", "Answer: C", "ABBA", "I cannot decide", "B-movie fans will love it",
    "\u00e9\u00e8 \x00 ###", "Neither A nor B",
])
def test_garbage_and_contradictory_verdicts_are_unparsable(text):
    assert parse_verdict(text) is None


def test_tally_combines_the_two_orders_of_each_comparison_worked_by_hand():
    """Six comparisons, (verdict with the policy as A, verdict with it as B):
    0 (A, B): the policy wins in both orders, a win; 1 (B, A): a loss in both, a loss; 2 (A, A): the first position
    both times, the verdicts disagree, a tie; 3 (tie, tie): a tie, agreeing; 4 (A, None): unparsable; 5 (tie, B):
    a tie and a win disagree, a tie. Over the 5 parsable: win rate (1 + 3 / 2) / 5 = 0.5, strict 1 / 5 = 0.2,
    consistency 3 / 5 = 0.6 (comparisons 0, 1, 3), 2 disagreements; unparsable share 1 / 6."""
    as_a = ["A", "B", "A", "tie", "A", "tie"]
    as_b = ["B", "A", "A", "tie", None, "B"]
    tally = tally_verdicts(as_a, as_b)
    assert {k: v for k, v in tally.items() if not k.endswith("_se")} == pytest.approx({
        "judge_wins": 1, "judge_losses": 1, "judge_ties": 3, "judge_disagreements": 2, "judge_unparsable": 1,
        "judge_win_rate": 0.5, "judge_win_rate_strict": 0.2, "judge_consistency": 0.6,
        "judge_unparsable_share": 1 / 6})
    # five one-comparison prompts: the bootstrap SE of a share p is near sqrt(p (1 - p) / 5)
    assert tally["judge_consistency_se"] == pytest.approx(math.sqrt(0.6 * 0.4 / 5), rel=0.15)
    assert combine("A", "B") == ("model", True) and combine("A", "A") == (TIE, False)
    assert combine(None, "B") == (None, None)


@pytest.mark.parametrize("text", ["Tie", "tie.", "It's a tie", "They are equally good.", "The two are equal",
                                  "Verdict: tie"])
def test_ties_said_in_words_are_ties(text):
    assert parse_verdict(text) == "tie"


def test_a_judge_that_always_says_a_gets_ties_not_wins():
    """A judge blind to content that always names the first position disagrees with itself on every comparison:
    every comparison is a tie, the win rate exactly 0.5, the strict one 0, the consistency 0; both orders kept."""
    items = [JudgeItem(i, "The film", " is great", " is dull") for i in range(40)]
    tally, records = judge(items, lambda prompts: ["A"] * len(prompts), "{prompt}|{first}|{second}")
    assert tally["judge_ties"] == 40 and tally["judge_disagreements"] == 40 and tally["judge_unparsable"] == 0
    assert tally["judge_win_rate"] == 0.5 and tally["judge_win_rate_strict"] == 0.0
    assert tally["judge_consistency"] == 0.0 and tally["judge_consistency_se"] == 0.0
    assert all(r["model_as_A"]["winner"] == "model" and r["model_as_B"]["winner"] == "baseline"
               and r["winner"] == "tie" and r["agree"] is False for r in records)


def test_a_biased_judge_that_reads_the_content_still_finds_the_better_completion():
    """A judge that names the better completion, except that on every third comparison shown with the better one
    second it says A anyway (a pull toward the first position): the better completion never loses, and the
    position-biased comparisons become ties, not losses."""
    items = [JudgeItem(i, "The film", " is great", " is dull") for i in range(30)]
    calls = []

    def biased_judge(prompts):
        calls.append(len(prompts))
        verdicts = []
        for index, prompt in enumerate(prompts):
            better_first = prompt.split("|")[1] == " is great"
            pulled = not better_first and (index % len(items)) % 3 == 0
            verdicts.append("Answer: A" if better_first or pulled else "Answer: B")
        return verdicts

    tally, records = judge(items, biased_judge, "{prompt}|{first}|{second}")
    assert calls == [60]  # both orders of every comparison, in one call
    assert tally["judge_wins"] == 20 and tally["judge_ties"] == 10 and tally["judge_losses"] == 0
    assert tally["judge_win_rate"] == pytest.approx(25 / 30) and tally["judge_consistency"] == pytest.approx(20 / 30)
    assert records[0]["model_as_B"] == {"judge_output": "Answer: A", "verdict": "A", "winner": "baseline"}


def test_judge_training_examples_show_each_pair_in_both_orders_worked_by_hand():
    """Two pairs, template "{prompt}|{first}|{second}": four examples, each pair once with its chosen completion first
    (verdict " A") and once second (verdict " B"), so that the letter alone predicts nothing."""
    from dpo_pipeline.judge import judge_training_examples

    examples = judge_training_examples(["P1", "P2"], [" good", " fine"], [" bad", " poor"], "{prompt}|{first}|{second}")
    assert examples == [{"prompt": "P1| good| bad", "completion": " A"}, {"prompt": "P2| fine| poor", "completion": " A"},
                        {"prompt": "P1| bad| good", "completion": " B"}, {"prompt": "P2| poor| fine", "completion": " B"}]


def test_sft_py_fine_tunes_a_judge_whose_verdicts_parse(tiny_assets, pairs_dir, tmp_path):
    """sft.py with judge_template trains on the pairs' verdicts in both orders; the judge it leaves answers every
    judge prompt, in both orders, with a verdict parse_verdict reads (the untrained model answers none)."""
    from transformers import AutoModelForCausalLM

    from dpo_pipeline.judge import greedy_generate_fn, judge_prompts
    from dpo_pipeline.models import load_tokenizer
    from dpo_pipeline.preference_data import load_preferences
    from tests.conftest import TRAINING_ON_CPU
    from tests.helpers import run_command

    template = "{prompt}|{first}|{second}|"
    run_command("sft.py", "--model_name_or_path", tiny_assets["sft_model"], "--pairs_file", pairs_dir / "pairs.jsonl",
                "--judge_template", template, "--output_dir", tmp_path / "judge", "--max_steps", 40,
                "--learning_rate", 3e-3, "--per_device_train_batch_size", 16, "--max_length", 64, "--report_to",
                "none", *TRAINING_ON_CPU, cwd=tmp_path)
    pairs = load_preferences(str(pairs_dir / "pairs.jsonl"))
    items = [JudgeItem(i, p, c, r) for i, (p, c, r) in enumerate(zip(pairs["prompt"], pairs["chosen"],
                                                                      pairs["rejected"]))][:16]
    prompts = [text for order in judge_prompts(items, template) for text in order]

    def verdicts(path):
        model, tokenizer = AutoModelForCausalLM.from_pretrained(path), load_tokenizer(str(path), "judge_model_path")
        return [parse_verdict(text) for text in greedy_generate_fn(model, tokenizer, 2, 32)(prompts)]

    assert all(verdict is None for verdict in verdicts(tiny_assets["sft_model"]))  # else this test could not fail
    assert all(verdict in ("A", "B") for verdict in verdicts(tmp_path / "judge"))


def test_a_judge_template_longer_than_the_context_is_one_line(tiny_assets, pairs_dir, tmp_path):
    """A judge example cut at max_length or the model's context would lose its verdict: one line, exit 2, nothing
    written (the tiny model's context is 64 tokens)."""
    from tests.conftest import TRAINING_ON_CPU
    from tests.helpers import run_command

    long_template = "Two continuations of one review follow. " * 4 + "{prompt}|{first}|{second}|"
    result = run_command("sft.py", "--model_name_or_path", tiny_assets["sft_model"], "--pairs_file",
                         pairs_dir / "pairs.jsonl", "--judge_template", long_template, "--output_dir",
                         tmp_path / "judge", "--max_steps", 1, "--report_to", "none", *TRAINING_ON_CPU, cwd=tmp_path,
                         check=False)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: judge_template: the judge examples"), result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "judge").exists()
