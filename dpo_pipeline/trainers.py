"""TRL's trainers, where the pipeline needs them to do one thing more.

Every trainer here computes its training log-probabilities in float32 under bf16 autocast (`fused_heads_in_float32`;
online DPO, which has no fused head: `output_layer_in_float32`), and the online RL trainers (RLOO, GRPO, online DPO)
compute them at the positions they sampled at (`LogProbsAtSampledPositions`, `OnlineDPOTrainer`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import trl
import trl.trainer.dpo_trainer
import trl.trainer.grpo_trainer
import trl.trainer.kto_trainer
import trl.trainer.rloo_trainer

from .generation import position_ids_from_mask
from .pair_building import TOKENIZED_COLUMNS, unpaired_examples

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def fused_heads_in_float32(trainer_module):
    """While a TRL trainer of `trainer_module` (e.g. `trl.trainer.dpo_trainer`) is built, every fused LM head it adds
    (`trl.trainer.utils.add_fused_lm_head`: the policy's and the reference model's) runs in float32, outside autocast:
    TRL's own `cast_lm_head_to_fp32=True`, with TRL's choice of temperature and outputs kept.

    Why: under bf16 autocast the fused head computes its logits in bfloat16. GPT-2 Large's logits lie around -60 to
    -70, where bfloat16 values are 0.25 to 0.5 apart, so a 64-token log-probability moves by tenths of a nat: noise of
    beta x 0.3 in the DPO margin at beta = 5, and in RLOO's KL penalty. With it the head casts the hidden states up and
    multiplies them by the head's weights cast up tile by tile, so a head stored in bfloat16 (a model loaded in
    bfloat16) is read as it is, and the input embeddings GPT-2 ties to it are left untouched. (GRPO's own
    `cast_lm_head_to_fp32` also casts the head module to float32, and fails on GPT-2: it looks for
    `model.model.embed_tokens` to keep tied embeddings in their dtype.)

    Why during __init__ rather than patching the heads again afterwards: `DPOTrainer.__init__` precomputes the
    reference log-probs (`precompute_ref_log_probs`) right after adding the heads, so that pass is in float32 too.
    """
    add_fused_lm_head = trainer_module.add_fused_lm_head

    def add_fused_lm_head_in_float32(model, **kwargs):
        return add_fused_lm_head(model, **{**kwargs, "cast_lm_head_to_fp32": True})

    trainer_module.add_fused_lm_head = add_fused_lm_head_in_float32
    try:
        yield
    finally:
        trainer_module.add_fused_lm_head = add_fused_lm_head


class DPOTrainer(trl.DPOTrainer):
    """TRL's `DPOTrainer`, which also takes pairs already in TRL's tokenized format (`prompt_ids`, `chosen_ids`,
    `rejected_ids`) as they are. TRL 1.16 prepares every dataset from text (extracting the prompt, appending EOS,
    tokenizing prompt + completion again); for pairs sampled by preference_pairs.py that would train on token
    sequences the policy never sampled. Such a dataset goes straight to TRL's own collator and loss; any other
    dataset is prepared by TRL as usual.

    Its log-probabilities (the policy's, the reference model's and the precomputed reference ones) are computed in
    float32 whatever the autocast dtype (`fused_heads_in_float32`).
    """

    def __init__(self, *args, reference_cache: str | Path | None = None, **kwargs):
        self.reference_cache = None if reference_cache is None else Path(reference_cache)
        with fused_heads_in_float32(trl.trainer.dpo_trainer):
            super().__init__(*args, **kwargs)

    def _precompute_ref_logps(self, dataset, name: str, batch_size: int):
        """TRL's precomputed reference log-probs (`precompute_ref_log_probs`), kept on disk in `reference_cache` (the
        sweep folder's `.reference_logps/`) under a key of everything they depend on (`reference_logps_key`): the
        reference's weights, the pairs, the settings that shape the batches and the precision. Every run of a sweep
        on the same pairs and every resumed run reads them back: one reference pass over the pairs per sweep, not
        one per run (TRL caches only datasets backed by files; the pipeline's pairs are built in memory, so TRL's
        cache lives in a temporary folder of one process). Written atomically by the main process; a file of
        another length than the pairs is computed again."""
        if self.reference_cache is None:
            return super()._precompute_ref_logps(dataset, name, batch_size)
        from safetensors.torch import load_file, save_file

        path = self.reference_cache / f"{name}-{reference_logps_key(self, dataset, batch_size)}.safetensors"
        if path.is_file():
            cached = load_file(path)
            if all(len(cached[column]) == len(dataset) for column in REFERENCE_COLUMNS):
                logger.info("Reference log-probs of the %s pairs read from %s", name, path)
                for column in REFERENCE_COLUMNS:
                    dataset = dataset.add_column(column, cached[column].tolist())
                return dataset
        dataset = super()._precompute_ref_logps(dataset, name, batch_size)
        if self.accelerator.is_main_process:
            import torch

            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.tmp")
            save_file({column: torch.tensor(dataset[column], dtype=torch.float32) for column in REFERENCE_COLUMNS},
                      temporary)
            os.replace(temporary, path)
        self.accelerator.wait_for_everyone()
        return dataset

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if all(column in dataset.column_names for column in TOKENIZED_COLUMNS):
            return dataset
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)


REFERENCE_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
# Changes whenever the way the reference log-probs are computed changes (float32 head, positions, ...): a cache
# written before is then not read.
REFERENCE_LOGPS_VERSION = 1


def reference_logps_key(trainer, dataset, batch_size: int) -> str:
    """What precomputed reference log-probs depend on, hashed: the reference model's weights (the policy's at the
    start, LoRA adapters left out: with them disabled it is the base model), the pairs (the dataset's content
    fingerprint), the settings that shape its batches (max_length, truncation, padding-free, the batch size and
    the padding token) and the precision (autocast dtype, the model's dtype), and the versions of TRL and of this
    computation."""
    import hashlib

    import torch

    args = trainer.args
    reference = trainer.ref_model or trainer.model
    digest = hashlib.sha256()
    for key, tensor in sorted(reference.state_dict().items()):
        if "lora_" in key:
            continue
        tensor = tensor.detach().cpu()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update((tensor.float() if tensor.dtype in (torch.bfloat16, torch.float16) else tensor).numpy().tobytes())
    settings = {"version": REFERENCE_LOGPS_VERSION, "trl": trl.__version__, "dataset": dataset._fingerprint,
                "max_length": args.max_length, "truncation_mode": args.truncation_mode,
                "padding_free": args.padding_free, "batch_size": batch_size,
                "pad_token_id": getattr(trainer.data_collator, "pad_token_id", None), "bf16": args.bf16,
                "fp16": args.fp16,
                "dtype": str(next(reference.parameters()).dtype)}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


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


class KTOTrainer(trl.KTOTrainer):
    """TRL's `KTOTrainer`, which also takes pairs of sampled token ids (`prompt_ids`, `chosen_ids`, `rejected_ids`) and
    trains on their unpaired examples (`pair_building.unpaired_examples`: each distinct completion once, desirable or
    undesirable by its pairs) as they are. TRL 1.16 prepares every dataset from text: it unpairs text pairs, appends
    EOS to every completion and tokenizes prompt + completion again (`KTOTrainer._prepare_dataset`), which would train
    on token sequences the policy never sampled. Here such pairs skip only that: the examples then go through the
    rest of TRL's preparation (an example whose prompt fills max_length dropped, each completion's KL partner by
    TRL's rotation within a batch, its advice on the desirable:undesirable ratio), its collator (prompt + completion,
    cut at max_length, right-padded) and its loss. Any other dataset is prepared by TRL as usual.

    The examples are shuffled with the run's seed before the KL partners are drawn: TRL's KTO trains in the data's
    order (`train_sampling_strategy="sequential"`, which its KL estimate needs), and the pairs come prompt by prompt,
    so unshuffled a batch would hold the completions of one or two prompts, and a completion's "mismatched" KL partner
    would be another completion of its own prompt.

    Its log-probabilities (the policy's, the reference model's, the precomputed ones) are computed in float32 whatever
    the autocast dtype (`fused_heads_in_float32`).
    """

    def __init__(self, *args, **kwargs):
        with fused_heads_in_float32(trl.trainer.kto_trainer):
            super().__init__(*args, **kwargs)

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if not all(column in dataset.column_names for column in TOKENIZED_COLUMNS):
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        from datasets import Dataset

        examples = Dataset.from_list(unpaired_examples(dataset)).shuffle(seed=args.seed).flatten_indices()
        # TRL's steps after its tokenization, as TRL 1.16 takes them
        if args.max_length is not None:  # a prompt that fills max_length leaves no completion token to learn from
            examples = examples.filter(lambda example: len(example["prompt_ids"]) < args.max_length)
        if self.calculate_KL:  # (x_1, y_n), (x_2, y_1), ..., (x_n, y_{n-1}) within each batch
            examples = examples.map(lambda batch: {"KL_completion_ids": batch["completion_ids"][-1:] +
                                                   batch["completion_ids"][:-1]},
                                    batched=True, batch_size=args.per_device_train_batch_size)
        desirable = sum(examples["label"])
        undesirable = len(examples) - desirable
        logger.info("KTO's %s examples: %d desirable, %d undesirable", dataset_name, desirable, undesirable)
        ratio = args.desirable_weight * desirable / (args.undesirable_weight * undesirable or float("nan"))
        if dataset_name == "train" and desirable != undesirable and not 1 <= ratio <= 4 / 3:
            logger.warning("KTO: %d desirable and %d undesirable examples with weights %g and %g: TRL advises "
                           "desirable_weight x desirable / (undesirable_weight x undesirable) in [1, 4/3] (Eq. (8) "
                           "of the KTO paper), here %.2f", desirable, undesirable, args.desirable_weight,
                           args.undesirable_weight, ratio)
        return examples


def _position_ids_from_attention_mask(module, args, kwargs):
    """Forward pre-hook (with_kwargs=True): `position_ids` from the call's attention mask where the caller gave none."""
    if kwargs.get("position_ids") is None and kwargs.get("attention_mask") is not None:
        return args, {**kwargs, "position_ids": position_ids_from_mask(kwargs["attention_mask"])}
    return None


