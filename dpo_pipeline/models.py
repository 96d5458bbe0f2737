"""Loading the policy, the reference and the sentiment classifier, with one-line errors for bad paths."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch

from .errors import PipelineError
from .hub import require_source
from .estimators import positive_label_index, positive_probability
from .progress import progress

logger = logging.getLogger(__name__)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` is bfloat16 on a GPU that supports it and float32 elsewhere (CPU bfloat16 matmuls are slow)."""
    if name == "auto":
        bf16_ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16_ok else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_tokenizer(name_or_path: str, field_name: str, trust_remote_code: bool = False, revision: str = "main"):
    """The model's tokenizer, with the EOS token as padding if it has none (GPT-2 has none)."""
    from transformers import AutoTokenizer

    require_source(name_or_path, "tokenizer", field_name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code,
                                                  revision=revision)
    except (OSError, ValueError) as error:
        raise PipelineError(f"{field_name}: cannot load a tokenizer from {name_or_path}: {_one_line(error)}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


class Float32Head(torch.nn.Module):
    """A model's output layer in float32: its weights as the checkpoint has them (never rounded to the body's dtype),
    applied to its input cast up to float32.

    GPT-2 computes its logits in the model's dtype, and GPT-2 Large's logits lie around -60 to -70, where bfloat16
    values are 0.25 to 0.5 apart: rounding the logits (or the head's weights) alone moves a 64-token log-probability
    by tenths of a nat and inflates its KL several-fold. With this head the body may run in bfloat16 for speed
    (sampling) while the logits are computed in float32. The copy also unties the head from the input embeddings
    (GPT-2 shares them), which follow the body's dtype.
    """

    def __init__(self, head: torch.nn.Module):
        super().__init__()
        self.head = copy.deepcopy(head).float()

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.head(hidden_states.float(), *args, **kwargs)

    def _apply(self, fn, recurse=True):
        # model.to(torch.bfloat16) must not round the head's weights, and model.to(device) must still move them.
        device = fn(torch.empty(0, device=next(self.head.parameters()).device)).device
        self.head = self.head.to(device=device)
        return self


def _output_layer(model) -> tuple[str | None, torch.nn.Module | None]:
    """The output layer of a causal LM (its output embeddings) or of a sequence classifier (`classifier`,
    `score`), with the attribute that holds it (None for a causal LM's, set with `set_output_embeddings`)."""
    if hasattr(model, "get_output_embeddings") and model.get_output_embeddings() is not None:
        return None, model.get_output_embeddings()
    for name in ("classifier", "score"):
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Module):
            return name, head
    return None, None


def with_float32_head(model, dtype: torch.dtype):
    """A float32 `model` with its body cast to `dtype` and its output layer kept in float32 (`Float32Head`), so that
    logits (hence log-probabilities, KL, rewards) are float32 whatever the body's precision."""
    if dtype == torch.float32:
        return model
    name, head = _output_layer(model)
    if head is None:
        raise PipelineError(f"cannot find the output layer of {type(model).__name__} to keep it in float32; use "
                            "dtype float32")
    float32_head = Float32Head(head)
    model = model.to(dtype)
    if name is None:
        model.set_output_embeddings(float32_head)
    else:
        setattr(model, name, float32_head)
    return model


def load_causal_lm(name_or_path: str, field_name: str, dtype: torch.dtype = torch.float32,
                   device: torch.device | None = None, trust_remote_code: bool = False,
                   float32_logits: bool = False):
    """A causal LM in eval mode on `device`, its weights in `dtype`; a folder of LoRA adapters (a LoRA run's
    checkpoint) gives its base model with the adapters merged in. With `float32_logits` (for sampling and measuring)
    the output layer stays float32 whatever `dtype` is (`Float32Head`); training leaves the head to the trainer."""
    from transformers import AutoModelForCausalLM

    check_causal_lm(name_or_path, field_name, trust_remote_code)
    load_dtype = torch.float32 if float32_logits else dtype
    try:
        if (Path(name_or_path) / "adapter_config.json").is_file():  # a LoRA checkpoint: its base with it merged in
            from peft import AutoPeftModelForCausalLM

            model = AutoPeftModelForCausalLM.from_pretrained(name_or_path, dtype=load_dtype,
                                                             trust_remote_code=trust_remote_code).merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=load_dtype,
                                                         trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise PipelineError(f"{field_name}: cannot load a model from {name_or_path}: {_one_line(error)}") from None
    if float32_logits:
        model = with_float32_head(model, dtype)
    return model.to(device or default_device()).eval()


