"""The sentiment task's parts, as the shared pipeline asks for them (`tasks.Task`): review prefixes as prompts, a
sentiment classifier's P(POSITIVE) as the reward, IMDb's cleaning, and a judge asked which review is more positive."""

from __future__ import annotations

from ...errors import PipelineError
from ...models import check_classifier_reward, describe_classifier_reward, load_classifier_reward
from .. import Task, register_task
from .config import EmbeddedAssetsArguments
from .reviews import build_prompts, clean_review, load_reviews

JUDGE_TEMPLATE = (
    "Two continuations of the same movie review opening follow.\n"
    "Opening: {prompt}\n\n"
    "Review A: {prompt}{first}\n\n"
    "Review B: {prompt}{second}\n\n"
    "Which review is more positive about the movie? Answer with one letter, A or B.\n"
    "Answer:"
)


def _reviews(args, split: str):
    return load_reviews(args.dataset_name, split, args.dataset_config, args.text_column, args.label_column)


def pair_prompts(args, tokenizer) -> tuple[list, int]:
    """The train prompts, then the held-out ones, and how many are train prompts. Held-out prompts come from
    `heldout_split` when it is set (IMDb's `unsupervised` split, say, so that every train review gives a train
    prompt), else from the same split as the train prompts, after them."""
    reviews = _reviews(args, args.dataset_split)
    if not args.heldout_prompts or args.heldout_split in (None, args.dataset_split):
        prompts = build_prompts(reviews, tokenizer, args.num_prompts + args.heldout_prompts, args.min_prefix_tokens,
                                args.max_prefix_tokens, args.seed, split=args.dataset_split)
        if len(prompts) <= args.heldout_prompts:
            raise PipelineError(f"heldout_prompts: the dataset gives only {len(prompts)} prompts, not enough for "
                                f"{args.heldout_prompts} held-out ones and some to train on")
        return prompts, len(prompts) - args.heldout_prompts
    heldout_reviews = _reviews(args, args.heldout_split)
    train = build_prompts(reviews, tokenizer, args.num_prompts, args.min_prefix_tokens, args.max_prefix_tokens,
                          args.seed, split=args.dataset_split)
    heldout = build_prompts(heldout_reviews, tokenizer, args.heldout_prompts, args.min_prefix_tokens,
                            args.max_prefix_tokens, args.seed + 1, split=args.heldout_split, first_index=len(train))
    return train + heldout, len(train)


def evaluation_prompts(args, tokenizer) -> list:
    return build_prompts(_reviews(args, args.dataset_split), tokenizer, args.num_prompts, args.min_prefix_tokens,
                         args.max_prefix_tokens, args.seed, split=args.dataset_split)


def check_reward(args) -> None:
    if not args.classifier_name_or_path:
        raise PipelineError("classifier_name_or_path is not set: the sentiment task's reward is its P(POSITIVE)")
    check_classifier_reward(args)


def describe_prompts(args, num_prompts: int) -> str:
    return (f"{num_prompts} prefixes of `{args.dataset_name}` ({args.dataset_split} split), "
            f"{args.min_prefix_tokens}–{args.max_prefix_tokens} tokens")


TASK = register_task(Task(
    name="sentiment",
    description="controlled sentiment (DPO paper, section 6.1): complete review prefixes, reward = a classifier's "
                "P(POSITIVE)",
    evaluation_prompts=evaluation_prompts, pair_prompts=pair_prompts, load_reward=load_classifier_reward,
    check_reward=check_reward, has_reward=lambda args: True, clean_text=clean_review,
    judge_template=JUDGE_TEMPLATE, describe_prompts=describe_prompts, describe_reward=describe_classifier_reward,
    prompt_noun="prefixes", assets="dpo_pipeline.tasks.sentiment.embedded", config_classes=(EmbeddedAssetsArguments,),
))
