"""A third task, written as one folder outside the pipeline: longer completions are better.

The prompts are the first few tokens of any text dataset (a `text` column), and the reward is a rule, not a model:
the completion's length in words, as a share of `TARGET_WORDS` (capped at 1). It shows what a task gives the shared
pipeline (`dpo_pipeline.tasks.Task`) and nothing more: no shared module is edited to add it. Use it with

    PYTHONPATH=examples DPO_PIPELINE_TASKS=length_task python preference_pairs.py --config ... --task length

(docs/architecture.md walks through it). Importing the package registers the task.
"""

from . import task  # noqa: F401  - registers the task
