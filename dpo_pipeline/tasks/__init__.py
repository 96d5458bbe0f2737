"""The task registry: what is particular to a task, behind one small interface, found by name.

The shared pipeline (sampling pairs, training, evaluation, the report) never imports a task. It asks
`get_task(args.task)` for the task's parts (`Task`): its prompts, its text cleaning, its reward, its judge template
and how its prompts and reward are described in the report. A task registers itself with `register_task` when its
package is imported. The built-in tasks are the sub-packages of this folder, found by listing it (as
lm-evaluation-harness finds its tasks by folder); a task of your own lives anywhere on the Python path and is named
in the environment variable `DPO_PIPELINE_TASKS` (module names, comma-separated), e.g.

    DPO_PIPELINE_TASKS=my_tasks.length python preference_pairs.py --config my_pairs.yaml --task length

docs/architecture.md shows a whole task written as one folder.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import PipelineError

TASK_MODULES_VARIABLE = "DPO_PIPELINE_TASKS"


class Reward:
    """A task's reward of whole texts (prompt + completion, or the completion alone: `score_prompt`): higher is
    better. The sentiment task's is a classifier's P(POSITIVE); a rule-based reward is a plain function of the text.
    """

    name = "reward"

    def score(self, texts: list[str], desc: str | None = None) -> list[float]:
        raise NotImplementedError


@dataclass(frozen=True)
class Task:
    """A task's parts, as the shared stages use them. `args` is the stage's config (`PairsArguments`,
    `EvalArguments`, `SFTScriptArguments`); prompts are `data.Prompt`s whose token ids every model continues.

    - `pair_prompts(args, tokenizer) -> (prompts, num_train)`: preference_pairs.py's prompts, the train ones first
      and then `args.heldout_prompts` held-out ones.
    - `evaluation_prompts(args, tokenizer) -> prompts`: eval.py's held-out prompts.
    - `load_reward(args, device, dtype) -> Reward | None`: the reward the pairs are ranked by and eval.py measures;
      None where the task has none (then models are compared by held-out accuracy and the judge).
    - `check_reward(args)`: the checks of the reward that need no weights (a classifier's labels, say), run before
      any model is loaded; `has_reward(args)`: whether `load_reward` gives one with these settings.
    - `clean_text(text) -> text`: the task's cleaning of raw texts, applied by sft.py where `clean_reviews` asks.
    - `judge_template`: the LLM judge's default prompt, with {prompt}, {first} and {second}.
    - `heldout_pairs(args) -> dict | None`: where the held-out pairs come from when no heldout_pairs_file is
      given (`source`, `split`, `config_name`, `field_name`), e.g. a preference dataset's own test split.
    - `describe_prompts(args, num_prompts)`, `describe_reward(args)`: the report's sentences about them.
    - `prompt_noun`: what a prompt is called on the plots ("prefixes", "conversations").
    - `assets`: the module that builds the task's offline assets (`python -m <assets>`), if it has any;
      `config_classes`: the task's own config dataclasses (its assets' arguments).
    """

    name: str
    description: str
    evaluation_prompts: Callable
    pair_prompts: Callable | None = None
    load_reward: Callable = lambda args, device, dtype: None
    check_reward: Callable = lambda args: None
    has_reward: Callable = lambda args: False
    clean_text: Callable[[str], str] = str.strip
    judge_template: str = ""
    heldout_pairs: Callable = lambda args: None
    describe_prompts: Callable = lambda args, num_prompts: f"{num_prompts} prompts of `{args.dataset_name}`"
    describe_reward: Callable = lambda args: "the task's reward"
    prompt_noun: str = "prompts"
    assets: str | None = None
    config_classes: tuple = field(default_factory=tuple)


_TASKS: dict[str, Task] = {}
_discovered = False


def register_task(task: Task) -> Task:
    """Make `task` available by its name (a task package calls this when it is imported)."""
    known = _TASKS.get(task.name)
    if known is not None and known is not task:
        raise PipelineError(f"two tasks are named {task.name!r}: {known.description!r} and {task.description!r}")
    _TASKS[task.name] = task
    return task


def _discover() -> None:
    """Import every task package of this folder and every module named in DPO_PIPELINE_TASKS (each registers its
    task), once."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for module in pkgutil.iter_modules(__path__):
        if module.ispkg:
            importlib.import_module(f"{__name__}.{module.name}")
    for name in filter(None, (part.strip() for part in os.environ.get(TASK_MODULES_VARIABLE, "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise PipelineError(f"{TASK_MODULES_VARIABLE}: cannot import the task module {name!r} ({error}); put its "
                                "folder on PYTHONPATH") from None


def task_names() -> list[str]:
    _discover()
    return sorted(_TASKS)


def get_task(name: str) -> Task:
    """The task registered as `name`; a `PipelineError` listing the known tasks otherwise."""
    _discover()
    if name not in _TASKS:
        raise PipelineError(f"task: {name!r} is not a task; the tasks are {', '.join(sorted(_TASKS))} (a task of your "
                            f"own is named in {TASK_MODULES_VARIABLE}, see docs/architecture.md)")
    return _TASKS[name]
