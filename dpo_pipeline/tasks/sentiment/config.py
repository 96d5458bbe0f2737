"""The sentiment task's own config: the offline default's assets (`python -m dpo_pipeline.tasks.sentiment.embedded`)."""

from __future__ import annotations

from dataclasses import dataclass, field


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