# Heads of a model that is no causal LM, whatever its family can also be loaded as (a RoBERTa classifier loads as a
# RobertaForCausalLM with a new, random LM head: it would sample noise, not fail).
NOT_GENERATIVE_HEADS = ("ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering",
                        "ForMaskedLM", "ForMultipleChoice")


def check_weight_files(name_or_path: str, field_name: str) -> None:
    """The weight files of a local model folder are whole, read without loading a tensor: each safetensors file's
    header (8 bytes of length, then JSON) parses and the file is as long as the header's last tensor ends (a copy or
    download cut short is shorter), each PyTorch .bin is a whole zip archive. A corrupt or partial file is one line
    naming it, where transformers would end in a traceback of safetensors' or torch's."""
    import json
    import struct
    import zipfile

    folder = Path(name_or_path)
    if not folder.is_dir():
        return
    for weights in sorted(folder.glob("*.safetensors")):
        size = weights.stat().st_size
        try:
            with weights.open("rb") as handle:
                (header_length,) = struct.unpack("<Q", handle.read(8))
                if not 0 < header_length <= size - 8:
                    raise ValueError(f"a header of {header_length} bytes in a file of {size}")
                header = json.loads(handle.read(header_length))
            end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
            if size < 8 + header_length + end:
                raise ValueError(f"{size:,} bytes where its tensors end at byte {8 + header_length + end:,}: cut short")
        except (struct.error, ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as error:
            raise PipelineError(f"{field_name}: {weights} is not a whole safetensors file ({_one_line(error)}); "
                                "copy or save the model again") from None
    for weights in sorted(folder.glob("*.bin")):
        try:
            with zipfile.ZipFile(weights) as archive:
                broken = archive.testzip()
        except (zipfile.BadZipFile, OSError) as error:
            raise PipelineError(f"{field_name}: {weights} is not a whole PyTorch weights file ({_one_line(error)}); "
                                "copy or save the model again") from None
        if broken is not None:
            raise PipelineError(f"{field_name}: {weights} is corrupt ({broken} fails its checksum)")


def _config(name_or_path: str, field_name: str, what: str, trust_remote_code: bool):
    """The model's config alone (config.json: no weights), with a one-line error if it cannot be read, and its weight
    files checked whole (`check_weight_files`)."""
    from transformers import AutoConfig

    require_source(name_or_path, what, field_name)
    check_weight_files(name_or_path, field_name)
    try:
        return AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PipelineError(f"{field_name}: cannot read the config of {name_or_path}: {_one_line(error)}") from None


def check_classifier_labels(name_or_path: str, trust_remote_code: bool = False) -> None:
    """Fail early, from the config alone (before any weights load), if the classifier is no sequence classifier (a
    causal LM, say) or has no label named POSITIVE (see SentimentClassifier)."""
    field_name = "classifier_name_or_path"
    config = _config(name_or_path, field_name, "classifier", trust_remote_code)
    architectures = list(getattr(config, "architectures", None) or [])
    if architectures and not any(name.endswith("ForSequenceClassification") for name in architectures):
        raise PipelineError(f"{field_name}: {name_or_path} is a {', '.join(architectures)}, not a sequence "
                            "classifier: give a sentiment classifier with a label named POSITIVE")
    try:
        positive_label_index(config.id2label)
    except ValueError as error:
        raise PipelineError(f"{field_name}: {name_or_path}: {_one_line(error)}") from None


def check_causal_lm(name_or_path: str, field_name: str, trust_remote_code: bool = False, tokenizer=None) -> None:
    """Fail early, from the config alone (before any weights load), if `name_or_path` is no causal LM (a classifier,
    a family transformers cannot load as one) or, given its `tokenizer`, has fewer embeddings than the tokenizer has
    tokens (ids past the end would index outside the embedding matrix). A folder of LoRA adapters is checked when
    its base model loads."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if (Path(name_or_path) / "adapter_config.json").is_file():
        return
    config = _config(name_or_path, field_name, "model", trust_remote_code)
    architectures = list(getattr(config, "architectures", None) or [])
    if architectures and all(name.endswith(NOT_GENERATIVE_HEADS) for name in architectures):
        raise PipelineError(f"{field_name}: {name_or_path} is a {', '.join(architectures)}, not a causal language "
                            "model: give the policy (a model that generates text)")
    if not trust_remote_code and config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise PipelineError(f"{field_name}: {name_or_path} is a {config.model_type} model, which transformers "
                            "cannot load as a causal language model")
    vocabulary = getattr(config, "vocab_size", None) or getattr(getattr(config, "text_config", None),
                                                               "vocab_size", None)
    if tokenizer is not None and isinstance(vocabulary, int) and len(tokenizer) > vocabulary:
        raise PipelineError(f"{field_name}: the tokenizer of {name_or_path} has {len(tokenizer)} tokens and the "
                            f"model only {vocabulary} embeddings: they do not belong together")


class SentimentClassifier:
    """Reward model: r(text) = P(POSITIVE | text) from a sequence classifier, its label looked up by name; its
    output layer runs in float32 (`Float32Head`) when the body is in a lower precision."""

    def __init__(self, model, tokenizer, batch_size: int = 64, max_length: int = 512):
        try:
            self.positive_index = positive_label_index(model.config.id2label)
        except ValueError as error:
            raise PipelineError(f"classifier_name_or_path: {error}") from None
        self.model, self.tokenizer = model.eval(), tokenizer
        self.batch_size, self.max_length = batch_size, max_length

    @classmethod
    def load(cls, name_or_path: str, dtype: torch.dtype = torch.float32, device: torch.device | None = None,
             batch_size: int = 64, max_length: int = 512, trust_remote_code: bool = False) -> SentimentClassifier:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        field_name = "classifier_name_or_path"
        check_classifier_labels(name_or_path, trust_remote_code)  # from the config, before any weights load
        try:
            tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
            model = AutoModelForSequenceClassification.from_pretrained(
                name_or_path, dtype=torch.float32, trust_remote_code=trust_remote_code
            )
        except (OSError, ValueError) as error:
            raise PipelineError(
                f"{field_name}: cannot load a classifier from {name_or_path}: {_one_line(error)}") from None
        return cls(with_float32_head(model, dtype).to(device or default_device()), tokenizer, batch_size, max_length)

    @torch.no_grad()
    def score(self, texts: list[str], desc: str | None = None) -> list[float]:
        """P(POSITIVE) of each text. Texts are batched by length (less padding) and returned in input order; with
        `desc`, progress is shown."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        rewards = [0.0] * len(texts)
        device = next(self.model.parameters()).device
        starts = range(0, len(order), self.batch_size)
        if desc:
            starts = progress(starts, total=len(texts), desc=desc, unit="texts",
                              weight=lambda start: len(order[start : start + self.batch_size]))
        for start in starts:
            batch = order[start : start + self.batch_size]
            inputs = self.tokenizer(
                [texts[i] for i in batch], padding=True, truncation=True, max_length=self.max_length,
                return_tensors="pt",
            ).to(device)
            probabilities = positive_probability(self.model(**inputs).logits, self.positive_index)
            for i, probability in zip(batch, probabilities.tolist()):
                rewards[i] = probability
        return rewards


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


# TRL's ModelConfig flags that act only with LoRA (use_peft), or only on a quantized base model.
LORA_FLAGS = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "lora_target_parameters",
              "lora_modules_to_save", "lora_task_type", "use_rslora", "use_dora")
