"""The frontier as it forms: a training callback that measures the policy being trained the way eval.py measures a
checkpoint (`measure.evaluate_policy`: samples at the evaluation's temperature, the task's true reward, the exact
sequence KL to the SFT model), at every evaluation step of DPO, Preferred-FT, Unlikelihood and RL.

Its settings are the training config's `live_eval_*` fields (`configs.common.LiveEvalArguments`); the prompts, the
sampler's settings, the reward and the reference are those of the eval.py config it names (`live_eval_config`), so
that the figures are eval.py's. Each measurement logs, to metrics.jsonl and to the wandb run:

    live/reward, live/reward_sem, live/kl, live/kl_sem   means and standard errors clustered by prompt
    live/mean_response_tokens, live/num_prompts, live/num_samples
    live/seconds                                          what the measurement added to the step's time
    live/samples                                          a wandb Table (prompt, completion, reward, kl)

Intermediate steps use the first `live_eval_prompts` of eval.py's prompts; the last step (with
`live_eval_final_full`) uses all of them with eval.py's samples per prompt and seed, so that its figure is the one
eval.py writes into frontier.csv for the run's final model. Step 0 (the SFT model, KL 0) is measured on the subset.

Under a launch of N processes the main process alone measures (with the unwrapped model, which runs no collective)
while the others wait for it; with sharded weights (FSDP, ZeRO-3) a forward pass needs every process, and the live
evaluation is off (said once).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from .distributed import asks_for_fsdp, on_main
from .errors import PipelineError
from .metric_registry import sample_keys
from .tracking import MetricsFileCallback

logger = logging.getLogger(__name__)

PREFIX = "live/"
REPOSITORY = Path(__file__).resolve().parents[1]


def live_eval_asked_for(training_args) -> bool:
    """Whether the config names an eval.py config: null in YAML, and `--live_eval_config null` (or '') on the
    command line, turn the live evaluation off."""
    value = getattr(training_args, "live_eval_config", None)
    return bool(value) and value.strip().lower() not in ("null", "none")


def resolve_eval_config(path: str) -> Path:
    """`live_eval_config` as given (relative to the folder the script runs in), else relative to the repository, where
    the shipped configs live (tests and users may run the scripts from another folder)."""
    for candidate in (Path(path), REPOSITORY / path):
        if candidate.is_file():
            return candidate
    raise PipelineError(f"live_eval_config: {path} does not exist (an eval.py config, e.g. configs/tiny/eval.yaml; "
                        "null turns the live evaluation off)")


def load_eval_arguments(path: str):
    from .cli import parse_config
    from .arguments import EvalArguments

    (args,) = parse_config([EvalArguments], ["--config", str(resolve_eval_config(path)), "--report_to", "none"])
    return args


def weights_are_sharded(training_args) -> bool:
    from transformers.integrations import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled() or asks_for_fsdp(training_args)


def warnings_for(summary: dict, kl_bound: float, first_length: float | None, length_ratio: float) -> list[str]:
    """What a measurement warns of: a KL past `kl_bound` nats, or a mean completion length below `length_ratio` of
    the first measurement's (`first_length`; None: no baseline yet)."""
    said = []
    if summary["kl"] is not None and summary["kl"] > kl_bound:
        said.append(f"the KL to the SFT model is {summary['kl']:.2f} nats, past live_eval_kl_warning {kl_bound:g}: "
                    "the policy is moving far from the reference (lower the learning rate or raise beta)")
    length = summary["mean_response_tokens"]
    if first_length and length < length_ratio * first_length:
        said.append(f"the mean completion length fell to {length:.1f} tokens from {first_length:.1f} (below "
                    f"live_eval_length_warning {length_ratio:g} of it): the completions are collapsing")
    return said


