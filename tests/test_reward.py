"""The reward is P(label named POSITIVE), whatever position the classifier gives that label."""

import copy

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from dpo_pipeline.errors import PipelineError
from dpo_pipeline.models import SentimentClassifier

TEXTS = ["The film is great and wonderful.", "The script is awful and boring.", "The cast is dull."]


def _classifier(path):
    return AutoModelForSequenceClassification.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def _with_labels_swapped(model):
    """The same classifier with its two output rows swapped and its labels renamed to match: same predictions,
    POSITIVE now at index 0."""
    swapped = copy.deepcopy(model)
    head = swapped.classifier.out_proj
    with torch.no_grad():
        head.weight.copy_(head.weight.flip(0))
        head.bias.copy_(head.bias.flip(0))
    swapped.config.id2label = {0: "POSITIVE", 1: "NEGATIVE"}
    swapped.config.label2id = {"POSITIVE": 0, "NEGATIVE": 1}
    return swapped


def test_reward_is_looked_up_by_label_name(tiny_assets):
    model, tokenizer = _classifier(tiny_assets["classifier"])
    assert model.config.id2label[1] == "POSITIVE"
    rewards = SentimentClassifier(model, tokenizer).score(TEXTS)
    swapped_rewards = SentimentClassifier(_with_labels_swapped(model), tokenizer).score(TEXTS)
    assert swapped_rewards == pytest.approx(rewards, abs=1e-6)
    # The classifier learned the synthetic reviews: positive words score higher than negative ones.
    assert rewards[0] > 0.5 > rewards[1]


def test_scores_come_back_in_input_order_whatever_the_batching(tiny_assets):
    model, tokenizer = _classifier(tiny_assets["classifier"])
    texts = TEXTS * 3 + ["Great."]
    one_at_a_time = [SentimentClassifier(model, tokenizer).score([text])[0] for text in texts]
    assert SentimentClassifier(model, tokenizer, batch_size=4).score(texts) == pytest.approx(one_at_a_time, abs=1e-5)


def test_classifier_without_positive_label_is_rejected(tiny_assets):
    model, tokenizer = _classifier(tiny_assets["classifier"])
    model.config.id2label = {0: "LABEL_0", 1: "LABEL_1"}
    with pytest.raises(PipelineError, match="POSITIVE"):
        SentimentClassifier(model, tokenizer)
