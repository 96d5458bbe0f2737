"""Step 4 (eval.py): measure -> store -> report.

1. Measure: the SFT model, every finished run of the sweep folder (DPO runs and baselines, each checkpoint) and
   best-of-N from the SFT model, on the task's held-out prompts (`measure.py`); under a launcher with N processes
   the models are shared out, each measured whole by one process with the same prompts and seeds as in a
   one-process run. The SFT model is sampled a second time, from random numbers of its own: the independent SFT
   samples every model's win rate compares with. What is measured already with these settings and weights is not
   measured again; with include_checkpoints false no checkpoint is measured (those measured before stay reported).
2. Store: each model's samples and result row, best-of-N's rewards (`samples.EvalStore`).
3. Report: the main process reads the stored rows, adds the win rates (from the stored samples) and the judge's
   verdicts, and writes report.md, frontier.csv and the plots (`report.py`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..arguments import EvalArguments
from ..distributed import on_main, process_state
from ..errors import PipelineError
from ..hub import require_source
from ..models import check_causal_lm
from ..measure import (
    BEST_OF_N_RUN,
    SFT_COMPARISON_RUN,
    Evaluator,
    HeldoutPairs,
    add_judge_verdicts,
    add_win_rates,
    best_of_n_rows,
    discover_models,
    measure_best_of_n,
    measure_models,
    measured_already,
    measure_sft_comparison,
    read_rows,
)
from ..report import write_report
from ..runs import RunFolder, config_dict, config_fingerprint
from ..samples import EvalStore
from ..tasks import Task, get_task
from ..tracking import finish_wandb_run, start_wandb_run

logger = logging.getLogger(__name__)


def held_out_pairs(args: EvalArguments, task: Task, tokenizer) -> HeldoutPairs | None:
    """The pairs each model's implicit-reward accuracy is measured on: heldout_pairs_file, or the task's own (the
    chat task's: the preference dataset's held-out split); None when there are none."""
    if args.heldout_pairs_file:
        return HeldoutPairs(args.heldout_pairs_file, tokenizer, args.kl_batch_size, max_pairs=args.max_heldout_pairs)
    source = task.heldout_pairs(args)
    if source is None:
        return None
    return HeldoutPairs(source["source"], tokenizer, args.kl_batch_size, split=source["split"],
                        config_name=source["config_name"], max_pairs=args.max_heldout_pairs,
                        field_name=source["field_name"])


def check_inputs(args: EvalArguments, task: Task) -> str:
    """Every check that needs no weights, before anything is loaded; returns the judge's template."""
    require_source(args.dataset_name, "dataset", "dataset_name")
    require_source(args.sft_model_path, "SFT model", "sft_model_path")
    task.check_reward(args)
    if args.best_of_n and not task.has_reward(args):
        raise PipelineError("best_of_n needs a reward to pick the best of N: set classifier_name_or_path")
    if args.judge_model_path:
        require_source(args.judge_model_path, "judge model", "judge_model_path")
    return args.judge_template or task.judge_template


def evaluate_frontier(args: EvalArguments) -> Path:
    """Measure every model not yet measured with these settings, then write the report, frontier.csv and plots."""
    task = get_task(args.task)
    judge_template = check_inputs(args, task)
    out = Path(args.output_dir)
    settings_hash = config_fingerprint(args)
    folder = RunFolder(out, settings_hash, "eval")
    state = process_state()
    folder.check(overwrite=args.overwrite)  # never "complete": new checkpoints may come
    state.wait_for_everyone()
    models = discover_models(args.sft_model_path, args.dpo_output_dir, include_checkpoints=True)
    evaluator = Evaluator(args, task, state.device)
    check_causal_lm(args.sft_model_path, "sft_model_path", args.trust_remote_code, evaluator.tokenizer)
    heldout = held_out_pairs(args, task, evaluator.tokenizer)
    prompts = task.evaluation_prompts(args, evaluator.tokenizer)
    store = EvalStore(out)
    if not args.include_checkpoints:  # none is measured now; those measured before with these settings stay reported
        models = [model for model in models
                  if model.is_final or measured_already(model, store, settings_hash, heldout, args.overwrite)]

    def claim():  # every input is loaded and checked by now
        folder.claim({"eval": args}, overwrite=args.overwrite)
        if args.report_to == "wandb":
            start_wandb_run(out, args.wandb_project, "eval", config={"eval": config_dict(args)})

    on_main(claim)
    logger.info("Evaluating %d models on %d held-out prompts x %d samples%s", len(models), len(prompts),
                args.samples_per_prompt, f" on {state.num_processes} processes" if state.num_processes > 1 else "")
    jobs = [*models, SFT_COMPARISON_RUN, *([BEST_OF_N_RUN] if args.best_of_n else [])]
    with state.split_between_processes(jobs) as mine:
        measure_models([job for job in mine if job not in (SFT_COMPARISON_RUN, BEST_OF_N_RUN)], evaluator, prompts,
                       heldout, store, settings_hash)
        if SFT_COMPARISON_RUN in mine:
            measure_sft_comparison(evaluator, prompts, store, settings_hash)
        if BEST_OF_N_RUN in mine:
            measure_best_of_n(evaluator, prompts, store, settings_hash)
    state.wait_for_everyone()
    report = out / "report.md"
    if state.is_main_process:
        rows = read_rows(models, store)
        add_win_rates(rows, store, args.win_rate_tie_tolerance)
        if args.judge_model_path:
            add_judge_verdicts(rows, evaluator, store, judge_template)
        rows += best_of_n_rows(evaluator, prompts, store, settings_hash)
        report = write_report(rows, store, args, task, num_prompts=len(prompts), heldout=heldout)
        finish_wandb_run()
        logger.info("Report: %s", report)
    state.wait_for_everyone()
    return report