class LiveEvaluation(TrainerCallback):
    """Measures the policy as eval.py would, every `live_eval_every` steps (default: each evaluation step, else each
    save step), at step 0 and at the last step; see the module's docstring."""

    def __init__(self, training_args, output_dir: str | Path):
        self.args = training_args
        self.metrics_file = MetricsFileCallback(output_dir)
        self.enabled = live_eval_asked_for(training_args)
        self.eval_args = load_eval_arguments(training_args.live_eval_config) if self.enabled else None
        self._evaluator = self._prompts = self._reference_policy = None
        self.first_length = None
        self.every = None

    # -- when -------------------------------------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not self.enabled:
            return
        if weights_are_sharded(self.args):
            logger.warning("Live evaluation is off: the weights are sharded (FSDP or ZeRO-3), and sampling on the main "
                           "process alone would wait for the others forever; eval.py measures the checkpoints")
            self.enabled = False
            return
        self.every = self.args.live_eval_every or self._default_every(state)
        self.first_length = self._first_length_logged(state)
        try:
            on_main(lambda: self._setup(model))  # the error reaches every process, so all of them turn it off
        except PipelineError as error:
            logger.warning("Live evaluation is off (%s: %s); eval.py measures the checkpoints",
                           self.args.live_eval_config, error)
            self.enabled = False
            return
        if state.global_step == 0:
            self._measure_everywhere(state, model, full=False)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if not self.enabled:
            return
        last = state.global_step >= state.max_steps
        if last or state.global_step % self.every == 0:
            self._measure_everywhere(state, model, full=last and self.args.live_eval_final_full)

    def _default_every(self, state) -> int:
        """Each evaluation step where the run evaluates by steps, else each save step, else each logging step (the
        Trainer has turned fractions of the run into steps by now)."""
        if str(self.args.eval_strategy).lower().endswith("steps") and state.eval_steps:
            return int(state.eval_steps)
        if str(self.args.save_strategy).lower().endswith("steps") and state.save_steps:
            return int(state.save_steps)
        return int(state.logging_steps)

    def _first_length_logged(self, state) -> float | None:
        """The step-0 completion length of a run resumed from a checkpoint (the baseline of the length warning)."""
        import json

        path = self.metrics_file.path
        if state.global_step == 0 or not path.is_file():
            return None
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("step") == 0 and f"{PREFIX}mean_response_tokens" in record:
                return record[f"{PREFIX}mean_response_tokens"]
        return None

    # -- what -------------------------------------------------------------------------------------------------------

    def _measure_everywhere(self, state, model, full: bool) -> None:
        """The main process measures; every process waits for it (`on_main` broadcasts, a barrier for the others, and
        an error there stops all of them)."""
        record = on_main(lambda: self._measure(state, model, full))
        if record is not None and self.first_length is None:
            self.first_length = record["mean_response_tokens"]

    def _setup(self, model) -> None:
        """eval.py's tokenizer and prompts (the reference and the reward load when first used)."""
        from .measure import Evaluator
        from .tasks import get_task

        if self._evaluator is None:
            from .hub import require_source

            # eval.py's inputs (stages/evaluate.check_inputs), missing where training runs outside the layout the
            # eval config expects: then the run trains without the live evaluation, and says so.
            task = get_task(self.eval_args.task)
            require_source(self.eval_args.dataset_name, "dataset", "dataset_name")
            require_source(self.eval_args.sft_model_path, "SFT model", "sft_model_path")
            task.check_reward(self.eval_args)
            self._evaluator = Evaluator(self.eval_args, task, next(model.parameters()).device)
            self._prompts = task.evaluation_prompts(self.eval_args, self._evaluator.tokenizer)

    def _reference(self):
        """The SFT model as eval.py measures with it (`measure_dtype`, float32 logits); unlike `Evaluator.reference`
        without a second copy for sampling, which the live evaluation never does from it (step 0 samples the policy)."""
        from .measure import Policy
        from .models import load_causal_lm

        if self._reference_policy is None:
            evaluator = self._evaluator
            model = load_causal_lm(self.eval_args.sft_model_path, "sft_model_path", evaluator.measure_dtype,
                                   evaluator.device, self.eval_args.trust_remote_code, float32_logits=True)
            self._reference_policy = Policy(sampler=model, measurer=model)
        return self._reference_policy

    def _sampler(self, model):
        """The policy as eval.py samples from it: in eval.py's `dtype` with a float32 output layer. The training
        weights themselves where their dtype is that one (float32 in the tiny configs); else a copy for the
        measurement (GPT-2 Large: bfloat16 on a GPU, 1.5 GB, freed afterwards)."""
        import copy

        from .models import with_float32_head

        dtype = self._evaluator.dtype
        if next(model.parameters()).dtype == dtype:
            return model
        return with_float32_head(copy.deepcopy(model).float(), dtype).eval()

    @torch.no_grad()
    def _measure(self, state, model, full: bool) -> dict:
        from .measure import Policy, evaluate_policy

        eval_args = self.eval_args
        self._setup(model)
        prompts = self._prompts if full else self._prompts[: self.args.live_eval_prompts]
        started = time.perf_counter()
        was_training = model.training
        model.eval()  # no dropout while sampling and measuring, as eval.py's freshly loaded model
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        try:
            # evaluate_policy seeds torch's generator per batch: training's random state is put back afterwards.
            with torch.random.fork_rng(devices=devices):
                policy = Policy(sampler=self._sampler(model), measurer=model)
                summary, samples = evaluate_policy(policy, self._reference(), self._evaluator.tokenizer,
                                                   self._evaluator.reward, prompts, eval_args,
                                                   is_reference=False,  # step 0's KL, ~0, checks the reference
                                                   name=f"live step {state.global_step}")
        finally:
            model.train(was_training)
        record = {f"{PREFIX}{key}": summary[key] for key in sample_keys() if summary.get(key) is not None}
        record[f"{PREFIX}seconds"] = time.perf_counter() - started  # its cost, added to the step's time
        self.metrics_file.on_log(self.args, state, None, logs=record)
        log_to_wandb(record, samples, state.global_step)
        logger.info("[live step %d] %sKL %.2f ± %.2f, %.1f completion tokens (%d prompts x %d)", state.global_step,
                    "" if summary["reward"] is None
                    else f"reward {summary['reward']:.3f} ± {summary['reward_sem']:.3f}, ",
                    summary["kl"], summary["kl_sem"], summary["mean_response_tokens"], len(prompts),
                    eval_args.samples_per_prompt)
        for warning in warnings_for(summary, self.args.live_eval_kl_warning, self.first_length,
                                    self.args.live_eval_length_warning):
            logger.warning("[live step %d] %s", state.global_step, warning)
        return {"mean_response_tokens": summary["mean_response_tokens"]}


def log_to_wandb(record: dict, samples: list[dict], step: int) -> None:
    """The record and a Table of the samples to the run's wandb run (when tracking): live/reward is drawn against
    live/kl (the frontier), everything else against the Trainer's train/global_step."""
    import wandb

    if wandb.run is None:
        return
    wandb.define_metric(f"{PREFIX}kl", step_metric="train/global_step")
    wandb.define_metric(f"{PREFIX}reward", step_metric=f"{PREFIX}kl")
    table = wandb.Table(columns=["step", "prompt", "completion", "reward", "kl"],
                        data=[[step, s["prompt"], s["completion"], s.get("reward"), s["kl"]] for s in samples])
    wandb.log({**record, f"{PREFIX}samples": table, "train/global_step": step})