QUANTIZATION_FLAGS = ("bnb_4bit_quant_type", "use_bnb_nested_quant", "bnb_4bit_quant_storage")
FLASH_ATTENTION = {"flash_attention_2": "flash_attn", "flash_attention_3": "flash_attn_interface"}


def check_model_flags(model_args, from_scratch: bool = False) -> None:
    """TRL's ModelConfig flags do what they say or stop with one line, before anything is loaded: LoRA settings
    without use_peft, quantization settings without load_in_4bit/8bit, a quantized base without LoRA adapters or
    without bitsandbytes or an NVIDIA GPU, flash attention without its package, or any of it on a model trained from
    scratch."""
    import dataclasses
    import importlib.util

    defaults = {field.name: field.default for field in dataclasses.fields(model_args)}
    changed = {name for name, default in defaults.items() if getattr(model_args, name) != default}
    quantized = model_args.load_in_4bit or model_args.load_in_8bit
    if not model_args.use_peft and changed & set(LORA_FLAGS):
        raise PipelineError(f"{', '.join(sorted(changed & set(LORA_FLAGS)))} only act on LoRA adapters: add "
                            "--use_peft true (or drop them)")
    if not model_args.load_in_4bit and changed & set(QUANTIZATION_FLAGS):
        raise PipelineError(f"{', '.join(sorted(changed & set(QUANTIZATION_FLAGS)))} only act with --load_in_4bit "
                            "true (or drop them)")
    if from_scratch and (model_args.use_peft or quantized):
        raise PipelineError("from_scratch trains every weight of a new model: it takes neither LoRA (use_peft) nor a "
                            "quantized base (load_in_4bit/8bit)")
    if quantized:
        flag = "load_in_4bit" if model_args.load_in_4bit else "load_in_8bit"
        if not model_args.use_peft:
            raise PipelineError(f"{flag}: a quantized base model trains only through LoRA adapters (QLoRA): add "
                                "--use_peft true")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise PipelineError(f"{flag} needs bitsandbytes, an optional extra: pip install bitsandbytes")
        if not torch.cuda.is_available():
            raise PipelineError(f"{flag} needs an NVIDIA GPU (bitsandbytes quantizes on CUDA) and torch finds none "
                                "here: train without quantization, or on such a GPU")
    package = FLASH_ATTENTION.get(model_args.attn_implementation or "")
    if package and (importlib.util.find_spec(package) is None or not torch.cuda.is_available()):
        raise PipelineError(f"attn_implementation {model_args.attn_implementation} needs an NVIDIA GPU and the "
                            f"{package} package (pip install flash-attn); sdpa needs neither")