class LogProbsAtSampledPositions:
    """For TRL's RLOO and GRPO trainers: every log-probability pass (the policy's, the reference model's, the old
    policy's) runs at the positions the completions were sampled at.

    The prompts are left-padded. `generate` gives each token the position `cumsum(attention_mask) - 1` (padding at 0),
    but TRL 1.16's `_get_per_token_logps_and_entropies` calls the model with `input_ids` and `attention_mask` only, and
    GPT-2 (learned absolute position embeddings) then counts positions from the first column, padding included: on a
    left-padded row the policy gradient and the KL penalty used the log-probs of another distribution than the one
    sampled (tests/test_online_rl.py: up to 0.14 nats a token on the tiny model). Here each of those
    forwards gets `position_ids_from_mask(attention_mask)` (the same positions; vLLM, which does not pad, counts the
    same way), through a forward pre-hook on the model held for the duration of the call. The forward is TRL's fused
    LM head, which passes its keyword arguments on to the backbone.
    """

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, *args, **kwargs):
        hook = model.register_forward_pre_hook(_position_ids_from_attention_mask, with_kwargs=True)
        try:
            return super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, *args, **kwargs)
        finally:
            hook.remove()


class RLOOTrainer(LogProbsAtSampledPositions, trl.RLOOTrainer):
    """TRL's `RLOOTrainer` with its log-probs at the sampled positions (`LogProbsAtSampledPositions`) and in float32
    whatever the autocast dtype (`fused_heads_in_float32`)."""

    def __init__(self, *args, **kwargs):
        with fused_heads_in_float32(trl.trainer.rloo_trainer):
            super().__init__(*args, **kwargs)


