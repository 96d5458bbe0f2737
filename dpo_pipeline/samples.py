"""Where eval.py keeps what it measured, read back by the report: each model's samples (`samples/<model>.jsonl`:
prompt, completion, token ids, reward, KL), result row (`models/<model>.json`) and per-pair held-out margins
(`heldout/<model>.jsonl`, which the report's paired bootstraps read), best-of-N's rewards and the judge's verdicts,
each keyed by what it was measured with (settings, weights), so that a later run measures only what is new.
Measuring writes here; the report only reads."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .inputs import read_json, read_jsonl
from .runs import atomic_write_json, write_jsonl


def safe_name(name: str) -> str:
    """A model's name (`beta-0.1/step-36`) as a file name."""
    return name.replace("/", "__")


def model_signature(path: str) -> str:
    """Changes when the weights at `path` change (a retrained model at the same path is evaluated again)."""
    weights = sorted(Path(path).glob("*.safetensors")) + sorted(Path(path).glob("*.bin"))
    return ";".join(f"{w.name}:{w.stat().st_size}:{w.stat().st_mtime_ns}" for w in weights) or path


def short_hash(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class EvalStore:
    """The files of one eval folder (`out`)."""

    def __init__(self, out: str | Path):
        self.out = Path(out)

    # samples -------------------------------------------------------------------------------------------------
    def samples_file(self, name: str) -> Path:
        return self.out / "samples" / f"{safe_name(name)}.jsonl"

    def write_samples(self, name: str, samples: list[dict]) -> None:
        write_jsonl(self.samples_file(name), samples)

    def read_samples(self, name: str) -> dict[tuple[int, int], dict]:
        """A model's saved samples keyed by (prompt index, sample index)."""
        keyed, seen = {}, {}
        for sample in read_jsonl(self.samples_file(name), "samples"):
            prompt_index = sample["prompt_index"]
            sample_index = sample.get("sample_index", seen.get(prompt_index, 0))
            seen[prompt_index] = sample_index + 1
            keyed[(prompt_index, sample_index)] = sample
        return keyed

    # per-model results ---------------------------------------------------------------------------------------
    def result_file(self, name: str) -> Path:
        return self.out / "models" / f"{safe_name(name)}.json"

    def read_result(self, name: str) -> dict | None:
        path = self.result_file(name)
        return read_json(path, "output_dir") if path.is_file() else None

    def write_result(self, name: str, row: dict) -> None:
        atomic_write_json(self.result_file(name), row)

    # per-pair held-out margins -----------------------------------------------------------------------------------
    def heldout_file(self, name: str) -> Path:
        return self.out / "heldout" / f"{safe_name(name)}.jsonl"

    def write_heldout(self, name: str, records: list[dict]) -> None:
        """One record per held-out pair: pair_index, prompt (its cluster label), logratio_margin."""
        write_jsonl(self.heldout_file(name), records)

    def read_heldout(self, name: str) -> list[dict] | None:
        path = self.heldout_file(name)
        return read_jsonl(path, "heldout") if path.is_file() else None

    # keyed caches (best-of-N, judge verdicts) ------------------------------------------------------------------
    def cache_file(self, kind: str, name: str) -> Path:
        return self.out / ("models" if kind == "best-of-n" else kind) / f"{safe_name(name)}.json"

    def read_cache(self, kind: str, name: str, key: str, overwrite: bool = False) -> dict | None:
        """A cached result written with `cache_key` equal to `key`, or None (missing, stale, or --overwrite)."""
        path = self.cache_file(kind, name)
        if overwrite or not path.is_file():
            return None
        cached = read_json(path, "output_dir")
        return cached if cached.get("cache_key") == key else None

    def write_cache(self, kind: str, name: str, key: str, payload: dict) -> None:
        atomic_write_json(self.cache_file(kind, name), {"cache_key": key, **payload})

    def write_records(self, kind: str, name: str, records: list[dict]) -> None:
        """Raw records beside a cache (the judge's prompts and verdicts)."""
        write_jsonl(self.out / kind / f"{safe_name(name)}.jsonl", records)
