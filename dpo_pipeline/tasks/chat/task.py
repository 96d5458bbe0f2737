"""The chat task's parts, as the shared pipeline asks for them (`tasks.Task`): the conversations of a preference
dataset as prompts, its own test split as held-out pairs, a reward only where a classifier is named, and a judge
asked which answer is more helpful."""

from __future__ import annotations

from ...models import check_classifier_reward, describe_classifier_reward, load_classifier_reward
from .. import Task, register_task
from .config import ChatAssetsArguments
from .prompts import chat_prompts

JUDGE_TEMPLATE = (
    "Two assistant answers to the same conversation follow.\n"
    "Conversation:\n{prompt}\n\n"
    "Answer A: {first}\n\n"
    "Answer B: {second}\n\n"
    "Which answer is more helpful, accurate and appropriate? Reply with A, B, or tie.\n"
    "Verdict:"
)


def evaluation_prompts(args, tokenizer) -> list:
    return chat_prompts(args.dataset_name, args.dataset_split, args.dataset_config, tokenizer, args.num_prompts,
                        args.seed)


def heldout_pairs(args) -> dict:
    """Without a heldout_pairs_file, the pairs of the preference dataset's evaluation split."""
    return {"source": args.dataset_name, "split": args.dataset_split, "config_name": args.dataset_config,
            "field_name": "dataset_name"}


def check_reward(args) -> None:
    if args.classifier_name_or_path:
        check_classifier_reward(args)


def load_reward(args, device, dtype):
    return load_classifier_reward(args, device, dtype) if args.classifier_name_or_path else None


def describe_prompts(args, num_prompts: int) -> str:
    return f"{num_prompts} conversations of `{args.dataset_name}` ({args.dataset_split} split), rendered by the chat " \
           "template"


TASK = register_task(Task(
    name="chat",
    description="chat preferences (UltraFeedback-style): conversations of a preference dataset, held-out accuracy, "
                "exact KL and an LLM judge",
    evaluation_prompts=evaluation_prompts, load_reward=load_reward, check_reward=check_reward,
    has_reward=lambda args: bool(args.classifier_name_or_path), judge_template=JUDGE_TEMPLATE,
    heldout_pairs=heldout_pairs, describe_prompts=describe_prompts, describe_reward=describe_classifier_reward,
    prompt_noun="conversations", assets="dpo_pipeline.tasks.chat.embedded", config_classes=(ChatAssetsArguments,),
))
