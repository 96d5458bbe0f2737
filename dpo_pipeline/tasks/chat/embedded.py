"""The offline chat demo's assets, built from the embedded default's Rotten Tomatoes reviews (no download beyond it):

    chat-init/          the embedded tokenizer with chat turns (<|system|>, <|user|>, <|assistant|>, <|end|>) and a
                        chat template, and the config of a small GPT-2 that sft.py trains from scratch as a chat model
    sft/{train,test}    conversations ("messages"): a user asks about a movie, the assistant answers with one of its
                        reviews (fresh or rotten alike)
    prefs/{train,test}  conversational preference pairs grouped by movie: the same request, chosen = a fresh review of
                        that movie, rejected = a rotten one; a share of the requests come after an earlier exchange
                        (multi-turn). Test movies are the sentiment split's test movies: never seen in training.

The classifier of the embedded default (P(POSITIVE) of a review) is then the offline judge of the answers.

    python -m dpo_pipeline.tasks.chat.embedded --config configs/chat-tiny/assets.yaml
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np

from ...cli import run_script
from ...errors import PipelineError
from .config import ChatAssetsArguments
from ...runs import RunFolder, config_fingerprint, write_jsonl

logger = logging.getLogger(__name__)

CHAT_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
END_OF_TURN = "<|end|>"
# Every turn is <|role|>content<|end|>; the assistant's turn is opened for generation. The prompt rendered alone is
# a prefix of the prompt rendered with its answer, so TRL's tokenization keeps every prompt token.
CHAT_TEMPLATE = ("{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
REQUESTS = ("Write a short review of {movie}.", "What did you think of {movie}?",
            "Give me your take on {movie} in a sentence or two.", "Is {movie} worth watching?",
            "Review {movie} for me, briefly.")
OPENINGS = (("I'm thinking of watching {movie} tonight.", "Good idea to ask first. Shall I tell you what I thought?"),
            ("Have you seen {movie}?", "I have. Shall I tell you what I thought?"),
            ("My friends keep talking about {movie}.", "It gets talked about. Want my view?"))
FOLLOW_UPS = ("Yes, give me a short review.", "Go on, tell me.", "Please do, in a sentence or two.")


def movie_title(slug: str) -> str:
    """"a_grin_without_a_cat" -> "A Grin Without A Cat" (the corpus names movies by slug)."""
    return " ".join(word.capitalize() for word in slug.split("_"))


def request(movie: str, rng: np.random.Generator, multi_turn: bool) -> list[dict]:
    """A user's request for a review of `movie`: one turn, or an earlier exchange and then the request."""
    messages = []
    title = movie_title(movie)
    if multi_turn:
        opening, answer = OPENINGS[rng.integers(len(OPENINGS))]
        messages += [{"role": "user", "content": opening.format(movie=title)},
                     {"role": "assistant", "content": answer},
                     {"role": "user", "content": FOLLOW_UPS[rng.integers(len(FOLLOW_UPS))]}]
    else:
        messages.append({"role": "user", "content": REQUESTS[rng.integers(len(REQUESTS))].format(movie=title)})
    return messages


def answer(text: str) -> dict:
    return {"role": "assistant", "content": text}


def read_reviews(path: Path) -> list[dict]:
    if not path.is_file():
        raise PipelineError(f"source_dir: {path} does not exist: build the embedded default first "
                            "(python -m dpo_pipeline.tasks.sentiment.embedded --config configs/tiny/assets.yaml)")
    return [json.loads(line) for line in path.read_text().splitlines()]


def conversations(reviews: list[dict], count: int, args: ChatAssetsArguments, rng) -> list[dict]:
    """SFT data: `count` reviews drawn at random, each the answer to a request about its movie."""
    chosen = rng.permutation(len(reviews))[:count]
    return [{"messages": request(reviews[i]["movie"], rng, rng.random() < args.multi_turn_share) +
             [answer(reviews[i]["text"])]} for i in chosen.tolist()]


def preference_pairs(reviews: list[dict], count: int, args: ChatAssetsArguments, rng) -> list[dict]:
    """Pairs grouped by movie: a request about a movie, chosen a fresh review of it, rejected a rotten one. Each
    rotten review of a movie that also has fresh ones makes one pair (with a fresh review drawn at random); `count`
    of them are kept."""
    by_movie = defaultdict(lambda: ([], []))
    for review in reviews:
        by_movie[review["movie"]][review["label"]].append(review["text"])
    pairs = []
    for movie in sorted(by_movie):
        rotten, fresh = by_movie[movie]
        if not rotten or not fresh:
            continue
        for text in rotten:
            pairs.append({"prompt": request(movie, rng, rng.random() < args.multi_turn_share),
                          "chosen": [answer(fresh[rng.integers(len(fresh))])], "rejected": [answer(text)]})
    return [pairs[i] for i in rng.permutation(len(pairs))[:count].tolist()]


def save_chat_init(source_tokenizer: Path, args: ChatAssetsArguments, out: Path) -> int:
    """The embedded tokenizer with chat turns and a chat template (EOS = the end of a turn, so generation stops
    there), and a small GPT-2 config for it; returns the vocabulary size."""
    from transformers import AutoTokenizer, GPT2Config

    tokenizer = AutoTokenizer.from_pretrained(source_tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": list(CHAT_TOKENS)})
    tokenizer.eos_token = END_OF_TURN
    tokenizer.pad_token = END_OF_TURN
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = args.n_positions
    tokenizer.save_pretrained(out)
    eos = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    GPT2Config(vocab_size=len(tokenizer), n_positions=args.n_positions, n_embd=args.n_embd, n_layer=args.n_layer,
               n_head=args.n_head, bos_token_id=eos, eos_token_id=eos).save_pretrained(out)
    return len(tokenizer)


def build_chat_assets(args: ChatAssetsArguments) -> Path:
    out, source = Path(args.output_dir), Path(args.source_dir)
    folder = RunFolder(out, config_fingerprint(args), "chat-assets")
    if folder.check(overwrite=args.overwrite):
        logger.info("Chat demo assets are already built in %s", out)
        return out
    reviews = {split: read_reviews(source / "data" / f"{split}.jsonl") for split in ("train", "test")}
    if not (source / "gpt2-init" / "tokenizer.json").is_file():
        raise PipelineError(f"source_dir: {source / 'gpt2-init'} has no tokenizer: build the embedded default first")
    folder.claim({"chat_assets": args}, overwrite=args.overwrite)
    rng = np.random.default_rng(args.seed)
    vocabulary = save_chat_init(source / "gpt2-init", args, out / "chat-init")
    sizes = {"sft": (args.sft_conversations, args.sft_conversations // 10),
             "prefs": (args.train_pairs, args.test_pairs)}
    counts = {}
    for split, index in (("train", 0), ("test", 1)):
        counts[f"sft_{split}"] = write_jsonl(out / "sft" / f"{split}.jsonl",
                                             conversations(reviews[split], sizes["sft"][index], args, rng))
        counts[f"prefs_{split}"] = write_jsonl(out / "prefs" / f"{split}.jsonl",
                                               preference_pairs(reviews[split], sizes["prefs"][index], args, rng))
    shutil.copy(source / "classifier" / "config.json", out / "judge-classifier-config.json")  # which judge it was
    folder.complete({"vocabulary": vocabulary, **counts})
    logger.info("Chat demo assets in %s: %s", out, counts)
    return out


def main(args: ChatAssetsArguments) -> None:
    build_chat_assets(args)


if __name__ == "__main__":
    run_script(main, [ChatAssetsArguments])