def model_init_kwargs(model_args, trust_remote_code: bool, given: dict | str | None = None) -> dict:
    """How TRL's trainers load the policy (and the reference) from model_name_or_path, as TRL's own scripts do:
    revision, attention implementation, dtype (transformers' meaning: `auto` is the checkpoint's own) and whether
    to run remote code, merged with the config's own `model_init_kwargs` (`given`, a dict or its JSON), whose keys
    win: `{"use_kernels": true}` (the Hub kernels TRL 1.16 names in place of use_liger_kernel) or an
    `attn_implementation` reach the model. A key given there that replaces one of the model settings is said in one
    line."""
    import json

    settings = {"revision": model_args.model_revision, "attn_implementation": model_args.attn_implementation,
                "dtype": model_args.dtype, "trust_remote_code": trust_remote_code}
    if isinstance(given, str):
        try:
            given = json.loads(given)
        except json.JSONDecodeError:
            raise PipelineError(f"model_init_kwargs: {given!r} is not a JSON object") from None
    if given is not None and not isinstance(given, dict):
        raise PipelineError(f"model_init_kwargs: {given!r} is not a mapping of from_pretrained arguments")
    given = given or {}
    for key in sorted(settings.keys() & given.keys()):
        if given[key] != settings[key]:
            logger.info("model_init_kwargs: %s=%r replaces %r of the model settings", key, given[key], settings[key])
    return {**settings, **given}


# A classifier's P(POSITIVE) as a task's reward (`tasks.Task`), read from a config's classifier_* fields: the sentiment
# task's reward, and the chat task's where a classifier is named.
def check_classifier_reward(args) -> None:
    """The classifier's checks that need no weights: it exists, and it has a label named POSITIVE."""
    check_classifier_labels(args.classifier_name_or_path, args.trust_remote_code)


def load_classifier_reward(args, device, dtype) -> SentimentClassifier:
    return SentimentClassifier.load(args.classifier_name_or_path, dtype, device, args.classifier_batch_size,
                                    args.classifier_max_length, args.trust_remote_code)


