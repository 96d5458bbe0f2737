"""Review cleaning, prefix lengths and prompt building."""

import numpy as np
import pytest

from sentiment_dpo.data import build_prompts, clean_review, draw_prefix_lengths, load_reviews
from sentiment_dpo.cli import PipelineError


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
