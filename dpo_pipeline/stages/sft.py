"""SFT with TRL's `SFTTrainer` (sft.py): on a dataset of text, conversations, prompt + completion or token ids; or,
for the Preferred-FT baseline (DPO paper, section 6), on the chosen completions of a pairs file; or, with a judge
template, a judge fine-tuned on the verdicts of a pairs file. One run, in the output folder itself, through the sweep
engine."""

from __future__ import annotations

import logging
from pathlib import Path

from ..arguments import SFTScriptArguments
from ..data import load_split, load_texts
from ..errors import PipelineError
from ..hub import require_source
from ..judge import judge_training_examples
from ..models import check_causal_lm, check_model_flags, context_length, load_tokenizer, model_init_kwargs
from ..preference_data import check_pairs_match_tokenizer, check_prompt_lengths, is_tokenized, load_preferences
from ..runs import run_info
from ..sweep import StageRecipe, SweepRun, file_sha256, keep_hub_token_out_of_checkpoints, run_sweep
from ..tasks import get_task

logger = logging.getLogger(__name__)


def sft_data(script_args: SFTScriptArguments, split: str):
    """One split of sft.py's data, as TRL's SFTTrainer takes it: text, messages (a conversation, rendered by the chat
    template), prompt + completion, or input_ids. `text_column` names the text column; the task's cleaning (IMDb's
    `<br />` and white space, for the sentiment task) only where the config asks for it (`clean_reviews`)."""
    if script_args.clean_reviews:
        return load_texts(script_args.dataset_name, split, script_args.dataset_config, script_args.text_column,
                          get_task(script_args.task).clean_text)
    dataset = load_split(script_args.dataset_name, split, script_args.dataset_config)
    if script_args.text_column != "text" and script_args.text_column in dataset.column_names:
        dataset = dataset.rename_column(script_args.text_column, "text")
    columns = set(dataset.column_names)
    if not ({"text"} <= columns or {"messages"} <= columns or {"prompt", "completion"} <= columns
            or {"input_ids"} <= columns):
        raise PipelineError(f"dataset_name: {script_args.dataset_name} ({split}) has none of the columns SFT trains "
                            f"on (text, messages, prompt + completion, input_ids); it has {', '.join(sorted(columns))}"
                            "; name the text column with text_column")
    if "messages" in columns and "prompt" in columns and "completion" not in columns:
        # UltraChat's layout: a text prompt beside the conversation that starts with it. TRL would read a prompt
        # column as a prompt-completion pair (and fail on the missing completion): train on the conversation.
        dataset = dataset.remove_columns("prompt")
    return dataset


def preferred_completions(pairs):
    """Preferred-FT's data (DPO paper, section 6): every distinct (prompt, chosen completion) of the pairs (from
    `load_preferences`), with the loss on the completion only. Pairs with token ids give `input_ids` and a
    `completion_mask` (the sampled ids, EOS only where sampled); text pairs give TRL's prompt-completion format."""
    from datasets import Dataset

    if is_tokenized(pairs):
        unique = dict.fromkeys((tuple(p), tuple(c)) for p, c in zip(pairs["prompt_ids"], pairs["chosen_ids"]))
        examples = [{"input_ids": [*prompt, *chosen], "completion_mask": [0] * len(prompt) + [1] * len(chosen)}
                    for prompt, chosen in unique]
        return Dataset.from_list(examples)
    unique = dict.fromkeys(zip(pairs["prompt"], pairs["chosen"]))
    return Dataset.from_list([{"prompt": prompt, "completion": chosen} for prompt, chosen in unique])


def judge_verdicts(pairs, template: str, tokenizer, limit: int | None, source: str):
    """A judge's fine-tuning data (`judge.judge_training_examples`: each pair in both orders, the verdict ' A' or
    ' B' the completion); every example must fit `limit` (max_length, and the model's context), since a truncated
    one loses its verdict."""
    from datasets import Dataset

    examples = judge_training_examples(pairs["prompt"], pairs["chosen"], pairs["rejected"], template)
    if limit:
        longest = max(len(tokenizer(example["prompt"] + example["completion"])["input_ids"]) + 1
                      for example in examples)  # + EOS, which TRL appends to the completion
        if longest > limit:
            raise PipelineError(f"judge_template: the judge examples of {source} reach {longest} tokens, over the "
                                f"{limit} that max_length and the model's context allow; shorten the template or "
                                "the completions, or use a model with a longer context")
    return Dataset.from_list(examples)