def describe_classifier_reward(args) -> str:
    return (f"P(POSITIVE) of `{args.classifier_name_or_path}` on "
            f"{'prompt + completion' if args.score_prompt else 'the response'}")


# The reward model's own padding token where the policy's tokenizer pads with an end-of-sequence token (GPT-2): a
# sequence classifier scores the last token that is not padding, so with EOS as padding it could never see whether a
# completion ended with EOS.
REWARD_PAD_TOKEN = "<|reward_pad|>"


def end_token_ids(tokenizer) -> set[int]:
    """The tokenizer's end-of-sequence id(s) (a list for chat models with an end-of-turn token)."""
    ids = tokenizer.eos_token_id
    return set(ids if isinstance(ids, list) else [ids]) - {None}


def reward_model_tokenizer(tokenizer):
    """The tokenizer a reward model is trained and scored with: the policy's, with a padding token of its own
    (`REWARD_PAD_TOKEN`) where the policy pads with EOS, so that a sampled EOS is the last token the model scores."""
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id in end_token_ids(tokenizer):
        tokenizer.add_special_tokens({"pad_token": REWARD_PAD_TOKEN})
    return tokenizer


def fit_embeddings_to_tokenizer(model, tokenizer):
    """A model with one embedding row per token of `tokenizer` (the reward model's padding token added)."""
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


class LearnedRewardModel:
    """The reward model of reward_model.py scoring token sequences (prompt ids + sampled completion ids, EOS where it
    was sampled), as it was trained on them, its score standardised as measured on SFT samples:

        r(x, y) = (s(x, y) - mean) / sd

    s the model's one output at the sequence's last token; mean and sd of s over completions sampled from the SFT
    model (the pairs' own, recorded in the reward model's summary), so that r is about N(0, 1) on SFT samples and the
    KL coefficient beta means the same for the learned reward as for any reward on that scale."""

    def __init__(self, model, tokenizer, mean: float = 0.0, sd: float = 1.0, batch_size: int = 64):
        if not sd > 0:
            raise PipelineError(f"reward model: its standard deviation on SFT samples is {sd}; it cannot be scaled")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.mean, self.sd, self.batch_size = mean, sd, batch_size

    @classmethod
    def load(cls, path: str, device: torch.device | None = None, batch_size: int = 64,
             trust_remote_code: bool = False) -> LearnedRewardModel:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from .inputs import read_json
        from .runs import COMPLETE_FILE

        summary = read_json(Path(path) / COMPLETE_FILE, "reward_model_path").get("summary") or {}
        check_weight_files(path, "reward_model_path")
        if "reward_mean" not in summary or "reward_sd" not in summary:
            raise PipelineError(f"reward_model_path: {path} has no standardisation (reward_mean, reward_sd) in its "
                                "summary: train it again with this version of reward_model.py")
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32,
                                                                       trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as error:
            raise PipelineError(f"reward_model_path: cannot load a reward model from {path}: "
                                f"{_one_line(error)}") from None
        return cls(model.to(device or default_device()), tokenizer, summary["reward_mean"], summary["reward_sd"],
                   batch_size)

    @torch.no_grad()
    def raw_scores(self, sequences: list[list[int]]) -> list[float]:
        """s of each token sequence, in input order: right-padded with the reward model's own padding token, which
        no sequence holds (the score is read at the last token that is not padding)."""
        pad = self.tokenizer.pad_token_id
        if any(pad in ids for ids in sequences):
            raise PipelineError("reward model: a sequence to score holds its padding token")
        device = next(self.model.parameters()).device
        scores = []
        for start in range(0, len(sequences), self.batch_size):
            batch = sequences[start : start + self.batch_size]
            width = max(map(len, batch))
            input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids in batch], device=device)
            attention_mask = (torch.arange(width, device=device)[None, :] <
                              torch.tensor([len(ids) for ids in batch], device=device)[:, None]).long()
            scores += self.model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].float().tolist()
        return scores

    def score(self, sequences: list[list[int]]) -> list[float]:
        """r of each token sequence: its raw score standardised on SFT samples."""
        return [(score - self.mean) / self.sd for score in self.raw_scores(sequences)]


def context_length(config) -> int | None:
    """The longest sequence a causal LM's config allows (max_position_embeddings, GPT-2's n_positions), or None."""
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
