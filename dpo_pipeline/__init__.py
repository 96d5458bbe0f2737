"""A DPO pipeline on TRL: shared stages (run folders, sweeps, training, sampling, evaluation, tracking) and the
tasks they serve (`tasks.sentiment`: IMDb-style controlled sentiment with a classifier reward, the DPO paper's
section 6.1; `tasks.chat`: chat and multi-turn preference data judged by an LLM). The top-level scripts (sft.py,
preference_pairs.py, dpo.py, eval.py) are thin entry points over it."""

from .errors import PipelineError

__all__ = ["PipelineError"]
