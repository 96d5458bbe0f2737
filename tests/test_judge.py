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