class GRPOTrainer(LogProbsAtSampledPositions, trl.GRPOTrainer):
    """TRL's `GRPOTrainer` with its log-probs at the sampled positions (`LogProbsAtSampledPositions`) and in float32
    whatever the autocast dtype (`fused_heads_in_float32`)."""

    def __init__(self, *args, **kwargs):
        with fused_heads_in_float32(trl.trainer.grpo_trainer):
            super().__init__(*args, **kwargs)


class OnSampledIds:
    """For TRL's trainers that tokenize text pairs row by row (`tokenize_row`: the CPO and ORPO trainers of
    `trl.experimental`): pairs that carry their sampled token ids (`prompt_ids`, `chosen_ids`, `rejected_ids`) are
    trained on as they are, as `DPOTrainer` trains on them. TRL's own rows re-tokenize the text, prepend BOS to the
    prompt and append EOS to every completion: other sequences than the policy sampled. The rows keep TRL's layout
    (prompt ids, then prompt + completion ids with labels -100 on the prompt), each completion cut where prompt +
    completion would pass max_length, as TRL cuts it. Pairs without ids are TRL's as usual."""

    def tokenize_row(self, feature, model=None) -> dict:
        if not all(key in feature for key in TOKENIZED_COLUMNS):
            return super().tokenize_row(feature, model)
        prompt = list(feature["prompt_ids"])
        row = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
        for side in ("chosen", "rejected"):
            completion = list(feature[f"{side}_ids"])
            if self.max_length is not None:
                completion = completion[: max(0, self.max_length - len(prompt))]
            row[f"{side}_input_ids"] = prompt + completion
            row[f"{side}_attention_mask"] = [1] * (len(prompt) + len(completion))
            row[f"{side}_labels"] = [-100] * len(prompt) + completion
        return row


