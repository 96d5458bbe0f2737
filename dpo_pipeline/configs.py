"""Config dataclasses of the four scripts, filled by `TrlParser` from a YAML file and the command line.

The training scripts extend TRL's own classes (`ScriptArguments`, `SFTConfig`, `DPOConfig`, `ModelConfig`);
the sampling scripts (`preference_pairs.py`, `eval.py`) share `SamplingArguments`. Defaults are the full-scale
experiment (GPT-2 Large on IMDb); `configs/tiny/` sets the embedded offline default.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from trl import DPOConfig, GRPOConfig, RewardConfig, ScriptArguments, SFTConfig

from .cli import PipelineError
from .generation import CACHE_IMPLEMENTATIONS
from .judge import DEFAULT_CHAT_JUDGE_TEMPLATE, DEFAULT_JUDGE_TEMPLATE

logger = logging.getLogger(__name__)

DEFAULT_WANDB_PROJECT = "dpo-imdb-sentiment"
DEFAULT_CLASSIFIER = "siebert/sentiment-roberta-large-english"
DEFAULT_DATASET = "stanfordnlp/imdb"


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


def require_the_gpu_asked_for(training_args) -> None:
    """Stop with one line when the config asked for bf16 and this machine has no GPU for it (see `gpu_problem`)."""
    if getattr(training_args, "bf16_without_gpu", None):
        raise PipelineError(training_args.bf16_without_gpu)


def derive_gradient_accumulation(config) -> None:
    """With `global_batch_size` G set, gradient_accumulation_steps = G / (per_device_train_batch_size x processes):
    the optimizer sees G examples per step on one GPU or on many. A launch where that is not a whole number is
    refused, naming what to change."""
    if config.global_batch_size is None:
        return
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    per_pass = config.per_device_train_batch_size * processes
    if config.global_batch_size < 1 or config.global_batch_size % per_pass:
        raise PipelineError(
            f"global_batch_size {config.global_batch_size} is not a multiple of per_device_train_batch_size "
            f"{config.per_device_train_batch_size} x {processes} process{'es' if processes > 1 else ''}: choose a "
            "per_device_train_batch_size that divides it by the number of processes")
    config.gradient_accumulation_steps = config.global_batch_size // per_pass


def _bf16_training_available() -> bool:
    from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available

    return is_torch_bf16_gpu_available() or is_torch_xla_available()


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


def gpu_problem() -> str | None:
    """Why torch can train in bfloat16 on no GPU here, in one sentence; None when it can."""
    import shutil
    import subprocess

    import torch

    if torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return None
        return (f"the GPU {torch.cuda.get_device_name()} has no bfloat16 support: pass --bf16 false --fp16 true to "
                "train in float16 mixed precision")
    if torch.version.cuda is None:
        return (f"torch {torch.__version__} is a CPU-only build: install a CUDA build of torch (see the README's "
                "'Your GPU' section), or pass --bf16 false to train in float32 on the CPU")
    driver = None
    if shutil.which("nvidia-smi"):
        query = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True)
        driver = query.stdout.strip().splitlines()[0] if query.returncode == 0 and query.stdout.strip() else None
    needed = MINIMUM_DRIVER.get(torch.version.cuda.split(".")[0], "a recent")
    found = f"this machine's driver is {driver}" if driver else "no NVIDIA driver answers here (nvidia-smi)"
    return (f"torch {torch.__version__} is built for CUDA {torch.version.cuda}, which needs NVIDIA driver {needed} or "
            f"newer, and finds no usable GPU ({found}): install a torch build for your driver (see the README's "
            "'Your GPU' section), or pass --bf16 false to train in float32 on the CPU")


# The oldest Linux driver each CUDA major version of PyPI's torch builds runs on.
MINIMUM_DRIVER = {"11": "450.80", "12": "525.60", "13": "580"}


class _PipelineTrainingChecks:
    """Checks of every training config of the pipeline, before transformers and TRL see it:
    - settings that cannot train are refused (`check_can_train`);
    - bf16 (TRL's default) without a GPU that has it stops training with one line saying why (`gpu_problem`);
    - `global_batch_size` fixes the examples per optimizer step whatever the number of processes: the gradient
      accumulation is derived from it, or a launch that cannot keep it is refused;
    - a hub token moves out of the arguments the Trainer pickles into every checkpoint."""

    def __post_init__(self):
        check_can_train(self)
        derive_gradient_accumulation(self)
        if getattr(self, "hub_token", None):
            # The Trainer pickles its arguments into every checkpoint (training_args.bin): a token given in a config
            # or on the command line would be saved with the weights. It moves to the environment instead, where
            # huggingface_hub finds it for push_to_hub.
            os.environ.setdefault("HF_TOKEN", self.hub_token)
            self.hub_token = None
        if self.bf16 is None:
            self.bf16 = not self.fp16  # TRL's default
        if self.bf16 and not self.use_cpu and not _bf16_training_available():
            # Parsing goes on (a config is read on any machine: --help, the benchmark's estimate, the tests); training
            # stops with this line once its inputs are checked (`require_the_gpu_asked_for`).
            self.bf16_without_gpu = f"bf16 is set (TRL's default) but {gpu_problem()}"
            self.bf16 = False
        super().__post_init__()


_NAN_FILTER_HELP = ("Log a NaN or infinite loss as the mean of the previous ones (transformers' default). Off here, "
                    "so that a diverging run stops at once with a clear message and keeps its last good checkpoint.")


_GLOBAL_BATCH_HELP = ("Examples per optimizer step over all processes (pairs for DPO; the DPO paper's is 64). "
                      "When set, gradient_accumulation_steps is derived from it, per_device_train_batch_size and the "
                      "number of processes of the launch, so that a run on 8 GPUs trains as one on 1 GPU.")


@dataclass
class SFTTrainingConfig(_PipelineTrainingChecks, SFTConfig):
    """TRL's `SFTConfig` with the pipeline's checks (`_PipelineTrainingChecks`)."""

    logging_nan_inf_filter: bool = field(default=False, metadata={"help": _NAN_FILTER_HELP})
    global_batch_size: int | None = field(default=None, metadata={"help": _GLOBAL_BATCH_HELP})


@dataclass
class DPOTrainingConfig(_PipelineTrainingChecks, DPOConfig):
    """TRL's `DPOConfig` with the pipeline's checks (`_PipelineTrainingChecks`)."""

    logging_nan_inf_filter: bool = field(default=False, metadata={"help": _NAN_FILTER_HELP})
    global_batch_size: int | None = field(default=None, metadata={"help": _GLOBAL_BATCH_HELP})


@dataclass
class SFTScriptArguments(ScriptArguments, TrackingArguments):
    """Data and initialisation for `sft.py` (the training itself is TRL's `SFTConfig`)."""

    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Hub id, local folder or local file of the SFT data: text, messages (chat, multi-turn), "
                          "prompt + completion, or input_ids, as TRL's SFTTrainer takes them."},
    )
    text_column: str = field(default="text", metadata={"help": "Column with the text to train on."})
    clean_reviews: bool = field(
        default=False,
        metadata={"help": "The sentiment task's cleaning of IMDb reviews: remove `<br />` line breaks and collapse "
                          "white space (never applied to other data unless asked for)."},
    )
    from_scratch: bool = field(
        default=False,
        metadata={
            "help": "Initialise the weights randomly from the model's config instead of loading pretrained ones "
            "(the embedded default trains a small GPT-2 from scratch)."
        },
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only this many training reviews (for quick runs)."}
    )
    pairs_file: str | None = field(
        default=None,
        metadata={
            "help": "Preferred-FT baseline: fine-tune on the chosen completions of this pairs file (loss on the "
            "completion only) instead of on reviews; dataset_name is then unused. Train it into the DPO sweep "
            "folder and eval.py puts it on the frontier."
        },
    )

    def __post_init__(self):
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise PipelineError(f"max_train_samples must be positive, got {self.max_train_samples}")
        refuse_streaming(self)


