"""LLM-as-judge win rates: a local judge model compares a policy's completion with the SFT model's (each task gives
its own prompt template, `tasks.Task.judge_template`).

Each comparison shows the judge the prompt and the two completions as "A" and "B". Which of the two is shown
first is decided per prompt by a seeded coin, so a judge that prefers the first (or second) position adds noise
but no bias. Decoding is greedy (deterministic), and the verdict is parsed from free text; a verdict that names
neither or both letters counts as unparsable and is reported, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import PipelineError

# The letter must be a capital A or B; the words around it may be in any case. "the answer is a good one" is not
# a verdict, "Answer: a" is not either (a lower-case article is too common to trust).
_LETTER = r"[\(\[\"'*]*\s*([AB])(?![A-Za-z])"
_AFTER_KEYWORD = re.compile(
    r"(?i:\b(?:answer|verdict|choice|winner|preferred|prefer|pick|choose|better|more\s+positive)\b)"
    r"(?i:\s*(?:is|would\s+be|:|=|-)?\s*(?:review|response|option|continuation|text)?)\s*" + _LETTER
)
_NAMED = re.compile(r"(?i:\b(?:review|response|option|continuation)\b)\s+" + _LETTER)
_SUBJECT = re.compile(r"^\W*(?i:(?:review|response|option|continuation)\s+)?([AB])\s+(?i:is|was)\s+"
                      r"(?i:the\s+)?(?i:better|more\s+positive|preferred|winner)")
_BARE = re.compile(r"^\W*([AB])(?:\W*$|[\)\]\.:,])")
# From the most to the least specific: the first pattern that names a letter decides.
_PATTERNS = (_SUBJECT, _AFTER_KEYWORD, _NAMED, _BARE)
# A tie said in words ("Tie", "It's a tie", "They are equally good"), when no letter is named.
_TIE = re.compile(r"(?i)^\W*tie\b|\b(?:verdict|answer)\W*tie\b|\bit'?s a tie\b|\b(?:are|is) (?:a )?tie\b|"
                  r"\bequally (?:good|bad|positive|negative|helpful|useful)\b|\b(?:are|is) equal\b")
TIE = "tie"


def parse_verdict(text: str) -> str | None:
    """"A", "B", "tie", or None when the judge's text names neither letter nor a tie, or both letters (a
    contradiction).

    Accepted forms include "A", " (B)", "B.", "A) because ...", "Answer: B", "The answer is A",
    "Review B is more positive than Review A", "I prefer Review A", "**B**", and for a tie "Tie", "It's a tie",
    "They are equally good". Patterns are tried from the most specific to the least; the first that names a letter
    decides, and naming both is a contradiction. Anything else, including empty text, is unparsable.
    """
    text = text.strip()
    for pattern in _PATTERNS:
        letters = {match.group(1) for match in pattern.finditer(text)}
        if letters:
            return letters.pop() if len(letters) == 1 else None
    return TIE if _TIE.search(text) else None


def model_shown_first(seed: int, prompt_index: int) -> bool:
    """The seeded coin of one prompt: True when the policy's completion is shown as A. It depends only on the seed
    and the prompt, so every policy is judged with the same order on a given prompt."""
    return bool(np.random.default_rng([seed, prompt_index]).random() < 0.5)


@dataclass(frozen=True)
class JudgeItem:
    prompt_index: int
    prompt: str
    model_completion: str
    baseline_completion: str


def judge_prompts(items: Sequence[JudgeItem], template: str, seed: int) -> tuple[list[str], list[bool]]:
    """The judge's prompt of each item and whether the policy's completion is A in it."""
    prompts, model_first = [], []
    for item in items:
        first_is_model = model_shown_first(seed, item.prompt_index)
        first, second = ((item.model_completion, item.baseline_completion) if first_is_model
                         else (item.baseline_completion, item.model_completion))
        # str.replace, not format: a template may hold other braces
        prompts.append(template.replace("{prompt}", item.prompt).replace("{first}", first).replace("{second}", second))
        model_first.append(first_is_model)
    return prompts, model_first


def tally_verdicts(verdicts: Sequence[str | None], model_first: Sequence[bool]) -> dict[str, float]:
    """Counts of the policy's wins, losses and ties against the baseline, and of the unparsable verdicts; over the
    parsable verdicts (n = wins + losses + ties) two win rates:

        judge_win_rate        = (wins + ties / 2) / n     a tie is half a win (as the classifier's win rate)
        judge_win_rate_strict = wins / n                  a tie is no win (the formula of published reproductions)

    and unparsable_share = unparsable / all verdicts.
    """
    if len(verdicts) != len(model_first):
        raise ValueError(f"{len(verdicts)} verdicts for {len(model_first)} comparisons")
    ties = sum(1 for verdict in verdicts if verdict == TIE)
    unparsable = sum(1 for verdict in verdicts if verdict is None)
    wins = sum(1 for verdict, first in zip(verdicts, model_first)
               if verdict in ("A", "B") and (verdict == "A") == first)
    losses = len(verdicts) - wins - ties - unparsable
    decided = wins + losses + ties
    return {
        "judge_wins": wins, "judge_losses": losses, "judge_ties": ties, "judge_unparsable": unparsable,
        "judge_win_rate": (wins + ties / 2) / decided if decided else None,
        "judge_win_rate_strict": wins / decided if decided else None,
        "judge_unparsable_share": unparsable / len(verdicts) if verdicts else None,
    }


def judge(items: Sequence[JudgeItem], generate: Callable[[list[str]], list[str]], template: str,
          seed: int) -> tuple[dict[str, float], list[dict]]:
    """Judge every item with `generate` (judge prompts -> judge outputs); returns the tally and one record per
    item (prompt index, order, raw output, parsed verdict, winner) for auditing."""
    prompts, model_first = judge_prompts(items, template, seed)
    outputs = generate(prompts)
    verdicts = [parse_verdict(output) for output in outputs]
    records = [
        {"prompt_index": item.prompt_index, "model_shown_as": "A" if first else "B", "judge_output": output,
         "verdict": verdict,
         "winner": None if verdict is None else TIE if verdict == TIE else
         ("model" if (verdict == "A") == first else "baseline")}
        for item, first, output, verdict in zip(items, model_first, outputs, verdicts)
    ]
    return tally_verdicts(verdicts, model_first), records


def greedy_generate_fn(model, tokenizer, max_new_tokens: int, batch_size: int) -> Callable[[list[str]], list[str]]:
    """`generate` for `judge`: greedy decoding (deterministic) with a local causal LM; a chat model's prompts are
    wrapped in its chat template as one user turn."""
    import torch

    def generate(prompts: list[str]) -> list[str]:
        # A rendered chat template already holds the model's BOS (Llama 3's <|begin_of_text|>): adding special tokens
        # again would start every judge prompt with two.
        templated = bool(getattr(tokenizer, "chat_template", None))
        if templated:
            prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                     add_generation_prompt=True) for p in prompts]
        context = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
        longest = max((len(tokenizer(p, add_special_tokens=not templated)["input_ids"]) for p in prompts), default=0)
        if context and longest + max_new_tokens > context:
            raise PipelineError(f"judge_model_path: judge prompts of {longest} tokens plus {max_new_tokens} new tokens "
                                f"do not fit the judge's context of {context} tokens; use a judge with a longer "
                                "context or a shorter judge_template")
        device = next(model.parameters()).device
        padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
        outputs = []
        try:
            for start in range(0, len(prompts), batch_size):
                inputs = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True,
                                   add_special_tokens=not templated).to(device)
                with torch.no_grad():
                    sequences = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens,
                                               pad_token_id=tokenizer.pad_token_id)
                outputs += tokenizer.batch_decode(sequences[:, inputs["input_ids"].shape[1] :],
                                                  skip_special_tokens=True)
        finally:
            tokenizer.padding_side = padding_side
        return outputs

    return generate
