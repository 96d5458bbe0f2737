"""The LLM-as-judge pieces: verdict parsing (including garbage), the seeded order coin, and the tally."""

import pytest

from dpo_pipeline.judge import JudgeItem, judge, model_shown_first, parse_verdict, tally_verdicts


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


def test_the_order_coin_is_seeded_per_prompt_and_fair():
    coins = [model_shown_first(7, index) for index in range(2000)]
    assert coins == [model_shown_first(7, index) for index in range(2000)]  # the same on every call
    assert 0.45 < sum(coins) / len(coins) < 0.55
    assert coins != [model_shown_first(8, index) for index in range(2000)]


def test_tally_counts_wins_losses_ties_and_unparsable_verdicts_by_position():
    """Model shown first (A), second (B), first, second, first, second. Wins: A when first, B when second (items 0
    and 3); losses: items 1 and 4; item 5 a tie; item 2 unparsable. Over the 5 parsable verdicts: win rate with ties
    as half a win (2 + 0.5) / 5 = 0.5, without (the published formula) 2 / 5 = 0.4; unparsable share 1 / 6."""
    model_first = [True, False, True, False, True, False]
    verdicts = ["A", "A", None, "B", "B", "tie"]
    assert tally_verdicts(verdicts, model_first) == pytest.approx({
        "judge_wins": 2, "judge_losses": 2, "judge_ties": 1, "judge_unparsable": 1, "judge_win_rate": 0.5,
        "judge_win_rate_strict": 0.4, "judge_unparsable_share": 1 / 6})


@pytest.mark.parametrize("text", ["Tie", "tie.", "It's a tie", "They are equally good.", "The two are equal",
                                  "Verdict: tie"])
def test_ties_said_in_words_are_ties(text):
    assert parse_verdict(text) == "tie"


def test_a_judge_that_always_says_a_gets_a_win_rate_near_one_half():
    """Position bias is cancelled by the coin: a judge blind to content wins for the model only when the model
    happens to be shown first."""
    items = [JudgeItem(i, "The film", " is great", " is dull") for i in range(400)]
    tally, records = judge(items, lambda prompts: ["A"] * len(prompts), "{prompt}|{first}|{second}", seed=0)
    assert 0.4 < tally["judge_win_rate"] < 0.6 and tally["judge_unparsable"] == 0
    assert all(r["winner"] == ("model" if r["model_shown_as"] == "A" else "baseline") for r in records)


def test_a_judge_that_reads_the_content_finds_the_better_completion_in_either_position():
    items = [JudgeItem(i, "The film", " is great", " is dull") for i in range(50)]

    def content_judge(prompts):
        return ["Answer: A" if prompt.split("|")[1] == " is great" else "Answer: B" for prompt in prompts]

    tally, _ = judge(items, content_judge, "{prompt}|{first}|{second}", seed=3)
    assert tally["judge_wins"] == 50 and tally["judge_win_rate"] == 1.0
