"""`make rehearsal`: every stage of the full-scale configs, at full model shape, on this machine's CPU, from the
stand-in Hub cache (tools/build_hub_cache.py) with HF_HUB_OFFLINE=1.

Each stage is the config as shipped with only counts cut down on the command line (steps, prompts, samples, batch
sizes) and the CPU settings a CPU user passes (float32 instead of bf16, no compilation, no 4-bit quantization); each
reads what the one before wrote. Stages run one at a time (never two full-shape processes at once). For each the
table records its wall time, peak resident memory (the child's own `ru_maxrss`, from `os.wait4`), seconds per
optimizer step (from the Trainer's summary), and the disk the pipeline itself estimates before writing (its
`Disk: ... will write about ...` line, `checkpoints.check_free_disk`: an upper bound, with two resume states
while a checkpoint is saved) beside what the stage left on disk; the pipeline estimates no memory. The table
goes into docs/full-scale.md between the rehearsal markers.

    python tools/rehearsal.py --hf_home .cache/hub-standin --workdir .cache/rehearsal
    python tools/rehearsal.py paper-prompts     # one stage: the paper config's 25,000 + 1,000 prompts, no sampling
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "full-scale.md"
START, END = "<!-- rehearsal table: written by make rehearsal -->", "<!-- end of rehearsal table -->"

CPU = ["--bf16", "false", "--use_cpu", "true", "--dataloader_pin_memory", "false", "--disable_tqdm", "true",
       "--report_to", "none", "--live_eval_config", "null"]  # the live evaluation: eval.py's work, rehearsed there
NO_COMPILE = ["--torch_compile", "false"]
NO_4BIT = ["--load_in_4bit", "false", "--use_bnb_nested_quant", "false", "--dtype", "float32"]
SAMPLING = ["--report_to", "none", "--generation_batch_size", "8", "--classifier_batch_size", "8"]

# (stage, script, config, overrides, what differs from the config besides counts)
STAGES = [
    ("sft", "sft.py", "gpt2-large/sft.yaml",
     [*CPU, "--max_steps", "1", "--per_device_train_batch_size", "2", "--global_batch_size", "2",
      "--max_train_samples", "4"], "1 step of 2 reviews (config: 32 per step)"),
    ("pairs", "preference_pairs.py", "gpt2-large/pairs.yaml",
     [*SAMPLING, "--num_prompts", "2", "--heldout_prompts", "2"], "2 + 2 held-out prompts x 4 completions"),
    ("dpo", "dpo.py", "gpt2-large/dpo.yaml",
     [*CPU, *NO_COMPILE, "--max_steps", "1", "--per_device_train_batch_size", "2", "--global_batch_size", "2",
      "--sweep", "beta=0.1", "--per_device_eval_batch_size", "4", "--precompute_ref_batch_size", "8"],
     "beta 0.1 only, 1 step of 2 pairs (config: 64), not compiled"),
    ("dpo (24 GB profile)", "dpo.py", "gpt2-large/dpo_24gb.yaml",
     [*CPU, *NO_COMPILE, "--max_steps", "1", "--per_device_train_batch_size", "1", "--global_batch_size", "2",
      "--sweep", "beta=0.1", "--per_device_eval_batch_size", "4", "--precompute_ref_batch_size", "8",
      "--output_dir", "runs/gpt2-large/dpo-24gb-profile"],
     "as dpo, micro-batch 1 x 2 accumulated; its own output_dir (eval reads dpo/)"),
    ("reward_model", "reward_model.py", "gpt2-large/reward_model.yaml",
     [*CPU, "--max_steps", "1", "--per_device_train_batch_size", "2", "--global_batch_size", "2"],
     "1 step of 2 pairs (config: 64)"),
    ("rl", "rl.py", "gpt2-large/rl.yaml",
     [*CPU, "--max_steps", "1", "--per_device_train_batch_size", "4", "--global_batch_size", "4",
      "--sweep", "method=rloo,reward=classifier,beta=0.05", "method=rloo,reward=reward_model,beta=0.05"],
     "2 of the 6 runs (true and learned reward), 1 step of 1 prompt x 4 completions each"),
    ("eval", "eval.py", "gpt2-large/eval.yaml",
     [*SAMPLING, "--num_prompts", "2", "--samples_per_prompt", "2", "--best_of_n", "1", "4", "--kl_batch_size", "4"],
     "2 prompts x 2 samples, best-of-N up to 4 (config: 500 x 4, N up to 64)"),
    ("paper: prompts at full count", "tools/rehearsal.py", "paper/pairs.yaml", ["paper-prompts"],
     "25,000 train + 1,000 unsupervised prompts built, nothing sampled"),
    ("paper: pairs", "preference_pairs.py", "paper/pairs.yaml",
     [*SAMPLING, "--num_prompts", "2", "--heldout_prompts", "2"], "2 + 2 held-out (unsupervised) prompts"),
    ("paper: dpo (RMSprop)", "dpo.py", "paper/dpo.yaml",
     [*CPU, *NO_COMPILE, "--max_steps", "1", "--per_device_train_batch_size", "2", "--global_batch_size", "2",
      "--sweep", "beta=0.1", "--per_device_eval_batch_size", "4", "--precompute_ref_batch_size", "8"],
     "beta 0.1 only, 1 step of 2 pairs"),
    ("ultrafeedback: sft", "sft.py", "ultrafeedback/sft_lora_24gb.yaml",
     [*CPU, *NO_4BIT, "--max_steps", "1", "--per_device_train_batch_size", "2", "--global_batch_size", "2"],
     "LoRA without 4-bit, float32 (4-bit needs an NVIDIA GPU), 1 step of 2"),
    ("ultrafeedback: dpo", "dpo.py", "ultrafeedback/dpo_lora_24gb.yaml",
     [*CPU, *NO_4BIT, "--max_steps", "1", "--per_device_train_batch_size", "2", "--global_batch_size", "2",
      "--sweep", "beta=0.1", "--max_eval_pairs", "4", "--per_device_eval_batch_size", "2"],
     "as sft; beta 0.1 only, 1 step of 2 pairs"),
    ("ultrafeedback: eval (judge)", "eval.py", "ultrafeedback/eval.yaml",
     [*SAMPLING, "--num_prompts", "2", "--max_new_tokens", "32", "--judge_prompts", "2", "--max_heldout_pairs", "4",
      "--kl_batch_size", "2", "--judge_batch_size", "2"], "2 prompts, 32 new tokens (config: 200, 512)"),
]


def run_stage(script: str, config: str, overrides: list[str], workdir: Path, env: dict, log: Path) -> dict:
    if script == "tools/rehearsal.py":
        command = [sys.executable, str(REPO / script), *overrides, "--config", str(REPO / "configs" / config)]
    else:
        command = [sys.executable, str(REPO / script), "--config", str(REPO / "configs" / config), *overrides]
    command = ["nice", "-n", "10", *command]
    started = time.time()
    with log.open("w") as handle:
        handle.write(" ".join(command) + "\n")
        handle.flush()
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=handle, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text(errors="replace")
    steps = [float(rate) for rate in re.findall(r"'train_steps_per_second': '([0-9.e+-]+)'", text)]
    disk = re.findall(r"Disk: (.+?) will write about ([0-9.]+ [kMGT]?B)", text)
    last = [line for line in text.strip().splitlines() if line.strip()][-1:] or [""]
    return {"rc": process.returncode, "seconds": time.time() - started, "peak_rss_gib": usage.ru_maxrss / 2**20,
            "seconds_per_step": [1 / rate for rate in steps if rate > 0], "disk": disk, "last_line": last[0][:200]}


def disk_used(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file() and not path.is_symlink())


def table(results: list[dict], total_seconds: float, cache: dict, planned: int) -> str:
    lines = [START, "",
             f"`make rehearsal` on this machine ({os.cpu_count()} cores, "
             f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB), stand-in cache of "
             f"{cache.get('bytes', 0) / 1e9:.1f} GB (`tools/build_hub_cache.py`); the stages below took "
             f"{total_seconds / 60:.1f} minutes in all"
             + (f" (stopped, or still running, after {len(results)} of {planned} stages)." if len(results) < planned
                else "."), "",
             "| stage | config | status | wall | peak RSS | s / step | disk estimated by the pipeline | disk written | "
             "differs from the config |", "|---|---|---|---|---|---|---|---|---|"]
    for result in results:
        status = "ok" if result["rc"] == 0 else f"exit {result['rc']}: {result['last_line']}"
        per_step = ", ".join(f"{s:.0f}" for s in result["seconds_per_step"]) or "-"
        disk = "; ".join(f"{what}: {size}" for what, size in result["disk"]) or "-"
        lines.append(f"| {result['stage']} | configs/{result['config']} | {status} | {result['seconds']:.0f} s | "
                     f"{result['peak_rss_gib']:.1f} GiB | {per_step} | {disk} | {result.get('written_gb', 0):.1f} GB | "
                     f"{result['note']} |")
    lines += ["", END]
    return "\n".join(lines)


def write_table(text: str) -> None:
    doc = DOC.read_text()
    if START in doc:
        doc = doc[: doc.index(START)] + text + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    DOC.write_text(doc)


def rehearse(args) -> int:
    home, workdir = Path(args.hf_home).resolve(), Path(args.workdir).resolve()
    for folder in ("runs", "generations", "logs"):  # every stage measured afresh, never skipped as finished
        shutil.rmtree(workdir / folder, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
    for name in ("HF_HUB_CACHE", "HF_DATASETS_CACHE"):
        env.pop(name, None)
    cache = json.loads((home / "standin-manifest.json").read_text())
    results, started = [], time.time()
    stages = [stage for stage in STAGES if not args.stages or stage[0] in args.stages]
    for stage, script, config, overrides, note in stages:
        log = workdir / "logs" / (re.sub(r"[^a-z0-9]+", "-", stage.lower()).strip("-") + ".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"[rehearsal] {stage}: configs/{config} (log: {log})", flush=True)
        before = disk_used(workdir)
        result = run_stage(script, config, overrides, workdir, env, log)
        result["written_gb"] = (disk_used(workdir) - before) / 1e9  # what the stage left on disk
        result.update(stage=stage, config=config, note=note)
        print(f"[rehearsal] {stage}: exit {result['rc']}, {result['seconds']:.0f} s, peak RSS "
              f"{result['peak_rss_gib']:.1f} GiB", flush=True)
        results.append(result)
        # The table is rewritten after every stage: an interrupted rehearsal still shows how far it got.
        total = time.time() - started
        (workdir / "rehearsal.json").write_text(json.dumps({"total_seconds": total, "stages": results}, indent=2))
        write_table(table(results, total, cache, len(stages)))
    print(f"[rehearsal] {total / 60:.1f} minutes; table in {DOC}", flush=True)
    return 0 if all(result["rc"] == 0 for result in results) else 1


def paper_prompts(config: str) -> int:
    """The paper config's prompts at full count (25,000 train prompts, 1,000 held-out from `unsupervised`), built by
    the pipeline's own prompt code, nothing sampled."""
    sys.path.insert(0, str(REPO))
    import preference_pairs
    from dpo_pipeline.cli import parse_config
    from dpo_pipeline.models import load_tokenizer
    from dpo_pipeline.tasks import get_task
    from dpo_pipeline.tasks.sentiment.reviews import load_reviews

    (args,) = parse_config(preference_pairs.dataclass_types(), ["--config", config])
    started = time.time()
    tokenizer = load_tokenizer(args.model_name_or_path, "model_name_or_path")
    reviews = load_reviews(args.dataset_name, args.dataset_split, args.dataset_config, args.text_column,
                           args.label_column)
    heldout = load_reviews(args.dataset_name, args.heldout_split, args.dataset_config, args.text_column,
                           args.label_column)
    prompts, train = get_task(args.task).pair_prompts(args, tokenizer)
    print(f"{train} train prompts from {len(reviews)} '{args.dataset_split}' reviews and {len(prompts) - train} "
          f"held-out from {len(heldout)} '{args.heldout_split}' reviews in {time.time() - started:.0f} s")
    return 0 if train == args.num_prompts and len(prompts) - train == args.heldout_prompts else 1


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "paper-prompts":
        parser = argparse.ArgumentParser()
        parser.add_argument("--config", required=True)
        return paper_prompts(parser.parse_args(sys.argv[2:]).config)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hf_home", default=".cache/hub-standin", help="The stand-in cache (build_hub_cache.py).")
    parser.add_argument("--workdir", default=".cache/rehearsal", help="Where the stages write runs/ and generations/.")
    parser.add_argument("--stages", nargs="*", default=None, help="Only these stages (names as in the table).")
    return rehearse(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
