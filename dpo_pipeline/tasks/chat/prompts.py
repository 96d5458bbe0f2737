"""The chat task's evaluation prompts: the conversations of a preference dataset's test split (the turns before the
answers), rendered by the policy's chat template into the token ids every model continues."""

from __future__ import annotations

import numpy as np

from ...errors import PipelineError
from ...data import Prompt, chat_token_ids, conversation_text, decode_tokens
from ...preference_data import is_tokenized, load_preferences


def conversation_of(record: dict):
    """The prompt of one preference record: its `prompt`, or the beginning its chosen and rejected answers share
    (an implicit prompt, read as TRL reads it)."""
    if "prompt" in record:
        return record["prompt"]
    from trl.data_utils import extract_prompt

    return extract_prompt({"chosen": record["chosen"], "rejected": record["rejected"]})["prompt"]


def chat_prompts(source: str, split: str, config_name: str | None, tokenizer, num_prompts: int, seed: int,
                 field_name: str = "dataset_name") -> list[Prompt]:
    """`num_prompts` distinct prompts of the preference data at `source`, in a seeded random order: conversations
    rendered by the chat template (with the assistant's turn opened), text prompts tokenized as TRL tokenizes them,
    token-id prompts as they are."""
    pairs = load_preferences(source, split, config_name, field_name=field_name)
    tokenized = is_tokenized(pairs)
    seen, prompts = set(), []
    for index in np.random.default_rng(seed).permutation(len(pairs)).tolist():
        record = pairs[index]
        if tokenized:
            ids = list(record["prompt_ids"])
            text = decode_tokens(tokenizer, ids)
        else:
            prompt = conversation_of(record)
            if isinstance(prompt, str):
                ids, text = tokenizer(prompt)["input_ids"], prompt
            else:
                if not getattr(tokenizer, "chat_template", None):
                    raise PipelineError(f"{field_name}: {source} holds conversations, and the SFT model's tokenizer "
                                        "has no chat template to render them")
                ids, text = chat_token_ids(tokenizer, prompt), conversation_text(prompt)
        if tuple(ids) in seen:
            continue
        seen.add(tuple(ids))
        prompts.append(Prompt(len(prompts), index, 0, text, len(ids), tuple(ids), split))
        if len(prompts) == num_prompts:
            break
    if not prompts:
        raise PipelineError(f"{field_name}: {source} ({split}) has no prompts")
    return prompts