def run_sft(script_args: SFTScriptArguments, training_args, model_args) -> Path:
    """Fine-tune (or, with `from_scratch`, train) a causal LM with TRL's `SFTTrainer`: on a dataset (text or chat),
    or, for the Preferred-FT baseline, on the chosen completions of a pairs file."""
    from transformers import AutoConfig, AutoModelForCausalLM, set_seed
    from trl import SFTTrainer, get_peft_config, get_quantization_config

    from_pairs = script_args.pairs_file is not None
    judge = script_args.judge_template is not None
    preferred_ft = from_pairs and not judge
    if not from_pairs:
        require_source(script_args.dataset_name, "dataset", "dataset_name")
        if script_args.clean_reviews:
            get_task(script_args.task)
    require_source(model_args.model_name_or_path, "model", "model_name_or_path")
    check_model_flags(model_args, from_scratch=script_args.from_scratch)
    keep_hub_token_out_of_checkpoints(training_args)
    extra, info = {}, None
    if from_pairs:
        if not Path(script_args.pairs_file).is_file():
            raise PipelineError(f"pairs_file: {script_args.pairs_file} does not exist")
        extra = {"pairs": file_sha256(script_args.pairs_file)}
    if preferred_ft:
        info = run_info(method="preferred_ft", beta=None, loss_type=["preferred_ft"], label_smoothing=None,
                        label_noise=0.0, pairs_file=script_args.pairs_file,
                        reference_model=model_args.model_name_or_path)
    run = SweepRun("", training_args, fingerprint_extra=extra, info=info)
    trust = training_args.trust_remote_code
    # the user's own; the trainer factory merges the model settings in
    given_init_kwargs = training_args.model_init_kwargs
    what = "Judge fine-tuning" if judge else "Preferred-FT" if preferred_ft else "SFT"

    def load_inputs():
        tokenizer = load_tokenizer(model_args.model_name_or_path, "model_name_or_path", trust,
                                   model_args.model_revision)
        check_causal_lm(model_args.model_name_or_path, "model_name_or_path", trust, tokenizer)
        if judge:
            pairs = load_preferences(script_args.pairs_file)
            if not {"prompt", "chosen", "rejected"} <= set(pairs.column_names):
                raise PipelineError(f"pairs_file: {script_args.pairs_file} has no prompt, chosen and rejected text: "
                                    "a judge reads text")
            context = context_length(AutoConfig.from_pretrained(model_args.model_name_or_path, trust_remote_code=trust))
            limits = [n for n in (training_args.max_length, context) if n]
            train = judge_verdicts(pairs, script_args.judge_template, tokenizer, min(limits, default=None),
                                   script_args.pairs_file)
        elif preferred_ft:
            pairs = load_preferences(script_args.pairs_file)
            check_pairs_match_tokenizer(pairs, tokenizer, script_args.pairs_file)
            check_prompt_lengths(pairs, tokenizer, training_args.max_length, "pairs_file", script_args.pairs_file)
            train = preferred_completions(pairs)
            if is_tokenized(pairs):
                training_args.completion_only_loss = True  # the loss on the completion ids only, as for text pairs
        else:
            train = sft_data(script_args, script_args.dataset_train_split)
            # TRL's chat_template_path gives a base model (Mistral-7B-v0.1 has none) another tokenizer's template.
            if "messages" in train.column_names and not getattr(tokenizer, "chat_template", None) \
                    and not getattr(training_args, "chat_template_path", None):
                raise PipelineError(f"dataset_name: {script_args.dataset_name} holds conversations (messages), and "
                                    "the model's tokenizer has no chat template to render them")
        if script_args.max_train_samples:
            train = train.shuffle(seed=training_args.seed).select(
                range(min(script_args.max_train_samples, len(train))))
        evaluation = None
        if training_args.eval_strategy != "no" and not from_pairs:
            evaluation = sft_data(script_args, script_args.dataset_test_split)
        return tokenizer, train, evaluation

    def trainer(run, inputs, callbacks):
        tokenizer, train, evaluation = inputs
        args = run.args  # the training config (with push_to_hub off: the sweep publishes the finished run)
        model = model_args.model_name_or_path  # TRL loads it (model_init_kwargs, quantization) as its own scripts do
        args.model_init_kwargs = model_init_kwargs(model_args, trust, given_init_kwargs)
        if script_args.from_scratch:
            set_seed(args.seed)
            config = AutoConfig.from_pretrained(model_args.model_name_or_path, trust_remote_code=trust)
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust)
            model.generation_config.pad_token_id = tokenizer.pad_token_id
            args.model_init_kwargs = None
            logger.info("Training %s from scratch (%.1fM parameters)", config.model_type,
                        model.num_parameters() / 1e6)
        return SFTTrainer(
            model=model, args=args, train_dataset=train, eval_dataset=evaluation, processing_class=tokenizer,
            quantization_config=None if script_args.from_scratch else get_quantization_config(model_args),
            peft_config=peft_config, callbacks=callbacks,
        )

    def summary(run, trainer, result):
        summary = {"global_step": trainer.state.global_step, "train_loss": result.training_loss}
        if trainer.eval_dataset is not None:
            summary.update(trainer.evaluate())
        return summary

    def describe(run, inputs):
        _, train, _ = inputs
        if judge:
            return f"Judge fine-tuning on {len(train)} verdicts (both orders of each pair) of {script_args.pairs_file}"
        if preferred_ft:
            return f"Preferred-FT on the {len(train)} chosen completions of {script_args.pairs_file}"
        return f"SFT on {len(train)} examples of {script_args.dataset_name}"

    peft_config = get_peft_config(model_args)
    stage = "judge" if judge else "preferred_ft" if preferred_ft else "sft"
    recipe = StageRecipe(kind=stage, title=what,
                         load_inputs=load_inputs, examples=lambda run, inputs: len(inputs[1]),
                         trainer=trainer, summary=summary, describe=describe, progress=lambda run: stage)
    run_sweep(recipe, [run], script_args, model_args, peft_config)
    logger.info("%s model in %s", what, training_args.output_dir)
    return Path(training_args.output_dir)
