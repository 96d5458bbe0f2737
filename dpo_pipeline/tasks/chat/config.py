"""The chat task's own config: the offline chat demo's assets (`python -m dpo_pipeline.tasks.chat.embedded`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import PipelineError


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
