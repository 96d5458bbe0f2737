"""Review cleaning, prefix lengths and prompt building."""

import numpy as np
import pytest

from dpo_pipeline.errors import PipelineError
from dpo_pipeline.tasks.sentiment.reviews import build_prompts, clean_review, draw_prefix_lengths, load_reviews


def test_clean_review_removes_html_breaks():
    assert clean_review("Great film.<br /><br />Really.<BR>Yes<br/>no") == "Great film. Really. Yes no"
    assert clean_review("  a \n\t b  ") == "a b"


def test_prefix_lengths_are_uniform_on_2_to_8_and_seeded():
    lengths = draw_prefix_lengths(7000, 2, 8, seed=3)
    assert lengths.min() == 2 and lengths.max() == 8
    counts = np.bincount(lengths, minlength=9)[2:]
    assert np.all(np.abs(counts - 1000) < 120)  # 7 values, 1000 expected each; sd ~29
    assert np.array_equal(lengths, draw_prefix_lengths(7000, 2, 8, seed=3))
    assert not np.array_equal(lengths, draw_prefix_lengths(7000, 2, 8, seed=4))


def test_prompts_are_balanced_review_prefixes(tiny_assets):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_assets["policy_init"])
    reviews = load_reviews(str(tiny_assets["data"]), "train")
    assert not any("<br" in text for text in reviews["text"])
    prompts = build_prompts(reviews, tokenizer, num_prompts=40, min_tokens=2, max_tokens=8, seed=1)
    assert len(prompts) == 40
    assert sorted(p.label for p in prompts) == [0] * 20 + [1] * 20
    assert [p.label for p in prompts[:4]] in ([0, 1, 0, 1], [1, 0, 1, 0])  # interleaved classes
    for prompt in prompts:
        review_ids = tokenizer(reviews[prompt.source_index]["text"], add_special_tokens=False)["input_ids"]
        assert 2 <= prompt.prefix_tokens <= 8
        assert list(prompt.prompt_token_ids) == review_ids[: prompt.prefix_tokens]  # the review's own tokens
        assert prompt.prompt == tokenizer.decode(review_ids[: prompt.prefix_tokens])
        assert len(review_ids) > prompt.prefix_tokens
        assert reviews[prompt.source_index]["text"].startswith(prompt.prompt)
    assert len({p.prefix_tokens for p in prompts}) > 3
    assert prompts == build_prompts(reviews, tokenizer, 40, 2, 8, seed=1)


def test_missing_dataset_and_column_are_one_line_errors(tiny_assets, tmp_path):
    with pytest.raises(PipelineError, match="does not exist"):
        load_reviews(str(tmp_path / "nowhere"), "train")
    with pytest.raises(PipelineError, match="no column"):
        load_reviews(str(tiny_assets["data"]), "train", text_column="review")


def test_no_prompt_ends_inside_a_character(tiny_assets):
    """Byte-level BPE spells a character it never merged (here the 3-byte U+2019 and the 4-byte emoji) with one
    token per byte, so a prefix of tokens can end inside it and decode to U+FFFD. Such a prefix is moved to a
    whole-character boundary: no prompt holds a replacement character its review does not."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_assets["policy_init"])
    texts = [f"{'It doesn’t' if i % 3 else 'A 😀 film'} {'work at all' if i % 2 else 'is great'} number {i}."
             for i in range(60)]
    reviews = Dataset.from_dict({"text": texts + ["Broken \ufffd text is here already."],
                                 "label": [i % 2 for i in range(61)]})
    prompts = build_prompts(reviews, tokenizer, num_prompts=61, min_tokens=2, max_tokens=8, seed=0)
    assert len(prompts) == 61
    cut = 0
    for prompt in prompts:
        text = reviews[prompt.source_index]["text"]
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert text.startswith(prompt.prompt) and list(prompt.prompt_token_ids) == ids[: prompt.prefix_tokens]
        assert "\ufffd" not in prompt.prompt or "\ufffd" in text[: len(prompt.prompt)]
        assert 2 <= prompt.prefix_tokens <= 8
        cut += any("\ufffd" in tokenizer.decode(ids[:k]) for k in range(2, 9))
    assert cut > 20  # most of these reviews have a prefix length that would have cut a character


def test_string_labels_are_mapped_by_name_and_others_refused(tmp_path):
    """IMDb's most common file: a CSV with columns review,sentiment and labels positive/negative."""
    csv = tmp_path / "imdb.csv"
    csv.write_text('review,sentiment\n"One of the best films.<br /><br />Loved it",positive\n'
                   '"Dull, dull, dull.",negative\n"Great, GREAT fun",Positive\n')
    reviews = load_reviews(str(csv), "train", text_column="review", label_column="sentiment")
    assert reviews["label"] == [1, 0, 1] and reviews["text"][0] == "One of the best films. Loved it"
    (tmp_path / "odd.csv").write_text('review,sentiment\n"Fine.",positive\n"Meh.",neutral\n')
    with pytest.raises(PipelineError, match="label 'neutral' in column sentiment"):
        load_reviews(str(tmp_path / "odd.csv"), "train", text_column="review", label_column="sentiment")


def test_the_warning_says_why_fewer_prompts_were_made(tiny_assets, caplog):
    from datasets import Dataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_assets["policy_init"])
    reviews = Dataset.from_dict({"text": ["the film is great and moving and fun"] * 6 + ["dull"] * 4 +
                                 ["the film is dull and tedious and long"] * 2,
                                 "label": [1] * 6 + [0] * 6})
    prompts = build_prompts(reviews, tokenizer, num_prompts=10, min_tokens=2, max_tokens=3, seed=0, split="train")
    assert sorted(p.label for p in prompts) == [0, 0, 1, 1, 1, 1, 1]
    message = caplog.records[-1].getMessage()
    assert "Made 7 of the 10 prompts asked for from the 12 reviews of split 'train'" in message
    assert "4 are no longer than the prefix length drawn for them" in message
    assert "class 0 has 2 usable reviews for its quota of 5" in message

