"""Loading the policy, the reference and the sentiment classifier, with one-line errors for bad paths."""

from __future__ import annotations

import copy
import logging

import torch

from .cli import PipelineError, require_source
from .metrics import positive_label_index, positive_probability

logger = logging.getLogger(__name__)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` is bfloat16 on a GPU that supports it and float32 elsewhere (CPU bfloat16 matmuls are slow)."""
    if name == "auto":
        bf16_ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16_ok else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_tokenizer(name_or_path: str, field_name: str, trust_remote_code: bool = False):
    """The model's tokenizer, with the EOS token as padding if it has none (GPT-2 has none)."""
    from transformers import AutoTokenizer

    require_source(name_or_path, "tokenizer", field_name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
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
    """A causal LM in eval mode on `device`, its weights in `dtype`. With `float32_logits` (for sampling and
    measuring) its output layer stays float32 whatever `dtype` is (`Float32Head`); training leaves the head to the
    trainer."""
    from transformers import AutoModelForCausalLM

    require_source(name_or_path, "model", field_name)
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch.float32 if float32_logits else dtype,
                                                     trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise PipelineError(f"{field_name}: cannot load a model from {name_or_path}: {_one_line(error)}") from None
    if float32_logits:
        model = with_float32_head(model, dtype)
    return model.to(device or default_device()).eval()


def check_classifier_labels(name_or_path: str, trust_remote_code: bool = False) -> None:
    """Fail early, from the config alone, if the classifier has no label named POSITIVE (see SentimentClassifier)."""
    from transformers import AutoConfig

    field_name = "classifier_name_or_path"
    require_source(name_or_path, "classifier", field_name)
    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        positive_label_index(config.id2label)
    except (OSError, ValueError) as error:
        raise PipelineError(f"{field_name}: {name_or_path}: {_one_line(error)}") from None


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
        require_source(name_or_path, "classifier", field_name)
        try:
            tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
            model = AutoModelForSequenceClassification.from_pretrained(
                name_or_path, dtype=torch.float32, trust_remote_code=trust_remote_code
            )
        except (OSError, ValueError) as error:
            raise PipelineError(f"{field_name}: cannot load a classifier from {name_or_path}: {_one_line(error)}") from None
        return cls(with_float32_head(model, dtype).to(device or default_device()), tokenizer, batch_size, max_length)

    @torch.no_grad()
    def score(self, texts: list[str], desc: str | None = None) -> list[float]:
        """P(POSITIVE) of each text. Texts are batched by length (less padding) and returned in input order; with
        `desc`, progress is shown."""
        from .progress import progress

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
