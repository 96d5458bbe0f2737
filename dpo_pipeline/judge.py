"""LLM-as-judge win rates: a local judge model compares a policy's completion with the SFT model's (each task gives
its own prompt template, `tasks.Task.judge_template`).

Each comparison shows the judge the prompt and the two completions as "A" and "B", twice: the policy's completion
as A, then as B. Two verdicts that name the same winner (or both a tie) decide it; two that disagree count as a tie,
so a judge that prefers a position gives ties, not wins (a one-order design, with a coin per prompt choosing the
order, would pull such a judge's win rate toward 0.5 instead). The share of comparisons whose two verdicts agree is
reported as the judge's consistency. Decoding is greedy (deterministic), and the verdict is parsed from free text; a
verdict that names neither or both letters counts as unparsable and is reported, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import PipelineError
from .estimators import cluster_bootstrap

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


@dataclass(frozen=True)
class JudgeItem:
    prompt_index: int
    prompt: str
    model_completion: str
    baseline_completion: str


def judge_prompts(items: Sequence[JudgeItem], template: str) -> tuple[list[str], list[str]]:
    """The judge's two prompts of each item: the policy's completion shown as A, and shown as B."""
    def fill(item, first, second):  # str.replace, not format: a template may hold other braces
        return template.replace("{prompt}", item.prompt).replace("{first}", first).replace("{second}", second)

    return ([fill(item, item.model_completion, item.baseline_completion) for item in items],
            [fill(item, item.baseline_completion, item.model_completion) for item in items])


def check_judge_template(template: str, field_name: str = "judge_template") -> None:
    """A judge template must hold {prompt}, {first} and {second}."""
    missing = [key for key in ("{prompt}", "{first}", "{second}") if key not in template]
    if missing:
        raise PipelineError(f"{field_name} lacks {', '.join(missing)}")


VERDICT_COMPLETIONS = {"A": " A", "B": " B"}


def judge_training_examples(prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str],
                            template: str) -> list[dict[str, str]]:
    """A judge's fine-tuning data from preference pairs, in TRL's prompt-completion format (the loss on the verdict
    only): each pair in both orders, its prompt the template filled as `judge_prompts` fills it, its completion the
    letter of the chosen completion. For pair i with the chosen completion c and the rejected r:

        {"prompt": template(prompt_i, first=c, second=r), "completion": " A"}
        {"prompt": template(prompt_i, first=r, second=c), "completion": " B"}

    Showing both orders of every pair keeps the letter from predicting the answer, so that a judge trained on them
    learns no position preference from the data. Returns 2 x len(prompts) examples."""
    items = [JudgeItem(index, prompt, good, bad)
             for index, (prompt, good, bad) in enumerate(zip(prompts, chosen, rejected, strict=True))]
    chosen_first, chosen_second = judge_prompts(items, template)
    return ([{"prompt": text, "completion": VERDICT_COMPLETIONS["A"]} for text in chosen_first]
            + [{"prompt": text, "completion": VERDICT_COMPLETIONS["B"]} for text in chosen_second])


def outcome(verdict: str | None, model_shown_as: str) -> str | None:
    """What one verdict means for the policy: "model", "baseline", TIE, or None (unparsable)."""
    if verdict is None or verdict == TIE:
        return verdict
    return "model" if verdict == model_shown_as else "baseline"


def combine(model_as_a: str | None, model_as_b: str | None) -> tuple[str | None, bool | None]:
    """(winner, agree) of one comparison from its two verdicts (the policy shown as A, then as B): the winner both
    name when they agree; TIE when they disagree (a judge that picks by position names A twice and so gets a tie,
    never a win); None (unparsable) when either is, since one order alone would bring the position bias back.
    agree is None when either verdict is unparsable."""
    first, second = outcome(model_as_a, "A"), outcome(model_as_b, "B")
    if first is None or second is None:
        return None, None
    return (first, True) if first == second else (TIE, False)


def tally_verdicts(model_as_a: Sequence[str | None], model_as_b: Sequence[str | None],
                   clusters: Sequence | None = None) -> dict[str, float]:
    """Counts of the policy's wins, losses and ties against the baseline and of the unparsable comparisons, each
    comparison judged in both orders and combined by `combine`; over the parsable comparisons (n = wins + losses
    + ties, disagreements among the ties):

        judge_win_rate        = (wins + ties / 2) / n     a tie is half a win (as the classifier's win rate)
        judge_win_rate_strict = wins / n                  a tie is no win (the formula of published reproductions)
        judge_consistency     = agreeing / n              the share whose two verdicts name the same outcome

    each with its standard error (`_se`) from a bootstrap over `clusters` (the prompts; one cluster per comparison
    when None), judge_disagreements the count that disagreed, and unparsable_share = unparsable / all comparisons.
    """
    if len(model_as_a) != len(model_as_b):
        raise ValueError(f"{len(model_as_a)} verdicts with the policy as A but {len(model_as_b)} with it as B")
    clusters = list(range(len(model_as_a))) if clusters is None else list(clusters)
    combined = [combine(a, b) for a, b in zip(model_as_a, model_as_b)]
    parsed = [(winner, agree, cluster) for (winner, agree), cluster in zip(combined, clusters) if winner is not None]
    wins = sum(1 for winner, _, _ in parsed if winner == "model")
    losses = sum(1 for winner, _, _ in parsed if winner == "baseline")
    ties = len(parsed) - wins - losses
    decided = len(parsed)
    unparsable = len(combined) - decided

    def rate(score):
        if not parsed:
            return None, None
        result = cluster_bootstrap([score(winner, agree) for winner, agree, _ in parsed], [c for *_, c in parsed])
        return result["mean"], result["se"]

    win_rate, win_rate_se = rate(lambda winner, agree: 1.0 if winner == "model" else 0.5 if winner == TIE else 0.0)
    strict, strict_se = rate(lambda winner, agree: float(winner == "model"))
    consistency, consistency_se = rate(lambda winner, agree: float(agree))
    return {
        "judge_wins": wins, "judge_losses": losses, "judge_ties": ties, "judge_unparsable": unparsable,
        "judge_disagreements": sum(1 for _, agree, _ in parsed if not agree),
        "judge_win_rate": win_rate, "judge_win_rate_se": win_rate_se,
        "judge_win_rate_strict": strict, "judge_win_rate_strict_se": strict_se,
        "judge_consistency": consistency, "judge_consistency_se": consistency_se,
        "judge_unparsable_share": unparsable / len(combined) if combined else None,
    }


def judge(items: Sequence[JudgeItem], generate: Callable[[list[str]], list[str]],
          template: str) -> tuple[dict[str, float], list[dict]]:
    """Judge every item in both orders with `generate` (judge prompts -> judge outputs); returns the tally and one
    record per item for auditing: prompt index, each order's raw output and parsed verdict (model_as_A,
    model_as_B), the combined winner and whether the two agree."""
    as_a, as_b = judge_prompts(items, template)
    outputs = generate(as_a + as_b)
    outputs_a, outputs_b = outputs[: len(items)], outputs[len(items):]
    verdicts_a, verdicts_b = [parse_verdict(o) for o in outputs_a], [parse_verdict(o) for o in outputs_b]
    records = []
    for item, output_a, verdict_a, output_b, verdict_b in zip(items, outputs_a, verdicts_a, outputs_b, verdicts_b):
        winner, agree = combine(verdict_a, verdict_b)
        records.append({
            "prompt_index": item.prompt_index,
            "model_as_A": {"judge_output": output_a, "verdict": verdict_a, "winner": outcome(verdict_a, "A")},
            "model_as_B": {"judge_output": output_b, "verdict": verdict_b, "winner": outcome(verdict_b, "B")},
            "winner": winner, "agree": agree})
    return tally_verdicts(verdicts_a, verdicts_b, [item.prompt_index for item in items]), records


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
        from .models import context_length

        context = context_length(model.config)
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