def _cpo_trainer():
    from trl.experimental.cpo import CPOTrainer

    return CPOTrainer


def _orpo_trainer():
    from trl.experimental.orpo import ORPOTrainer

    return ORPOTrainer


class SampledIdsCPOTrainer(OnSampledIds, _cpo_trainer()):
    """TRL's CPO trainer (which computes SimPO with `loss_type="simpo"`) on the sampled token ids (`OnSampledIds`)."""


@contextlib.contextmanager
def output_layer_in_float32(model):
    """While held, `model`'s output layer (an `nn.Linear`: GPT-2's, tied to its input embeddings) computes its logits
    in float32, outside autocast: its input cast up, its weights read as stored and cast up, the gradient reaching
    them as before. For a trainer that takes log-probs from the logits rather than through TRL's fused head (TRL's
    online DPO): the same float32 log-probs as `fused_heads_in_float32` gives the others, for the reasons given
    there. The module is the model's own, so nothing is copied or untied; an output layer of another kind is left as
    it is."""
    import torch

    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear:
        yield
        return

    def forward(hidden_states):
        with torch.autocast(hidden_states.device.type, enabled=False):
            bias = None if head.bias is None else head.bias.float()
            return torch.nn.functional.linear(hidden_states.float(), head.weight.float(), bias)

    head.forward = forward
    try:
        yield
    finally:
        del head.forward


def _online_dpo_trainer():
    from trl.experimental.online_dpo import OnlineDPOTrainer

    return OnlineDPOTrainer


class OnlineDPOTrainer(_online_dpo_trainer()):
    """TRL's online DPO (Guo et al. 2024, "Direct Language Model Alignment from Online AI Feedback"): at every step two
    completions per prompt sampled from the policy being trained, ranked by the reward functions, and DPO's loss on
    that pair against the reference (SFT) model. Here:

    - its log-probs (`_forward`: the policy's and the reference's) are taken at the positions the completions were
      sampled at: TRL left-pads the prompts for `generate`, which counts positions from each row's first real token,
      then calls the model with `input_ids` and `attention_mask` only, and GPT-2 counts from the first column,
      padding included (`LogProbsAtSampledPositions` tells the same of RLOO; the same forward pre-hook fixes it);
    - the logits they come from are float32 whatever the autocast dtype (`output_layer_in_float32`: TRL's online DPO
      has no fused head to cast);
    - the reward functions get each completion as sampled, up to and including its first EOS (TRL hands them the
      padded row, every position after the EOS a pad token: EOS again for GPT-2, which the learned reward model would
      score as part of the sequence), and the prompt's ids as it was sampled (`prompt_ids`), as RLOO's reward
      functions see them.
    """

    _sampled_prompt_ids = None

    def _forward(self, model, prompt_ids, prompt_mask, completion_ids, completion_mask, vision_inputs=None):
        hook = model.register_forward_pre_hook(_position_ids_from_attention_mask, with_kwargs=True)
        try:
            with output_layer_in_float32(self.accelerator.unwrap_model(model)):
                return super()._forward(model, prompt_ids, prompt_mask, completion_ids, completion_mask,
                                        vision_inputs)
        finally:
            hook.remove()

    def _generate(self, model, prompts, images=None):
        generated = super()._generate(model, prompts, images)
        prompt_ids, prompt_mask = generated[:2]
        self._sampled_prompt_ids = [ids[mask.bool()].tolist() for ids, mask in zip(prompt_ids, prompt_mask)]
        return generated

    def _calculate_rewards_from_functions(self, prompts, completions, completion_ids_list, **reward_kwargs):
        sampled = [ids[: next((end + 1 for end, token in enumerate(ids) if token in self.eos_token_ids), len(ids))]
                   for ids in completion_ids_list]
        prompt_ids, self._sampled_prompt_ids = self._sampled_prompt_ids, None
        if prompt_ids is not None and len(prompt_ids) == len(prompts):
            reward_kwargs["prompt_ids"] = prompt_ids
        return super()._calculate_rewards_from_functions(prompts, completions, sampled, **reward_kwargs)


class SampledIdsORPOTrainer(OnSampledIds, _orpo_trainer()):
    """TRL's ORPO trainer on the sampled token ids (`OnSampledIds`)."""
