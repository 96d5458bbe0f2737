"""TRL's trainers, where the pipeline needs them to do one thing more."""

from __future__ import annotations

from types import SimpleNamespace

import trl

from .pairs import TOKENIZED_COLUMNS


class DPOTrainer(trl.DPOTrainer):
    """TRL's `DPOTrainer`, which also takes pairs already in TRL's tokenized format (`prompt_ids`, `chosen_ids`,
    `rejected_ids`) as they are. TRL 1.16 prepares every dataset from text (extracting the prompt, appending EOS,
    tokenizing prompt + completion again); for pairs sampled by preference_pairs.py that would train on token
    sequences the policy never sampled. Such a dataset goes straight to TRL's own collator and loss; any other
    dataset is prepared by TRL as usual.
    """

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if all(column in dataset.column_names for column in TOKENIZED_COLUMNS):
            return dataset
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)


def tokenize_preference_pairs(dataset, tokenizer):
    """The pairs in TRL's tokenized format, as `DPOTrainer` trains on them: token ids as they are, else TRL's own
    preparation of text (or conversational) pairs, run without a trainer, so that held-out log-probabilities are
    taken over exactly the tokens a DPO run on such pairs would train on."""
    if all(column in dataset.column_names for column in TOKENIZED_COLUMNS):
        return dataset
    # `_prepare_dataset` reads only the tokenizer (for EOS) from the trainer and these three settings.
    trainer = SimpleNamespace(_tokenizer=tokenizer)
    settings = SimpleNamespace(dataset_num_proc=None, max_length=None, truncation_mode="keep_start")
    return trl.DPOTrainer._prepare_dataset(trainer, dataset, tokenizer, settings, "held-out")
