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


class UnlikelihoodTrainer(DPOTrainer):
    """The unlikelihood baseline (`losses.unlikelihood_loss`, weight `alpha`) on TRL's `DPOTrainer`: its dataset
    preparation (sampled token ids as they are), collator ([chosen; rejected] in one padded batch), fused
    log-probability head, logging and checkpoints, with only the loss replaced. The loss reads no reference model,
    so none is kept: TRL keeps none when told the reference log-probs are precomputed, and this trainer precomputes
    nothing. Dropout is off, as in every run of the pipeline's preference training: a loss on log-probabilities of
    given tokens is measured on the model eval.py samples, not on a random thinned one."""

    def __init__(self, *args, alpha: float, **kwargs):
        training_args = kwargs["args"]
        # Set here, not only by the stage: whoever makes this trainer gets no reference model and no dropout.
        training_args.precompute_ref_log_probs = True
        training_args.disable_dropout = True
        self.alpha = alpha
        super().__init__(*args, **kwargs)

    def _precompute_ref_logps(self, dataset, name, batch_size):
        return dataset  # no reference log-probs: the loss has no reference term

    def _compute_loss(self, model, inputs, return_outputs):
        import torch

        from .losses import unlikelihood_loss

        mode = "train" if self.model.training else "eval"
        model_kwargs = {key: value for key, value in inputs.items()
                        if key not in ("completion_mask", "ref_chosen_logps", "ref_rejected_logps")}
        model_kwargs["use_cache"] = False
        completion_mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        # The log-prob at position t is that of token t + 1: the mask shifts with it (as in TRL's own loss).
        mask = completion_mask[..., 1:]
        token_logps = outputs.log_probs[:, -mask.size(1):].float()
        chosen_logps, rejected_logps = token_logps.chunk(2, dim=0)  # the batch is [chosen; rejected]
        chosen_mask, rejected_mask = mask.chunk(2, dim=0)
        terms = unlikelihood_loss(chosen_logps, rejected_logps, chosen_mask, rejected_mask, self.alpha)
        for key in ("chosen_logps", "rejected_logps"):
            self._metrics[mode][f"logps/{key.split('_')[0]}"].append(
                self.accelerator.gather(terms[key].detach()).mean().item())
        margins = (terms["chosen_logps"] - terms["rejected_logps"]).detach()
        self._metrics[mode]["logps/margins"].append(self.accelerator.gather(margins).mean().item())
        self._metrics[mode]["unlikelihood/rejected"].append(
            self.accelerator.gather(terms["rejected_unlikelihood"].detach()).mean().item())
        if return_outputs:  # as TRL's loss does: the fused head builds no logits, so they take a forward of their own
            with torch.no_grad():
                outputs = model(**model_kwargs)
            return terms["loss"], outputs
        return terms["loss"]
