"""What the configs of every stage share, declared once: tracking, the checks of every training config, the fields
the pipeline adds to TRL's training configs, and the defaults of the full-scale experiment."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import PipelineError
from ..hardware import accelerator_available, bf16_training_available, launched_processes

DEFAULT_WANDB_PROJECT = "dpo-imdb-sentiment"
DEFAULT_CLASSIFIER = "siebert/sentiment-roberta-large-english"
DEFAULT_DATASET = "stanfordnlp/imdb"
DEFAULT_TASK = "sentiment"


@dataclass
class TrackingArguments:
    """Where runs are tracked and what happens to an output folder that already holds a run."""

    wandb_project: str = field(
        default=DEFAULT_WANDB_PROJECT,
        metadata={"help": "wandb project. Without an API key wandb runs offline; `report_to: none` turns it off."},
    )
    overwrite: bool = field(
        default=False,
        metadata={"help": "Replace an output folder that holds a run made with a different config."},
    )


SWEEP_SHARD_HELP = ("k/n: train only every n-th entry of the sweep, from entry k (0-based): n commands (or a SLURM "
                    "array, `--sweep_shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT` with --array=0-<n-1>) share "
                    "one sweep folder, each its own runs. Every entry is still checked.")


def parse_sweep_shard(shard: str | None) -> tuple[int, int] | None:
    """`k/n` (sweep_shard) as (k, n) with 0 <= k < n; None when unset. A malformed one is refused in one line."""
    if shard is None:
        return None
    first, _, count = str(shard).partition("/")
    try:
        index, shards = int(first), int(count)
    except ValueError:
        index, shards = -1, 0
    if not 0 <= index < shards:
        raise PipelineError(f"sweep_shard must be k/n with 0 <= k < n (e.g. 0/2 and 1/2 for two commands), got "
                            f"{shard!r}")
    return index, shards


def derive_gradient_accumulation(config) -> None:
    """With `global_batch_size` G set, gradient_accumulation_steps = G / (per_device_train_batch_size x processes):
    the optimizer sees G examples per step on one GPU or on many. A launch where that is not a whole number is
    refused, naming what to change."""
    if config.global_batch_size is None:
        return
    processes = launched_processes()
    per_pass = config.per_device_train_batch_size * processes
    if config.global_batch_size < 1 or config.global_batch_size % per_pass:
        raise PipelineError(
            f"global_batch_size {config.global_batch_size} is not a multiple of per_device_train_batch_size "
            f"{config.per_device_train_batch_size} x {processes} process{'es' if processes > 1 else ''}: choose a "
            "per_device_train_batch_size that divides it by the number of processes")
    config.gradient_accumulation_steps = config.global_batch_size // per_pass


def check_output_dir(path: str | None, field_name: str = "output_dir") -> None:
    """An output folder must be a folder (or not exist yet), and so must every folder above it."""
    if not path:
        raise PipelineError(f"{field_name} is not set")
    for folder in (Path(path), *Path(path).parents):
        if folder.exists() and not folder.is_dir():
            raise PipelineError(f"{field_name}: {folder} is a file, not a folder")


def check_can_train(config) -> None:
    """Settings with which training cannot run or would train nothing are refused before any folder is touched
    (transformers would fail later with a traceback, or finish zero steps and mark an untrained model done)."""
    def positive_number(name: str, allow_zero: bool = False) -> None:
        value = getattr(config, name)
        ok = isinstance(value, (int, float)) and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
        if not ok:
            raise PipelineError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} number, got {value}")

    positive_number("learning_rate")
    for name in ("per_device_train_batch_size", "gradient_accumulation_steps"):
        if getattr(config, name) < 1:
            raise PipelineError(f"{name} must be at least 1, got {getattr(config, name)}")
    if config.max_steps is None or config.max_steps <= 0:
        if not (math.isfinite(config.num_train_epochs) and config.num_train_epochs > 0):
            raise PipelineError(f"num_train_epochs must be positive (or set max_steps), got {config.num_train_epochs}")
    for name in ("warmup_steps", "weight_decay"):
        positive_number(name, allow_zero=True)
    if config.max_grad_norm is not None:
        positive_number("max_grad_norm", allow_zero=True)
    if getattr(config, "max_length", None) is not None and config.max_length < 2:
        raise PipelineError(f"max_length must be at least 2 tokens, got {config.max_length}")
    if str(config.save_strategy) in ("steps", "SaveStrategy.STEPS") and not config.save_steps > 0:
        raise PipelineError(f"save_steps must be positive, got {config.save_steps}")
    if not config.logging_steps > 0:
        raise PipelineError(f"logging_steps must be positive, got {config.logging_steps}")
    check_output_dir(config.output_dir)


_NAN_FILTER_HELP = ("Log a NaN or infinite loss as the mean of the previous ones (transformers' default). Off here, "
                    "so that a diverging run stops at once with a clear message and keeps its last good checkpoint.")


_GLOBAL_BATCH_HELP = ("Examples per optimizer step over all processes (pairs for DPO; the DPO paper's is 64). "
                      "When set, gradient_accumulation_steps is derived from it, per_device_train_batch_size and the "
                      "number of processes of the launch, so that a run on 8 GPUs trains as one on 1 GPU.")


_LIVE_EVAL_HELP = {
    "live_eval_config": "eval.py's config (e.g. configs/tiny/eval.yaml; relative to the folder the script runs in, "
                        "else to the repository) whose task, prompts, sampler, reward and SFT reference the live "
                        "evaluation uses: during training the policy's true reward, exact KL to the SFT model and "
                        "samples go to metrics.jsonl and wandb (live/*, docs/dashboard.md). null: off.",
    "live_eval_prompts": "Prompts of each intermediate live evaluation: the first this many of eval.py's (each with "
                         "its samples_per_prompt samples).",
    "live_eval_every": "Steps between live evaluations; by default each evaluation step (eval_steps) where the run "
                       "evaluates by steps, else each save step (save_steps), else each logging step. Step 0 and the "
                       "last step are always measured.",
    "live_eval_final_full": "The last step's live evaluation uses all of eval.py's prompts and samples, so that it "
                            "gives the figure eval.py writes into frontier.csv for the final model.",
    "live_eval_kl_warning": "Warn when the live KL to the SFT model exceeds this many nats.",
    "live_eval_length_warning": "Warn when the mean completion length falls below this fraction of step 0's.",
}


def _live(name: str, default):
    return field(default=default, metadata={"help": _LIVE_EVAL_HELP[name]})


def check_live_eval(config) -> None:
    if config.live_eval_prompts < 1:
        raise PipelineError(f"live_eval_prompts must be at least 1, got {config.live_eval_prompts}")
    if config.live_eval_every is not None and config.live_eval_every < 1:
        raise PipelineError(f"live_eval_every must be at least 1, got {config.live_eval_every}")
    if not (math.isfinite(config.live_eval_kl_warning) and config.live_eval_kl_warning > 0):
        raise PipelineError(f"live_eval_kl_warning must be a positive number, got {config.live_eval_kl_warning}")
    if not 0 <= config.live_eval_length_warning < 1:
        raise PipelineError(f"live_eval_length_warning must be in [0, 1), got {config.live_eval_length_warning}")


@dataclass
class PipelineTrainingArguments:
    """The pipeline's part of every training config (mixed in before TRL's `SFTConfig`, `DPOConfig`,
    `RewardConfig`, `GRPOConfig`), checked before transformers and TRL see the config:
    - settings that cannot train are refused (`check_can_train`);
    - bf16 (TRL's default) without a GPU that has it is turned off and remembered: the stage then stops with one
      line saying why (`hardware.require_the_gpu_asked_for`), while the config still reads on any machine;
    - `global_batch_size` fixes the examples per optimizer step whatever the number of processes: the gradient
      accumulation is derived from it, or a launch that cannot keep it is refused."""

    logging_nan_inf_filter: bool = field(default=False, metadata={"help": _NAN_FILTER_HELP})
    global_batch_size: int | None = field(default=None, metadata={"help": _GLOBAL_BATCH_HELP})
    live_eval_config: str | None = _live("live_eval_config", None)
    live_eval_prompts: int = _live("live_eval_prompts", 16)
    live_eval_every: int | None = _live("live_eval_every", None)
    live_eval_final_full: bool = _live("live_eval_final_full", True)
    live_eval_kl_warning: float = _live("live_eval_kl_warning", 30.0)
    live_eval_length_warning: float = _live("live_eval_length_warning", 0.5)

    # Why a stage's config refuses dropout (None: it allows it): a stage whose samples or log-probabilities are
    # compared with a reference model's (DPO, the reward model, online RL) must draw them from the model itself,
    # not from a dropout-perturbed copy of it (the reference's are drawn without dropout).
    DROPOUT_OFF_BECAUSE = None

    def __post_init__(self):
        check_json_fields(self)
        check_can_train(self)
        require_dropout_off(self)
        check_live_eval(self)
        derive_gradient_accumulation(self)
        if self.bf16 is None:
            self.bf16 = not self.fp16  # TRL's default
        if self.bf16 and not self.use_cpu and not bf16_training_available():
            # transformers refuses bf16 without a GPU while parsing; the stage says why, once its inputs are checked
            self.bf16_without_gpu = True
            self.bf16 = False
        if launched_processes() > 1 and not self.use_cpu and not accelerator_available():
            # A launch of N processes on a machine without a GPU: the Trainer sets up data-parallel training (gloo)
            # only with use_cpu; without it each process would train the whole run alone
            # (`sweep.require_data_parallel`).
            self.use_cpu = True
        super().__post_init__()


def trainer_config(config_class: type, args, *, leave_out=(), **settings):
    """`config_class` (another TRL trainer's config: KTOConfig, ORPOConfig, CPOConfig) with the training settings of
    `args` (a dpo.py config): every field the two share but `leave_out`, and the method's own `settings`; plus the
    pipeline's settings (`PipelineTrainingArguments`: the live evaluation, global_batch_size), which the run's
    callbacks read: TRL's class has no field for them, and a copy without them would train without its dashboard.
    They are attributes of the instance, so that the Trainer's pickled training_args.bin loads as TRL's class."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_class)
              if f.init and hasattr(args, f.name) and f.name not in leave_out and f.name not in settings}
    config = config_class(**values, **settings)
    for pipeline_field in dataclasses.fields(PipelineTrainingArguments):
        setattr(config, pipeline_field.name, getattr(args, pipeline_field.name))
    return remember_the_machine(args, config)


def check_json_fields(config) -> None:
    """The settings transformers and TRL read as JSON when they are given as text on the command line
    (`model_init_kwargs`, `accelerator_config`, ...): text that is no JSON object is one line naming the setting, not
    the JSON parser's message alone."""
    import json

    for name in getattr(config, "_VALID_DICT_FIELDS", ()):
        value = getattr(config, name, None)
        if isinstance(value, str) and value.strip().startswith("{"):
            try:
                json.loads(value)
            except json.JSONDecodeError as error:
                raise PipelineError(f"{name}: {value!r} is not a JSON object ({error})") from None


def require_dropout_off(config) -> None:
    """`disable_dropout` true where the config's stage compares the model with a reference (`DROPOUT_OFF_BECAUSE`):
    a config (or a sweep entry) that turns it off is refused with one line; the run's recorded config says it is
    off."""
    why = getattr(config, "DROPOUT_OFF_BECAUSE", None)
    if why is not None and not config.disable_dropout:
        raise PipelineError(f"disable_dropout: false is refused: {why}, so dropout stays off (drop the setting)")


def refuse_streaming(script_args) -> None:
    """TRL's dataset_streaming: the pipeline counts, checks and resumes over whole datasets, so it does not stream."""
    if getattr(script_args, "dataset_streaming", False):
        raise PipelineError("dataset_streaming is not supported: the pipeline checks every record and resumes by "
                            "position, so it loads the dataset (the datasets library caches it on disk)")


def replace_config(training_args, **changes):
    """`dataclasses.replace` of a training config, keeping what its first parse found of the machine: bf16 asked
    for without a GPU (`PipelineTrainingArguments`) is said when the run starts, not forgotten by the copy (whose own
    parse sees bf16 already off)."""
    return remember_the_machine(training_args, dataclasses.replace(training_args, **changes))


def remember_the_machine(parsed, copy):
    """`copy` of the config `parsed`, told what the first parse found of the machine: bf16 asked for without a GPU
    (`PipelineTrainingArguments`), which the copy's own parse, seeing bf16 off already, cannot know."""
    if getattr(parsed, "bf16_without_gpu", False):
        copy.bf16_without_gpu = True
    return copy


def check_beta(beta) -> None:
    if not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta <= 0:
        raise PipelineError(f"beta must be a positive number, got {beta!r}")
