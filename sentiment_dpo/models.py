"""Loading the policy, the reference and the sentiment classifier, with one-line errors for bad paths."""

from __future__ import annotations

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


def load_causal_lm(name_or_path: str, field_name: str, dtype: torch.dtype = torch.float32,
                   device: torch.device | None = None, trust_remote_code: bool = False):
    """A causal LM in eval mode on `device`."""
    from transformers import AutoModelForCausalLM

    require_source(name_or_path, "model", field_name)
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise PipelineError(f"{field_name}: cannot load a model from {name_or_path}: {_one_line(error)}") from None
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
    """Reward model: r(text) = P(POSITIVE | text) from a sequence classifier, its label looked up by name."""

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
                name_or_path, dtype=dtype, trust_remote_code=trust_remote_code
            )
        except (OSError, ValueError) as error:
            raise PipelineError(f"{field_name}: cannot load a classifier from {name_or_path}: {_one_line(error)}") from None
        return cls(model.to(device or default_device()), tokenizer, batch_size, max_length)

    @torch.no_grad()
    def score(self, texts: list[str]) -> list[float]:
        """P(POSITIVE) of each text. Texts are batched by length (less padding) and returned in input order."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        rewards = [0.0] * len(texts)
        device = next(self.model.parameters()).device
        for start in range(0, len(order), self.batch_size):
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
