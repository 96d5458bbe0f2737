"""Every figure eval.py reports, declared once: its key, what it is measured from and how, its errors, whether it is
logged live and whether the report averages it over training seeds. The frontier's columns (`frontier_columns`), the
figures logged to wandb as each model is measured (`live_keys`), the live evaluation's figures (`sample_keys`), the
figures averaged over seeds (`seed_figures`) and the run summary's (`summary_keys`) all derive from these
declarations, as lm-evaluation-harness's tables derive from its `register_metric`.

What a figure is measured from (`source`):
- "samples": a model's own samples (samples/<model>.jsonl: their reward, KL and token ids). Such a metric has a
  `from_samples(samples, context) -> {key: value, ...}` function; a model whose stored row predates the metric gets
  it on the next eval.py run from its stored samples, without sampling again (`missing_sample_metrics`);
- "heldout": the held-out pairs (`measure.HeldoutPairs`); "comparison": the model's samples against the
  independent SFT samples (`measure.add_win_rates`); "judge": the LLM judge (`measure.add_judge_verdicts`).

A metric of your own is one `register_metric(Metric(...))` call in a module imported before eval.py measures (a task
or a method module, or one named in DPO_PIPELINE_METRICS); docs/architecture.md shows one.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .errors import PipelineError
from .estimators import clustered_mean_and_standard_error

METRIC_MODULES_VARIABLE = "DPO_PIPELINE_METRICS"
SOURCES = ("samples", "heldout", "comparison", "judge")


@dataclass(frozen=True)
class Metric:
    """One reported figure.

    - `key`: its frontier.csv column (and wandb key under eval/ or live/);
    - `description`: what it is, in a sentence;
    - `source`: what it is measured from (one of `SOURCES`, see the module's docstring);
    - `errors`: its error columns (`<key>_sem`: analytic, clustered by prompt; `<key>_se`: a bootstrap over prompts);
    - `also`: more columns the same measurement fills (the win and loss counts of a win rate);
    - `from_samples(samples, context) -> dict`: for source "samples", the figure (and its errors) of a model's samples;
      `context` holds `stop_token_ids` (the tokens that end a completion);
    - `live`: logged as each model is measured (eval.py's wandb run; the live evaluation for sample metrics);
    - `across_seeds`: averaged over training seeds in frontier_seeds.csv (its mean, sd and standard error);
    - `in_summary`: kept in the eval wandb run's summary per final model.
    """

    key: str
    description: str
    source: str
    errors: tuple[str, ...] = ()
    also: tuple[str, ...] = ()
    from_samples: Callable[[list[dict], Mapping], dict] | None = None
    live: bool = False
    across_seeds: bool = False
    in_summary: bool = False

    def __post_init__(self):
        if self.source not in SOURCES:
            raise PipelineError(f"metric {self.key}: source {self.source!r} is not one of {', '.join(SOURCES)}")
        if (self.source == "samples") != (self.from_samples is not None):
            raise PipelineError(f"metric {self.key}: a metric of the samples, and only one, has from_samples")

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.key, *self.errors, *self.also)


_METRICS: dict[str, Metric] = {}
_discovered = False


def register_metric(metric: Metric) -> Metric:
    """Add a figure to every table, once, in the order of registration."""
    known = _METRICS.get(metric.key)
    if known is not None and known is not metric:
        raise PipelineError(f"two metrics are named {metric.key!r}: {known.description!r} and {metric.description!r}")
    _METRICS[metric.key] = metric
    return metric


def metrics() -> list[Metric]:
    """Every registered metric (with those of the modules named in DPO_PIPELINE_METRICS)."""
    global _discovered
    if not _discovered:
        _discovered = True
        for name in filter(None, (part.strip() for part in os.environ.get(METRIC_MODULES_VARIABLE, "").split(","))):
            try:
                importlib.import_module(name)
            except ImportError as error:
                raise PipelineError(f"{METRIC_MODULES_VARIABLE}: cannot import the metric module {name!r} ({error}); "
                                    "put its folder on PYTHONPATH") from None
    return list(_METRICS.values())


def metric_columns() -> list[str]:
    return [column for metric in metrics() for column in metric.columns]


def live_keys() -> tuple[str, ...]:
    return tuple(column for metric in metrics() if metric.live for column in (metric.key, *metric.errors))


def sample_keys() -> tuple[str, ...]:
    """The figures of a model's own samples (with their errors): what the live evaluation logs."""
    return tuple(column for metric in metrics() if metric.source == "samples" for column in metric.columns)


def seed_figures() -> tuple[str, ...]:
    return tuple(metric.key for metric in metrics() if metric.across_seeds)


def summary_keys() -> tuple[str, ...]:
    return tuple(column for metric in metrics() if metric.in_summary for column in (metric.key, *metric.errors))


def measure_samples(samples: list[dict], context: Mapping) -> dict:
    """Every sample metric's figures of one model's samples."""
    figures = {}
    for metric in metrics():
        if metric.source == "samples":
            figures.update(metric.from_samples(samples, context))
    return figures


def missing_sample_metrics(row: Mapping) -> list[Metric]:
    """The sample metrics a stored result row lacks (it was measured before they were registered)."""
    return [metric for metric in metrics() if metric.source == "samples" and metric.key not in row]


# -- the built-in figures, in the frontier's column order --------------------------------------------------------------
# The samples of one prompt are not independent of each other: the standard errors are clustered by prompt.

def _clustered(key: str, error: str):
    def measure(samples, context):
        if not samples or any(sample.get(key) is None for sample in samples):
            return {key: None, error: None}
        value, sem = clustered_mean_and_standard_error([sample[key] for sample in samples],
                                                       [sample["prompt_index"] for sample in samples])
        return {key: value, error: sem}
    return measure


def _response_tokens(samples, context):
    """The answer's tokens: a sampled stop token (EOS, end-of-turn) is not counted."""
    stops = context.get("stop_token_ids") or []
    lengths = [len(ids) - int(bool(ids) and ids[-1] in stops) for ids in (s["completion_token_ids"] for s in samples)]
    return {"mean_response_tokens": sum(lengths) / len(lengths) if lengths else None}


def _counts(samples, context):
    return {"num_samples": len(samples), "num_prompts": len({sample["prompt_index"] for sample in samples})}


register_metric(Metric("reward", "the task's reward of the samples (P(POSITIVE) for sentiment), their mean",
                       "samples", errors=("reward_sem",), from_samples=_clustered("reward", "reward_sem"), live=True,
                       across_seeds=True, in_summary=True))
register_metric(Metric("kl", "the exact sequence-level KL(pi || pi_SFT) of the samples, their mean", "samples",
                       errors=("kl_sem",), from_samples=_clustered("kl", "kl_sem"), live=True, across_seeds=True,
                       in_summary=True))
register_metric(Metric("num_samples", "the samples measured, and the prompts they complete", "samples",
                       also=("num_prompts",), from_samples=_counts))
register_metric(Metric("heldout_accuracy", "the share of held-out pairs the method's implicit reward ranks right",
                       "heldout", errors=("heldout_accuracy_se",), also=("heldout_ties",), live=True,
                       across_seeds=True, in_summary=True))
register_metric(Metric("heldout_logratio_margin", "the mean held-out implicit-reward margin without beta, nats",
                       "heldout", errors=("heldout_logratio_margin_se",), live=True))
register_metric(Metric("heldout_reward_margin", "beta times the held-out margin", "heldout",
                       errors=("heldout_reward_margin_se",), also=("heldout_pairs",)))
register_metric(Metric("win_rate", "wins + ties/2 of each sample against an independent SFT sample (classifier)",
                       "comparison", errors=("win_rate_se",), also=("wins", "losses", "ties"), across_seeds=True,
                       in_summary=True))
register_metric(Metric("judge_win_rate", "the LLM judge's win rate against SFT, ties half a win, both orders",
                       "judge", errors=("judge_win_rate_se",),
                       also=("judge_wins", "judge_losses", "judge_ties", "judge_disagreements", "judge_unparsable"),
                       across_seeds=True, in_summary=True))
register_metric(Metric("judge_win_rate_strict", "the judge's win rate with ties counted as no win", "judge",
                       errors=("judge_win_rate_strict_se",)))
register_metric(Metric("judge_consistency", "the share of judged comparisons whose two orders agree", "judge",
                       errors=("judge_consistency_se",), also=("judge_unparsable_share",), in_summary=True))
register_metric(Metric("mean_response_tokens", "the completions' mean length in tokens, the stop token not counted",
                       "samples", from_samples=_response_tokens))