def refuse_streaming(script_args) -> None:
    """TRL's dataset_streaming: the pipeline counts, checks and resumes over whole datasets, so it does not stream."""
    if getattr(script_args, "dataset_streaming", False):
        raise PipelineError("dataset_streaming is not supported: the pipeline checks every record and resumes by "
                            "position, so it loads the dataset (the datasets library caches it on disk)")


@dataclass
class SamplingArguments(TrackingArguments):
    """What `preference_pairs.py` and `eval.py` share: prompts, sampling and the sentiment classifier."""

    classifier_name_or_path: str | None = field(
        default=DEFAULT_CLASSIFIER,
        metadata={"help": "Sentiment classifier; the reward is its probability of the label named POSITIVE."},
    )
    dataset_name: str = field(default=DEFAULT_DATASET, metadata={"help": "Hub id or local folder of the reviews."})
    dataset_config: str | None = field(default=None, metadata={"help": "Dataset configuration name, if any."})
    text_column: str = field(default="text", metadata={"help": "Column with the review text."})
    label_column: str = field(default="label", metadata={"help": "Column with the review's class (0 or 1)."})
    num_prompts: int = field(default=1000, metadata={"help": "Number of review prefixes, balanced over classes."})
    min_prefix_tokens: int = field(default=2, metadata={"help": "Shortest prompt prefix, in policy tokens."})
    max_prefix_tokens: int = field(default=8, metadata={"help": "Longest prompt prefix, in policy tokens."})
    max_new_tokens: int = field(default=64, metadata={"help": "Longest completion, in tokens."})
    temperature: float = field(
        default=1.0, metadata={"help": "Sampling temperature. No top-k or top-p truncation is ever applied."}
    )
    score_prompt: bool = field(
        default=True,
        metadata={"help": "Score prompt + completion (the whole review) rather than the completion alone."},
    )
    generation_batch_size: int = field(default=64, metadata={"help": "Sequences sampled per forward pass."})
    cache_implementation: str = field(
        default="dynamic",
        metadata={
            "help": "KV cache while sampling: dynamic (grows token by token) or static (preallocated; transformers "
            "then compiles the decoding step on a GPU, which pays off from the second batch on).",
            "choices": list(CACHE_IMPLEMENTATIONS),
        },
    )
    classifier_batch_size: int = field(default=64, metadata={"help": "Texts scored per classifier forward pass."})
    classifier_max_length: int = field(default=512, metadata={"help": "Classifier input truncation, in tokens."})
    dtype: str = field(
        default="auto",
        metadata={
            "help": "Precision of the policy's weights while sampling: auto (bfloat16 on a GPU that has it, else "
            "float32), float32, bfloat16 or float16. The logits are float32 whatever it is (the output layer stays "
            "float32), so the sampled distribution is not rounded.",
            "choices": ["auto", "float32", "bfloat16", "float16"],
        },
    )
    measure_dtype: str = field(
        default="float32",
        metadata={
            "help": "Precision of the weights of every measurement: the classifier's rewards and, in eval.py, the KL "
            "and held-out log-probability passes. float32 by default: with GPT-2 Large's logits (-60 to -70) even "
            "bfloat16 weights behind a float32 output layer move small KLs and implicit-reward margins by a large "
            "share of their size (tests/test_precision.py). bfloat16 (output layer still float32) is faster.",
            "choices": ["auto", "float32", "bfloat16", "float16"],
        },
    )
    seed: int = field(default=42, metadata={"help": "Seed for prompt selection, prefix lengths and sampling."})
    report_to: str = field(
        default="wandb", metadata={"help": "wandb or none.", "choices": ["wandb", "none"]}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow models that ship their own Python code (off: safe by default)."}
    )

    def __post_init__(self):
        positive = ("num_prompts", "max_new_tokens", "generation_batch_size", "classifier_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise PipelineError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 1 <= self.min_prefix_tokens <= self.max_prefix_tokens:
            raise PipelineError(
                "prefix lengths need 1 <= min_prefix_tokens <= max_prefix_tokens, got "
                f"{self.min_prefix_tokens} and {self.max_prefix_tokens}"
            )
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise PipelineError(f"temperature must be a positive number, got {self.temperature}")
        if hasattr(self, "output_dir"):
            check_output_dir(self.output_dir)


@dataclass
class PairsArguments(SamplingArguments):
    """`preference_pairs.py`: sample from the SFT model on train prefixes, score, and pair the completions."""

    model_name_or_path: str | None = field(default=None, metadata={"help": "The SFT model to sample from."})
    dataset_split: str = field(default="train", metadata={"help": "Split the prompts come from."})
    completions_per_prompt: int = field(default=4, metadata={"help": "Completions sampled per prompt (N)."})
    pair_mode: str = field(
        default="all",
        metadata={
            "help": "all: every N(N-1)/2 pair of completions with different rewards (the paper's 6 for N=4); "
            "best_vs_worst: one pair per prompt.",
            "choices": ["all", "best_vs_worst"],
        },
    )
    heldout_prompts: int = field(
        default=0,
        metadata={
            "help": "Extra prompts, beyond num_prompts, whose pairs go to heldout_pairs.jsonl: no model trains on "
            "them, and eval.py measures each model's implicit-reward accuracy on them."
        },
    )
    heldout_split: str | None = field(
        default=None,
        metadata={
            "help": "Split the held-out prompts come from, e.g. IMDb's `unsupervised` (50,000 unlabelled reviews), "
            "so that the train prompts can use every review of dataset_split. By default they come from "
            "dataset_split too, after the train prompts. Never the evaluation split."
        },
    )
    label_noise: list[float] = field(
        default_factory=list,
        metadata={
            "help": "Label-noise levels for a noise study: for each level q, pairs_noise-<q>.jsonl is pairs.jsonl "
            "with a seeded share q of its pairs flipped (chosen and rejected swapped). Train on it with the sweep "
            "entry `label_noise=q` of dpo.py. Held-out pairs are never flipped."
        },
    )
    output_dir: str = field(
        default="generations/gpt2-large",
        metadata={"help": "Folder for completions.jsonl, pairs.jsonl, heldout_pairs.jsonl and the config."},
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.classifier_name_or_path:
            raise PipelineError("classifier_name_or_path is not set: the pairs are ranked by its P(POSITIVE)")
        if self.completions_per_prompt < 2:
            raise PipelineError("completions_per_prompt must be at least 2 to make pairs, got "
                                f"{self.completions_per_prompt}")
        if self.heldout_prompts < 0:
            raise PipelineError(f"heldout_prompts must be 0 or more, got {self.heldout_prompts}")
        for level in self.label_noise:
            if not (math.isfinite(level) and 0 < level < 1):
                raise PipelineError(f"label_noise: each level must be between 0 and 1 (exclusive), got {level}")


@dataclass
class DPOScriptArguments(ScriptArguments, TrackingArguments):
    """`dpo.py`: the pairs to train on and the sweep (the shared training settings are TRL's `DPOConfig`). The pairs
    are TRL's script arguments' dataset (`dataset_name`, `dataset_config`, `dataset_train_split`,
    `dataset_test_split`), or `pairs_file`."""

    pairs_file: str | None = field(
        default=None,
        metadata={"help": "The pairs preference_pairs.py wrote (pairs.jsonl: sampled token ids and text), or any local "
                          "JSONL of preference pairs. dataset_name, when set, wins over it."},
    )
    sweep: list[str] = field(
        default_factory=lambda: ["beta=0.05", "beta=0.1", "beta=1.0"],
        metadata={
            "help": "One run per entry, each a comma-separated list of DPOConfig overrides, e.g. `beta=0.1` or "
            "`beta=0.1,loss_type=ipo` or `beta=0.1,loss_type=robust,label_smoothing=0.1`. Each run trains into "
            "output_dir/<entry> and is its own wandb run in one group."
        },
    )
    sweep_name: str | None = field(
        default=None,
        metadata={"help": "wandb group of the sweep's runs; by default <scale>/<folder>, e.g. tiny/dpo."},
    )
    eval_pairs_file: str | None = field(
        default=None,
        metadata={
            "help": "Held-out pairs (heldout_pairs.jsonl) that DPOTrainer evaluates every eval_steps with "
            "eval_strategy: steps: held-out implicit-reward accuracy and margin curves in metrics.jsonl and wandb."
        },
    )
    max_eval_pairs: int | None = field(
        default=None,
        metadata={"help": "Evaluate during training on only the first this many pairs of eval_pairs_file (eval.py "
                          "measures every final model and checkpoint on all of them)."},
    )
    max_train_pairs: int | None = field(default=None, metadata={"help": "Use only this many pairs (quick runs)."})

    def __post_init__(self):
        refuse_streaming(self)
        if not self.sweep:
            raise PipelineError("sweep is empty: give at least one run, e.g. beta=0.1")
        for name in ("max_train_pairs", "max_eval_pairs"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise PipelineError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass
class RewardModelTrainingConfig(_PipelineTrainingChecks, RewardConfig):
    """TRL's `RewardConfig` with the pipeline's checks (`_PipelineTrainingChecks`)."""

    logging_nan_inf_filter: bool = field(default=False, metadata={"help": _NAN_FILTER_HELP})
    global_batch_size: int | None = field(default=None, metadata={"help": _GLOBAL_BATCH_HELP})


@dataclass
class RewardModelScriptArguments(ScriptArguments, TrackingArguments):
    """`reward_model.py`: a reward model learned from the preference pairs with TRL's `RewardTrainer` (the DPO
    paper's "PPO" baseline scores its samples with it), its pairwise accuracy measured on held-out pairs."""

    pairs_file: str | None = field(
        default=None, metadata={"help": "The pairs to learn from (pairs.jsonl of preference_pairs.py)."})
    eval_pairs_file: str | None = field(
        default=None, metadata={"help": "Held-out pairs (heldout_pairs.jsonl): the reward model's pairwise accuracy."})
    max_train_pairs: int | None = field(default=None, metadata={"help": "Use only this many pairs (quick runs)."})

    def __post_init__(self):
        refuse_streaming(self)
        if self.max_train_pairs is not None and self.max_train_pairs < 1:
            raise PipelineError(f"max_train_pairs must be positive, got {self.max_train_pairs}")


RL_METHODS = ("rloo", "grpo")
RL_REWARDS = ("classifier", "reward_model")


@dataclass
class RLTrainingConfig(_PipelineTrainingChecks, GRPOConfig):
    """The online RL trainers' settings: TRL's `GRPOConfig` (RLOO's settings are a subset of it, but for
    `normalize_advantages`), with the pipeline's checks. `beta` is the KL coefficient to the reference (SFT) model."""

    logging_nan_inf_filter: bool = field(default=False, metadata={"help": _NAN_FILTER_HELP})
    global_batch_size: int | None = field(default=None, metadata={"help": _GLOBAL_BATCH_HELP})
    normalize_advantages: bool = field(
        default=False, metadata={"help": "RLOO only: normalize the leave-one-out advantages (TRL's RLOOConfig)."})

    # TRL derives these two from each other and the batch in __post_init__, and refuses both set: a copy of the
    # config (a sweep entry's, RLOO's) is made from the values the user gave (`given_generation_settings`).
    GENERATION_SETTINGS = ("generation_batch_size", "steps_per_generation")

    def __post_init__(self):
        self.given_generation_settings = {name: getattr(self, name) for name in self.GENERATION_SETTINGS}
        super().__post_init__()


@dataclass
class RLScriptArguments(ScriptArguments, TrackingArguments):
    """`rl.py`: online RL from the SFT model on the prompts of the preference pairs, KL-regularised to the SFT
    model (the DPO paper's PPO baselines), with TRL's RLOO or GRPO trainer, one run per sweep entry."""

    pairs_file: str | None = field(
        default=None, metadata={"help": "Pairs whose distinct prompts are the training prompts (pairs.jsonl)."})
    method: str = field(default="rloo", metadata={"help": "TRL trainer: rloo or grpo.", "choices": list(RL_METHODS)})
    reward: str = field(
        default="classifier",
        metadata={"help": "classifier: the true reward, P(POSITIVE) of classifier_name_or_path on prompt + completion "
                          "(the paper's PPO-GT); reward_model: the reward model reward_model.py learned from the "
                          "pairs (the paper's PPO).", "choices": list(RL_REWARDS)},
    )
    classifier_name_or_path: str | None = field(
        default=DEFAULT_CLASSIFIER, metadata={"help": "The sentiment classifier of the true reward."})
    classifier_batch_size: int = field(default=64, metadata={"help": "Texts per classifier forward pass."})
    classifier_max_length: int = field(default=512, metadata={"help": "Classifier input truncation, in tokens."})
    reward_model_path: str | None = field(
        default=None, metadata={"help": "The learned reward model (output_dir of reward_model.py)."})
    sweep: list[str] = field(
        default_factory=lambda: ["beta=0.05"],
        metadata={"help": "One run per entry: RLTrainingConfig overrides (beta is the KL coefficient), and method= "
                          "and reward= to vary the trainer and the reward, e.g. `method=rloo,reward=classifier,"
                          "beta=0.05`. Each run trains into output_dir/<entry>, where eval.py finds it."},
    )
    sweep_name: str | None = field(default=None, metadata={"help": "wandb group of the sweep's runs."})
    max_prompts: int | None = field(default=None, metadata={"help": "Train on only this many prompts."})

    def __post_init__(self):
        refuse_streaming(self)
        if not self.sweep:
            raise PipelineError("sweep is empty: give at least one run, e.g. beta=0.05")
        if self.max_prompts is not None and self.max_prompts < 1:
            raise PipelineError(f"max_prompts must be positive, got {self.max_prompts}")


EVAL_TASKS = ("sentiment", "chat")


@dataclass
class EvalArguments(SamplingArguments):
    """`eval.py`: sample from the SFT model and every DPO checkpoint on held-out prompts; reward, exact KL, held-out
    implicit-reward accuracy, win rates (classifier, LLM judge)."""

    task: str = field(
        default="sentiment",
        metadata={"help": "sentiment: review prefixes of dataset_name (text, label), reward = the classifier's "
                          "P(POSITIVE). chat: the conversations of a preference dataset (dataset_name, dataset_split), "
                          "rendered by the chat template; held-out accuracy on its pairs, the judge's win rate, and a "
                          "classifier reward only if classifier_name_or_path is set.",
                  "choices": list(EVAL_TASKS)},
    )
    max_heldout_pairs: int | None = field(
        default=None, metadata={"help": "Measure held-out accuracy on only the first this many held-out pairs."}
    )
    sft_model_path: str | None = field(default=None, metadata={"help": "The SFT model, also the KL reference."})
    dpo_output_dir: str | None = field(default=None, metadata={"help": "The sweep folder written by dpo.py."})
    dataset_split: str = field(default="test", metadata={"help": "Held-out split the prompts come from."})
    num_prompts: int = field(default=500, metadata={"help": "Held-out prefixes, balanced over classes."})
    samples_per_prompt: int = field(default=4, metadata={"help": "Completions sampled per prompt and model."})
    include_checkpoints: bool = field(
        default=True, metadata={"help": "Evaluate every saved checkpoint, not only each run's final model."}
    )
    kl_batch_size: int = field(
        default=32, metadata={"help": "Sequences per forward pass of the KL and held-out log-probability passes."}
    )
    heldout_pairs_file: str | None = field(
        default=None,
        metadata={
            "help": "Held-out preference pairs (heldout_pairs.jsonl of preference_pairs.py): each model's "
            "implicit-reward accuracy and margin on them."
        },
    )
    best_of_n: list[int] = field(
        default_factory=list,
        metadata={"help": "Best-of-N sampling from the SFT model as a reference curve, e.g. 1 4 16 64."},
    )
    best_of_n_prompts: int | None = field(
        default=None, metadata={"help": "Use only the first this many prompts for best-of-N (it samples max N each)."}
    )
    win_rate_tie_tolerance: float = field(
        default=0.0,
        metadata={"help": "Classifier win rate: a reward difference no larger than this is a tie."},
    )
    judge_model_path: str | None = field(
        default=None,
        metadata={
            "help": "Optional LLM-as-judge: a local causal LM (instruction-tuned, with a chat template if it has one) "
            "that compares each final model's completion with the SFT model's on the same prompt."
        },
    )
    judge_template: str | None = field(
        default=None,
        metadata={"help": "The judge's prompt, with {prompt}, {first} and {second} (the two completions as A, B); "
                          "by default the task's own (which review is more positive; which answer is more helpful)."},
    )
    judge_max_new_tokens: int = field(default=16, metadata={"help": "Longest judge verdict, in tokens (greedy)."})
    judge_batch_size: int = field(default=16, metadata={"help": "Judge prompts per forward pass."})
    judge_prompts: int | None = field(
        default=None, metadata={"help": "Judge only the first this many prompts (one comparison per prompt)."}
    )
    report_prompts: int = field(
        default=4, metadata={"help": "Prompts whose sample generations the report shows, SFT beside each model."}
    )
    output_dir: str = field(
        default="runs/gpt2-large/eval",
        metadata={"help": "Folder for report.md, frontier.csv, the plots, samples/ and per-model results."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.samples_per_prompt < 1 or self.kl_batch_size < 1:
            raise PipelineError("samples_per_prompt and kl_batch_size must be at least 1")
        if any(n < 1 for n in self.best_of_n):
            raise PipelineError(f"best_of_n: every N must be at least 1, got {self.best_of_n}")
        for name in ("best_of_n_prompts", "judge_prompts"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise PipelineError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not (math.isfinite(self.win_rate_tie_tolerance) and self.win_rate_tie_tolerance >= 0):
            raise PipelineError(f"win_rate_tie_tolerance must be 0 or more, got {self.win_rate_tie_tolerance}")
        if self.judge_template is None:
            self.judge_template = DEFAULT_CHAT_JUDGE_TEMPLATE if self.task == "chat" else DEFAULT_JUDGE_TEMPLATE
        missing = [key for key in ("{prompt}", "{first}", "{second}") if key not in self.judge_template]
        if missing:
            raise PipelineError(f"judge_template lacks {', '.join(missing)}")
        if self.task == "sentiment" and not self.classifier_name_or_path:
            raise PipelineError("classifier_name_or_path is not set: the sentiment task's reward is its P(POSITIVE)")
        if self.best_of_n and not self.classifier_name_or_path:
            raise PipelineError("best_of_n needs a reward to pick the best of N: set classifier_name_or_path")
        if self.max_heldout_pairs is not None and self.max_heldout_pairs < 1:
            raise PipelineError(f"max_heldout_pairs must be at least 1, got {self.max_heldout_pairs}")


@dataclass
class EmbeddedAssetsArguments:
    """`python -m dpo_pipeline.tasks.sentiment.embedded`: build the offline default's data, tokenizer, GPT-2 config
    and classifier."""

    output_dir: str = field(default=".cache/embedded", metadata={"help": "Where the assets are built (cached)."})
    test_fraction: float = field(default=0.1, metadata={"help": "Share of movies held out as the test split."})
    vocab_size: int = field(default=4096, metadata={"help": "Byte-level BPE vocabulary size."})
    n_layer: int = field(default=4, metadata={"help": "GPT-2 layers of the policy sft.py trains from scratch."})
    n_embd: int = field(default=128, metadata={"help": "GPT-2 width."})
    n_head: int = field(default=4, metadata={"help": "GPT-2 attention heads."})
    n_positions: int = field(default=128, metadata={"help": "GPT-2 context length."})
    classifier_epochs: float = field(default=1.0, metadata={"help": "Epochs of classifier training."})
    classifier_hidden_size: int = field(default=128, metadata={"help": "Width of the small RoBERTa classifier."})
    classifier_layers: int = field(default=2, metadata={"help": "Layers of the small RoBERTa classifier."})
    seed: int = field(default=0, metadata={"help": "Seed of the split and of the classifier's training."})
    overwrite: bool = field(
        default=False, metadata={"help": "Build again, replacing the cached assets (also when they were built with "
                                          "another config)."})


@dataclass
class ChatAssetsArguments:
    """`python -m dpo_pipeline.tasks.chat.embedded`: the offline chat demo's data, tokenizer and model config, built
    from the embedded default's reviews (see that module)."""

    source_dir: str = field(default=".cache/embedded", metadata={"help": "The embedded default's assets."})
    output_dir: str = field(default=".cache/embedded/chat", metadata={"help": "Where the chat assets are built."})
    sft_conversations: int = field(default=6000, metadata={"help": "Train conversations for SFT (a tenth as many test "
                                                                    "ones)."})
    train_pairs: int = field(default=2048, metadata={"help": "Train preference pairs (at most, from train movies)."})
    test_pairs: int = field(default=256, metadata={"help": "Test preference pairs (at most, from test movies)."})
    multi_turn_share: float = field(default=0.33, metadata={"help": "Share of requests after an earlier exchange."})
    n_layer: int = field(default=4, metadata={"help": "GPT-2 layers of the chat model sft.py trains from scratch."})
    n_embd: int = field(default=128, metadata={"help": "GPT-2 width."})
    n_head: int = field(default=4, metadata={"help": "GPT-2 attention heads."})
    n_positions: int = field(default=256, metadata={"help": "Context length (system turn, request and answer)."})
    seed: int = field(default=0, metadata={"help": "Seed of the requests and the pairing."})
    overwrite: bool = field(default=False, metadata={"help": "Build again, replacing the cached assets."})

    def __post_init__(self):
        for name in ("sft_conversations", "train_pairs", "test_pairs"):
            if getattr(self, name) < 1:
                raise PipelineError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.multi_turn_share <= 1:
            raise PipelineError(f"multi_turn_share must be between 0 and 1, got {self.multi_turn_share}")
