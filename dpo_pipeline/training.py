"""SFT and the DPO sweep on top of TRL's `SFTTrainer` and `DPOTrainer`: resumable, tracked, one folder per run."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import re
import shutil
from pathlib import Path

from transformers import TrainerCallback

from .checkpoints import (
    KeepResumeStateOfTheLatestCheckpoint,
    check_free_disk,
    checkpoint_step,
    count_parameters,
    drop_resume_state_of_older_checkpoints,
    estimate_training_disk,
    last_complete_checkpoint,
    resume_checkpoint,
    training_steps,
)
from .cli import PipelineError, require_source
from .configs import DPOScriptArguments, SFTScriptArguments, require_the_gpu_asked_for
from .data import load_split
from .distributed import on_main, process_state
from .models import check_model_flags, load_tokenizer, model_init_kwargs
from .pairs import noisy_pairs_file
from .preferences import (
    check_pairs_match_tokenizer,
    check_prompt_lengths,
    is_tokenized,
    load_preferences,
    source_fingerprint,
    warn_of_truncation,
)
from .progress import ProgressLogCallback, on_a_terminal
from .runs import COMPLETE_FILE, RunFolder, atomic_write_json, config_dict, config_fingerprint
from .tasks.sentiment.reviews import load_reviews
from .tracking import MetricsFileCallback, finish_wandb_run, start_wandb_run, wants_wandb

logger = logging.getLogger(__name__)

# Written into every trained policy's folder (DPO runs and baselines): what eval.py needs to place it on the plots.
SWEEP_RUN_FILE = "sweep_run.json"
# Sweep keys that choose the run's data rather than a DPOConfig field.
DATA_SWEEP_KEYS = ("label_noise",)


def _model_dtype(model_args):
    """The dtype the policy is loaded in, in transformers' meaning (`auto`: the checkpoint's own; TRL's default is
    float32, so that mixed-precision training keeps float32 master weights)."""
    import torch

    return "auto" if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)


def weight_bytes(model_args) -> int:
    """Bytes per saved weight: the dtype the policy is trained in (`auto`: as its config says, float32 if unsaid)."""
    import torch
    from transformers import AutoConfig

    dtype = _model_dtype(model_args)
    if dtype == "auto":
        config = AutoConfig.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
        dtype = getattr(torch, str(getattr(config, "dtype", None) or "float32").replace("torch.", ""), torch.float32)
    return dtype.itemsize


def write_run_info(run_dir: Path, *, method: str, beta: float | None, loss_type: list[str],
                   label_smoothing: float | None, label_noise: float, pairs_file: str, reference_model: str,
                   **extra) -> None:
    """sweep_run.json of a trained policy (a DPO sweep run or a baseline): what eval.py needs to place it."""
    atomic_write_json(run_dir / SWEEP_RUN_FILE, {
        "name": run_dir.name, "method": method, "beta": beta, "loss_type": loss_type,
        "label_smoothing": label_smoothing, "label_noise": label_noise, "pairs_file": pairs_file,
        "reference_model": reference_model, **extra,
    })


class TrainingDiverged(PipelineError):
    """The loss or the weights became NaN or infinite: training stops, the checkpoints saved so far are kept."""

    exit_code = 3


def parameters_are_finite(model) -> bool:
    import torch

    return all(bool(torch.isfinite(parameter).all()) for parameter in model.parameters())


class StopOnNonFiniteValues(TrainerCallback):
    """Stops training with `TrainingDiverged` at the first NaN or infinite loss, and before a checkpoint would be
    saved from non-finite weights: every checkpoint on disk is a good one to resume from or evaluate.

    The scripts' configs set `logging_nan_inf_filter: false`, else the Trainer would log a NaN loss as the mean of
    the previous ones and hide it.
    """

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise TrainingDiverged(self._message(args, state, f"the loss is {loss}"))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if control.should_save and model is not None and not parameters_are_finite(model):
            control.should_save = False
            raise TrainingDiverged(self._message(args, state, "the weights are NaN or infinite"))

    @staticmethod
    def _message(args, state, what: str) -> str:
        last = last_complete_checkpoint(args.output_dir)
        last = last.name if last else None
        kept = f"the last good checkpoint, {last}, is kept" if last else "no checkpoint had been saved yet"
        return (f"training diverged at step {state.global_step} in {args.output_dir}: {what}; {kept}. Lower the "
                "learning rate (or check the data) and start again with --overwrite true")


STAGING_FOLDER = ".final-model.tmp"


class TrainingRun:
    """One training run's folder through its life, the same on every process of a launch (one process or many).

    Every process reads (is the run finished? which checkpoint to resume from?); the main process alone writes
    (claims the folder, starts the wandb run, removes a checkpoint whose save was cut off, moves the final weights
    into place, marks the run complete, cuts the checkpoints down), and the others wait for it where they need its
    result. The Trainer itself runs on every process and does the parallel part.
    """

    def __init__(self, folder: RunFolder, training_args, overwrite: bool):
        self.folder, self.args, self.overwrite = folder, training_args, overwrite
        self.state = process_state(training_args)
        self.is_main = self.state.is_main_process

    @property
    def path(self) -> Path:
        return self.folder.path

    def is_finished(self) -> bool:
        """Whether the run finished already with this config (a folder of another run is an error), read by every
        process before any of them writes."""
        finished = self.folder.check(overwrite=self.overwrite)
        self.state.wait_for_everyone()
        return finished

    def claim(self, configs: dict) -> None:
        if self.is_main:
            self.folder.claim(configs, overwrite=self.overwrite)
        self.state.wait_for_everyone()

    def on_main(self, function, *args, **kwargs) -> None:
        """Something written once (sweep_run.json, the wandb run), by the main process."""
        if self.is_main:
            function(*args, **kwargs)

    def resume_from(self) -> str | None:
        """The checkpoint every process resumes from: the main process first removes a checkpoint whose save was
        cut off, then all of them take the last complete one."""
        if self.is_main:
            resume_checkpoint(self.path)
        self.state.wait_for_everyone()
        latest = last_complete_checkpoint(self.path)
        return str(latest) if latest else None

    def callbacks(self, desc: str) -> list:
        """What every training run of the pipeline adds to the Trainer's callbacks: metrics.jsonl, a stop at the
        first NaN, weights-only older checkpoints, and progress lines where stderr is not a terminal (then in place
        of the Trainer's bar)."""
        callbacks = [MetricsFileCallback(self.path), StopOnNonFiniteValues(), KeepResumeStateOfTheLatestCheckpoint()]
        if not on_a_terminal():
            self.args.disable_tqdm = True
            callbacks.append(ProgressLogCallback(desc))
        return callbacks

    def finish(self, trainer, summary: dict, base_model: str, base_dtype) -> None:
        """The end of the run: final weights saved (gathered from every process under ZeRO-3 or FSDP, LoRA adapters
        merged into the base model, checked finite, staged and moved into place), the folder marked complete, its
        checkpoints cut down to weights (nothing will resume from them), tracking closed."""
        staging = self.path / STAGING_FOLDER
        if self.is_main:
            shutil.rmtree(staging, ignore_errors=True)
        self.state.wait_for_everyone()
        trainer.save_model(str(staging))  # on every process: it gathers sharded weights; the main process writes

        def put_in_place():
            if (staging / "adapter_config.json").is_file():
                merge_adapters(base_model, staging, base_dtype, self.args.trust_remote_code)
            if not saved_weights_are_finite(staging):
                raise TrainingDiverged(f"training ended with NaN or infinite weights in {self.path}; they were not "
                                       "saved in place (the checkpoints are kept)")
            for path in staging.iterdir():
                os.replace(path, self.path / path.name)
            staging.rmdir()
            self.folder.complete(summary)
            drop_resume_state_of_older_checkpoints(self.path, keep=None)

        on_main(put_in_place)
        finish_wandb_run()


def merge_adapters(base_model: str, adapter_folder: Path, dtype, trust_remote_code: bool) -> None:
    """Replace the LoRA adapters saved in `adapter_folder` by full weights: the base model with the adapters merged
    in, loaded on the CPU in `dtype` (a quantized base is loaded unquantized), so that every later stage loads the
    folder as a plain model."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype, trust_remote_code=trust_remote_code)
    merged = PeftModel.from_pretrained(base, str(adapter_folder)).merge_and_unload()
    for adapter_file in adapter_folder.glob("adapter_*"):
        adapter_file.unlink()
    merged.save_pretrained(adapter_folder, safe_serialization=True)


def saved_weights_are_finite(folder: Path) -> bool:
    """Every tensor of the safetensors files in `folder` is finite (read one tensor at a time)."""
    import torch
    from safetensors import safe_open

    for weights in folder.glob("*.safetensors"):
        with safe_open(str(weights), framework="pt") as handle:
            for name in handle.keys():
                if not bool(torch.isfinite(handle.get_tensor(name)).all()):
                    return False
    return True


def disk_needed(model_args, training_args, peft_config, steps: int):
    """The disk a run of `steps` steps writes (`checkpoints.estimate_training_disk`), from the model's config."""
    parameters, trainable = count_parameters(model_args.model_name_or_path, peft_config,
                                             training_args.trust_remote_code)
    return estimate_training_disk(parameters, trainable, weight_bytes(model_args), steps, training_args,
                                  adapters_only=peft_config is not None)


def sft_data(script_args: SFTScriptArguments, split: str):
    """One split of sft.py's data, as TRL's SFTTrainer takes it: text, messages (a conversation, rendered by the chat
    template), prompt + completion, or input_ids. `text_column` names the text column; IMDb's cleaning (`<br />`,
    white space) only where the config asks for it (`clean_reviews`, the sentiment task)."""
    if script_args.clean_reviews:
        return load_reviews(script_args.dataset_name, split, script_args.dataset_config, script_args.text_column,
                            label_column=None)
    dataset = load_split(script_args.dataset_name, split, script_args.dataset_config)
    if script_args.text_column != "text" and script_args.text_column in dataset.column_names:
        dataset = dataset.rename_column(script_args.text_column, "text")
    columns = set(dataset.column_names)
    if not ({"text"} <= columns or {"messages"} <= columns or {"prompt", "completion"} <= columns
            or {"input_ids"} <= columns):
        raise PipelineError(f"dataset_name: {script_args.dataset_name} ({split}) has none of the columns SFT trains "
                            f"on (text, messages, prompt + completion, input_ids); it has {', '.join(sorted(columns))}"
                            "; name the text column with text_column")
    if "messages" in columns and "prompt" in columns and "completion" not in columns:
        # UltraChat's layout: a text prompt beside the conversation that starts with it. TRL would read a prompt
        # column as a prompt-completion pair (and fail on the missing completion): train on the conversation.
        dataset = dataset.remove_columns("prompt")
    return dataset


def run_sft(script_args: SFTScriptArguments, training_args, model_args) -> Path:
    """Fine-tune (or, with `from_scratch`, train) a causal LM with TRL's `SFTTrainer`: on a dataset (text or chat),
    or, for the Preferred-FT baseline, on the chosen completions of a pairs file."""
    from transformers import AutoConfig, AutoModelForCausalLM, set_seed
    from trl import SFTTrainer, get_peft_config, get_quantization_config

    preferred_ft = script_args.pairs_file is not None
    if not preferred_ft:
        require_source(script_args.dataset_name, "dataset", "dataset_name")
    require_source(model_args.model_name_or_path, "model", "model_name_or_path")
    check_model_flags(model_args, from_scratch=script_args.from_scratch)
    output_dir = Path(training_args.output_dir)
    extra = None
    if preferred_ft:
        if not Path(script_args.pairs_file).is_file():
            raise PipelineError(f"pairs_file: {script_args.pairs_file} does not exist")
        extra = {"pairs": file_sha256(script_args.pairs_file)}
    folder = RunFolder(output_dir, config_fingerprint(script_args, training_args, model_args, extra=extra), "sft")
    run = TrainingRun(folder, training_args, script_args.overwrite)
    if run.is_finished():
        logger.info("SFT already finished in %s with this config; nothing to do", output_dir)
        return output_dir

    # Every input is loaded and checked before the output folder is touched.
    trust = training_args.trust_remote_code
    tokenizer = load_tokenizer(model_args.model_name_or_path, "model_name_or_path", trust, model_args.model_revision)
    if preferred_ft:
        pairs = load_preferences(script_args.pairs_file)
        check_pairs_match_tokenizer(pairs, tokenizer, script_args.pairs_file)
        check_prompt_lengths(pairs, tokenizer, training_args.max_length, "pairs_file", script_args.pairs_file)
        train = preferred_completions(pairs)
        if is_tokenized(pairs):
            training_args.completion_only_loss = True  # the loss on the completion ids only, as for text pairs
    else:
        train = sft_data(script_args, script_args.dataset_train_split)
        # TRL's chat_template_path gives a base model (Mistral-7B-v0.1 has none) the template of another tokenizer.
        if "messages" in train.column_names and not getattr(tokenizer, "chat_template", None) \
                and not getattr(training_args, "chat_template_path", None):
            raise PipelineError(f"dataset_name: {script_args.dataset_name} holds conversations (messages), and the "
                                "model's tokenizer has no chat template to render them")
    if script_args.max_train_samples:
        train = train.shuffle(seed=training_args.seed).select(range(min(script_args.max_train_samples, len(train))))
    evaluation = None
    if training_args.eval_strategy != "no" and not preferred_ft:
        evaluation = sft_data(script_args, script_args.dataset_test_split)
    model = model_args.model_name_or_path  # TRL loads it (model_init_kwargs, quantization) as its own scripts do
    training_args.model_init_kwargs = model_init_kwargs(model_args, trust)
    if script_args.from_scratch:
        set_seed(training_args.seed)
        config = AutoConfig.from_pretrained(model_args.model_name_or_path, trust_remote_code=trust)
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        training_args.model_init_kwargs = None
        logger.info("Training %s from scratch (%.1fM parameters)", config.model_type, model.num_parameters() / 1e6)
    require_the_gpu_asked_for(training_args)
    peft_config = get_peft_config(model_args)
    steps = training_steps(len(train), training_args)
    stage = "preferred_ft" if preferred_ft else "sft"
    on_main(lambda: check_free_disk(output_dir, disk_needed(model_args, training_args, peft_config, steps).total,
                                    f"{'Preferred-FT' if preferred_ft else 'SFT'} ({steps} steps)"))

    configs = {"script": script_args, "training": training_args, "model": model_args}
    run.claim(configs)
    if preferred_ft:
        run.on_main(write_run_info, output_dir, method="preferred_ft", beta=None, loss_type=["preferred_ft"],
                    label_smoothing=None, label_noise=0.0, pairs_file=script_args.pairs_file,
                    reference_model=model_args.model_name_or_path)
        logger.info("Preferred-FT on the %d chosen completions of %s", len(train), script_args.pairs_file)
    else:
        logger.info("SFT on %d examples of %s", len(train), script_args.dataset_name)
    if wants_wandb(training_args.report_to):
        run.on_main(start_wandb_run, output_dir, script_args.wandb_project, stage, config=configs_for_tracking(configs))
    trainer = SFTTrainer(
        model=model, args=training_args, train_dataset=train, eval_dataset=evaluation, processing_class=tokenizer,
        quantization_config=None if script_args.from_scratch else get_quantization_config(model_args),
        peft_config=peft_config, callbacks=run.callbacks(stage),
    )
    ignore_bias_buffers(trainer, script_args)
    result = trainer.train(resume_from_checkpoint=run.resume_from())
    summary = {"global_step": trainer.state.global_step, "train_loss": result.training_loss}
    if evaluation is not None:
        summary.update(trainer.evaluate())
    run.finish(trainer, summary, model_args.model_name_or_path, _model_dtype(model_args))
    logger.info("%s model saved to %s (%s)", "Preferred-FT" if preferred_ft else "SFT", output_dir, summary)
    return output_dir


def ignore_bias_buffers(trainer, script_args) -> None:
    """TRL's `ignore_bias_buffers`: DDP skips the model's boolean buffers (a fix for some LM bias/mask buffers)."""
    if getattr(script_args, "ignore_bias_buffers", False):
        import torch

        trainer.model._ddp_params_and_buffers_to_ignore = [
            name for name, buffer in trainer.model.named_buffers() if buffer.dtype == torch.bool]


def configs_for_tracking(configs: dict) -> dict:
    """The whole config of a run (script, data, training, model, sweep overrides) as one dict for wandb."""
    return {name: config_dict(config) if dataclasses.is_dataclass(config) else config
            for name, config in configs.items()}


def preferred_completions(pairs):
    """Preferred-FT's data (DPO paper, section 6): every distinct (prompt, chosen completion) of the pairs (from
    `load_preferences`), with the loss on the completion only. Pairs with token ids give `input_ids` and a
    `completion_mask` (the sampled ids, EOS only where sampled); text pairs give TRL's prompt-completion format."""
    from datasets import Dataset

    if is_tokenized(pairs):
        unique = dict.fromkeys((tuple(p), tuple(c)) for p, c in zip(pairs["prompt_ids"], pairs["chosen_ids"]))
        examples = [{"input_ids": [*prompt, *chosen], "completion_mask": [0] * len(prompt) + [1] * len(chosen)}
                    for prompt, chosen in unique]
        return Dataset.from_list(examples)
    unique = dict.fromkeys(zip(pairs["prompt"], pairs["chosen"]))
    return Dataset.from_list([{"prompt": prompt, "completion": chosen} for prompt, chosen in unique])


# --- DPO sweep -------------------------------------------------------------------------------------------------


def parse_sweep_entry(entry: str) -> dict[str, str]:
    """`"beta=0.1,loss_type=ipo"` -> `{"beta": "0.1", "loss_type": "ipo"}` (values converted later, by field)."""
    overrides = {}
    for item in filter(None, (part.strip() for part in entry.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise PipelineError(f"sweep entry {entry!r}: expected key=value pairs separated by commas")
        overrides[key.strip()] = value.strip()
    if not overrides:
        raise PipelineError(f"sweep entry {entry!r} is empty")
    return overrides


def sweep_run_name(overrides: dict[str, str]) -> str:
    """Folder and wandb name of a sweep run: `beta-0.1`, `beta-0.1_loss_type-ipo`."""
    name = "_".join(f"{key}-{value}" for key, value in overrides.items())
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", name)


def apply_overrides(training_args, overrides: dict[str, str]):
    """A copy of `training_args` (a DPOConfig, or an SFTConfig) with string overrides converted as the command line
    converts them."""
    from transformers import HfArgumentParser

    actions = {action.dest: action for action in HfArgumentParser(type(training_args))._actions}
    converted = {}
    for key, raw in overrides.items():
        action = actions.get(key)
        if action is None or key in ("output_dir", "help"):
            raise PipelineError(f"sweep: {key!r} is not a {type(training_args).__name__} field")
        values = raw.split() if action.nargs in ("+", "*") else [raw]
        try:
            values = [action.type(value) if action.type else value for value in values]
        except (TypeError, ValueError):
            raise PipelineError(f"sweep: {key}={raw!r} is not a valid value") from None
        if action.choices and any(value not in action.choices for value in values):
            raise PipelineError(f"sweep: {key}={raw!r} is not one of {', '.join(map(str, action.choices))}")
        converted[key] = values if action.nargs in ("+", "*") else values[0]
    if converted.get("torch_compile") is False:
        # TrainingArguments turns torch_compile back on when a compile backend is set, and its first __post_init__
        # set one: turning compilation off clears them too.
        converted.update(torch_compile_backend=None, torch_compile_mode=None)
    try:
        run_args = dataclasses.replace(training_args, **converted)
    except (TypeError, ValueError) as error:
        raise PipelineError(f"sweep: {' '.join(str(error).split())}") from None
    if hasattr(run_args, "beta"):  # a DPO config (the benchmark also overrides SFT configs)
        check_beta(run_args.beta)
    return run_args


def sweep_pairs_file(pairs_file: str, overrides: dict[str, str], field_name: str = "pairs_file") -> str:
    """The pairs a sweep run trains on: `pairs_file`, or with `label_noise=q` its noisy copy pairs_noise-<q>.jsonl
    (written by preference_pairs.py when its `label_noise` lists q)."""
    raw = overrides.get("label_noise")
    if raw is None:
        return pairs_file
    if field_name != "pairs_file":
        raise PipelineError(f"sweep: label_noise={raw} trains on the noisy copies preference_pairs.py writes beside "
                            "its pairs.jsonl: it needs pairs_file, not dataset_name")
    try:
        level = float(raw)
    except ValueError:
        raise PipelineError(f"sweep: label_noise={raw!r} is not a number") from None
    if not 0 <= level < 1:
        raise PipelineError(f"sweep: label_noise={raw!r} must be in [0, 1)")
    path = noisy_pairs_file(pairs_file, level)
    if not path.is_file():
        raise PipelineError(f"sweep: label_noise={raw}: {path} does not exist; list {level:g} in label_noise of "
                            "preference_pairs.py to make it")
    return str(path)


def check_beta(beta) -> None:
    if not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta <= 0:
        raise PipelineError(f"beta must be a positive number, got {beta!r}")


# DPOConfig options that only some of TRL's losses read (TRL 1.16's DPOTrainer): under any other loss a value away
# from the default would train a plain run under another run's name.
LOSS_SPECIFIC_OPTIONS = {
    "label_smoothing": ("robust", "exo_pair", "aot", "aot_unpaired"),
    "discopop_tau": ("discopop",),
}


def check_options_take_effect(args, where: str) -> None:
    """Refuse settings that the chosen loss (or the rest of the config) ignores: a silent no-op is a mislabelled run."""
    from trl import DPOConfig

    defaults = {f.name: f.default for f in dataclasses.fields(DPOConfig)}
    for option, losses in LOSS_SPECIFIC_OPTIONS.items():
        value = getattr(args, option)
        if value != defaults[option] and not set(args.loss_type) & set(losses):
            raise PipelineError(f"{where}: {option}={value:g} has no effect with loss_type {','.join(args.loss_type)}; "
                                f"only {', '.join(losses)} use it (add loss_type=..., or drop {option})")
    if args.f_alpha_divergence_coef != defaults["f_alpha_divergence_coef"] and \
            args.f_divergence_type != "alpha_divergence":
        raise PipelineError(f"{where}: f_alpha_divergence_coef has no effect with f_divergence_type "
                            f"{args.f_divergence_type}; it needs f_divergence_type=alpha_divergence")
    for option in ("ref_model_mixup_alpha", "ref_model_sync_steps"):
        if getattr(args, option) != defaults[option] and not args.sync_ref_model:
            raise PipelineError(f"{where}: {option} has no effect without sync_ref_model true")


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def preference_source(script_args: DPOScriptArguments) -> tuple[str, str, str | None, str]:
    """Where dpo.py's pairs come from: (source, split, config, field). `dataset_name` (a hub id or a local folder or
    file of preference data in any of TRL's layouts) wins over `pairs_file`, so that `--dataset_name` on the command
    line trains on that dataset even where the config names a pairs file."""
    if script_args.dataset_name:
        if script_args.pairs_file:
            logger.info("dataset_name is set: training on %s, not on pairs_file %s", script_args.dataset_name,
                        script_args.pairs_file)
        return (script_args.dataset_name, script_args.dataset_train_split, script_args.dataset_config,
                "dataset_name")
    if script_args.pairs_file:
        return script_args.pairs_file, "train", None, "pairs_file"
    raise PipelineError("no preference data: set pairs_file (preference_pairs.py's pairs.jsonl) or dataset_name "
                        "(a hub id, or a local folder or file of prompt/chosen/rejected pairs)")


def run_dpo_sweep(script_args: DPOScriptArguments, training_args, model_args) -> list[Path]:
    """Train one DPO model per sweep entry into `<output_dir>/<entry>`; finished runs are skipped, interrupted
    ones resume from their last checkpoint. The reference model is the SFT model the policy starts from (with LoRA,
    the same model with its adapters disabled)."""
    from trl import get_peft_config, get_quantization_config

    from .trainers import DPOTrainer

    require_source(model_args.model_name_or_path, "model", "model_name_or_path")
    check_model_flags(model_args)
    root = Path(training_args.output_dir)
    sweep_name = script_args.sweep_name or root.name
    runs = [(sweep_run_name(o), o) for o in map(parse_sweep_entry, script_args.sweep)]
    names = [name for name, _ in runs]
    if len(set(names)) != len(names):
        raise PipelineError(f"sweep has duplicate entries: {', '.join(names)}")
    run_args = {name: apply_overrides(training_args, {k: v for k, v in overrides.items() if k not in DATA_SWEEP_KEYS})
                for name, overrides in runs}
    check_beta(training_args.beta)
    for (name, _), entry in zip(runs, script_args.sweep):
        check_options_take_effect(run_args[name], f"sweep entry {entry!r}")
    source, split, config_name, field_name = preference_source(script_args)
    run_sources = {name: sweep_pairs_file(source, overrides, field_name) for name, overrides in runs}
    pairs = {path: load_preferences(path, split, config_name, script_args.max_train_pairs, training_args.seed,
                                    field_name) for path in dict.fromkeys(run_sources.values())}
    fingerprints = {path: source_fingerprint(path, split, config_name) for path in pairs}
    trust = training_args.trust_remote_code
    tokenizer = load_tokenizer(model_args.model_name_or_path, "model_name_or_path", trust, model_args.model_revision)
    for path, dataset in pairs.items():
        check_pairs_match_tokenizer(dataset, tokenizer, path, field_name)
        check_prompt_lengths(dataset, tokenizer, training_args.max_length, field_name, path)
        warn_of_truncation(dataset, training_args.max_length, path)
    eval_pairs = held_out_pairs_for_training(script_args, training_args, tokenizer, field_name)
    logger.info("DPO sweep %s: %d runs (%s) on %s", sweep_name, len(runs), ", ".join(names),
                ", ".join(f"{len(dataset)} pairs of {path}" for path, dataset in pairs.items()))
    require_the_gpu_asked_for(training_args)
    peft_config = get_peft_config(model_args)

    def check_disk():
        needed = 0
        for name, _ in runs:
            if (root / name / COMPLETE_FILE).is_file():
                continue
            latest = last_complete_checkpoint(root / name)
            steps = training_steps(len(pairs[run_sources[name]]), run_args[name])
            needed += disk_needed(model_args, run_args[name], peft_config,
                                  steps - (checkpoint_step(latest) if latest else 0)).total
        check_free_disk(root, needed, "the sweep's unfinished runs")

    process_state(training_args)
    on_main(check_disk)

    finished = []
    for name, overrides in runs:
        run_dir = root / name
        args = dataclasses.replace(run_args[name], output_dir=str(run_dir), run_name=f"{sweep_name}/{name}",
                                   model_init_kwargs=model_init_kwargs(model_args, trust))
        run_source = run_sources[name]
        fingerprint = config_fingerprint(script_args, args, model_args, extra={"pairs": fingerprints[run_source]})
        run = TrainingRun(RunFolder(run_dir, fingerprint, "dpo"), args, script_args.overwrite)
        if run.is_finished():
            logger.info("[%s] finished already; skipping", name)
            finished.append(run_dir)
            continue
        configs = {"script": script_args, "training": args, "model": model_args, "overrides": overrides}
        run.claim(configs)
        run.on_main(write_run_info, run_dir, method="dpo", beta=args.beta, loss_type=args.loss_type,
                    label_smoothing=args.label_smoothing, label_noise=float(overrides.get("label_noise", 0)),
                    pairs_file=str(run_source), reference_model=model_args.model_name_or_path,
                    sweep=sweep_name, overrides=overrides)
        if wants_wandb(args.report_to):
            run.on_main(start_wandb_run, run_dir, script_args.wandb_project, "dpo",
                        config=configs_for_tracking(configs), group=script_args.sweep_name)
        trainer = DPOTrainer(
            model=model_args.model_name_or_path, ref_model=None, args=args, train_dataset=pairs[run_source],
            eval_dataset=eval_pairs, processing_class=tokenizer,
            quantization_config=get_quantization_config(model_args),
            peft_config=peft_config, callbacks=run.callbacks(f"[{name}] DPO"),
        )
        ignore_bias_buffers(trainer, script_args)
        logger.info("[%s] training (beta=%s, loss=%s)", name, args.beta, ",".join(args.loss_type))
        result = trainer.train(resume_from_checkpoint=run.resume_from())
        last = {prefix: next((entry for entry in reversed(trainer.state.log_history)
                              if f"{prefix}rewards/margins" in entry), {}) for prefix in ("", "eval_")}
        run.finish(trainer, {"global_step": trainer.state.global_step, "train_loss": result.training_loss,
                             **{key: value for prefix, logs in last.items() for key, value in logs.items()
                                if key.startswith(f"{prefix}rewards/")}},
                   model_args.model_name_or_path, _model_dtype(model_args))
        logger.info("[%s] saved to %s", name, run_dir)
        finished.append(run_dir)
        del trainer
    return finished


def held_out_pairs_for_training(script_args: DPOScriptArguments, training_args, tokenizer, field_name: str):
    """The pairs DPOTrainer evaluates every eval_steps: eval_pairs_file, else (for a dataset) its
    dataset_test_split, as TRL's own script does; None when eval_strategy is no."""
    if training_args.eval_strategy == "no":
        if script_args.eval_pairs_file:
            raise PipelineError("eval_pairs_file is set but eval_strategy is no: set eval_strategy steps and "
                                "eval_steps to evaluate it during training")
        return None
    if script_args.eval_pairs_file:
        source, split, config_name, field_name = script_args.eval_pairs_file, "train", None, "eval_pairs_file"
    elif field_name == "dataset_name":
        source, config_name = script_args.dataset_name, script_args.dataset_config
        split = script_args.dataset_test_split
    else:
        raise PipelineError("eval_strategy is set, and there is nothing to evaluate: set eval_pairs_file (e.g. "
                            "heldout_pairs.jsonl of preference_pairs.py)")
    pairs = load_preferences(source, split, config_name, None, 0, field_name)
    if script_args.max_eval_pairs:
        pairs = pairs.select(range(min(script_args.max_eval_pairs, len(pairs))))
    check_pairs_match_tokenizer(pairs, tokenizer, source, field_name)
    check_prompt_lengths(pairs, tokenizer, training_args.max_length, field_name, source)
    return pairs
