"""Every GPU figure of the project in one command on a bare GPU machine: `bench/gpu_check.sh OUTDIR` runs this.

    bench/gpu_check.sh OUTDIR              # on the GPU machine, from a checkout (at most 9 minutes)
    bench/gpu_check.sh OUTDIR --dry-run    # the same parts on the CPU at tiny shapes (GPU_CHECK_DRY_RUN=1 too)

The work is a list of parts, each a subprocess with its own time limit; a part that fails, or runs out of time, is
reported and the next one runs (a part whose input another part should have made is skipped, saying which). In
order:

    install          the wheels the machine lacks (trl, datasets, ...), from a folder (--wheels, default .whl/),
                     into a private folder put on PYTHONPATH; nothing already installed is touched
    environment      versions of torch, CUDA, transformers, trl, datasets, and the device
    hub-cache        the stand-in Hub cache (tools/build_hub_cache.py) that the stage runs load from; it builds on
                     the CPU beside the benchmark parts
    bench-dpo-64     plain TRL (trl.DPOConfig defaults, trl.DPOTrainer) beside each of our DPO profiles at 64
    bench-dpo-8      pairs per step, then at 8: pairs/s, model TFLOP/s, MFU, peak memory
    bench-inference  sampling with the dynamic and the static KV cache, classifier scoring, the exact-KL pass
    bench-sft        the SFT profiles; with the others' figures carried in, the end-to-end estimate
    stage-*          each stage of configs/gpt2-large once, a few steps each, from the stand-in cache, with
                     HF_HUB_OFFLINE=1: the configs as shipped (bf16, static cache, torch_compile, the precomputed
                     reference, the 24 GB profiles), counts cut on the command line

OUTDIR receives at most 5 files, each capped well under 16 MiB: summary.md (the table of parts and the benchmark's
figures), gpu_check.log (every part's output), bench.json (the benchmark's figures), parts.json (each part's
command, status, time and peak memory) and gpu_memory.csv (the device's memory in use, sampled every half second).

This runner uses the standard library only: it must run, and report, before the wheels are installed and
whatever they turn out to be. The parts themselves are the pipeline's own commands.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HUB_CACHE_BUILDER = REPO / "tools" / "build_hub_cache.py"
PART_LOG_LIMIT = 1 << 20  # bytes of each part's output kept in gpu_check.log (its head and its tail)
MAX_OUTPUT_FILES = 5
# Seconds kept back from the last parts for writing the summary.
RESERVE_S = 10
# A part given less time than this is skipped: it would only be killed during its start-up.
MINIMUM_PART_S = 20


@dataclass
class Part:
    name: str
    command: list[str]
    limit_s: int
    what: str
    cwd: Path = REPO
    needs: list[str] = field(default_factory=list)  # parts whose output this one reads
    background: bool = False  # runs beside the next parts (CPU work that times nothing)
    skip_reason: str | None = None  # set when the part cannot run in this checkout
    # filled in as it runs
    status: str = "not run"
    seconds: float | None = None
    note: str = ""
    peak_gpu_mib: int | None = None
    peak_rss_mib: int | None = None
    output: str = field(default="", repr=False)


@dataclass
class Mode:
    """What differs between the run on a GPU and the dry run on a CPU: shapes, counts and time limits."""

    name: str
    bench_config: str
    large_batch: int
    small_batch: int
    total_s: int
    limits: dict  # part -> seconds
    bench_overrides: list[str]
    stage_overrides: list[str]  # added to every stage's command line
    hub_cache_flags: list[str]


FULL = Mode(
    name="full", bench_config="bench/configs/gpu-check.yaml", large_batch=64, small_batch=8, total_s=530,
    limits={"install": 60, "environment": 45, "hub-cache": 200, "bench-dpo-64": 160, "bench-dpo-8": 130,
            "bench-inference": 90, "bench-sft": 70, "stage-sft": 60, "stage-pairs": 50, "stage-dpo": 90,
            "stage-eval": 70, "stage-reward-model": 50, "stage-rl": 60, "stage-preferred-ft": 50},
    bench_overrides=[], stage_overrides=[], hub_cache_flags=[])
DRY_RUN = Mode(
    name="dry run", bench_config="bench/configs/tiny.yaml", large_batch=32, small_batch=4, total_s=300,
    limits={"install": 30, "environment": 30, "hub-cache": 60, "bench-dpo-64": 45, "bench-dpo-8": 45,
            "bench-inference": 45, "bench-sft": 45, "stage-sft": 45, "stage-pairs": 45, "stage-dpo": 45,
            "stage-eval": 45, "stage-reward-model": 45, "stage-rl": 90, "stage-preferred-ft": 45},
    bench_overrides=["--warmup_steps", "1", "--steps", "1", "--num_completions", "16", "--num_texts", "32",
                     "--num_kl_sequences", "16", "--dpo_configs", "configs/tiny/dpo.yaml"],
    # a CPU: float32 and no compilation (the GPU run keeps the configs' bf16 and torch_compile)
    stage_overrides=["--bf16", "false", "--use_cpu", "true", "--torch_compile", "false"],
    hub_cache_flags=["--tiny"])

# The live evaluation's final step samples all of eval.yaml's 500 prompts: outside this check's budget.
NO_LIVE_EVAL = ["--live_eval_config", "null"]
# Each stage of configs/gpt2-large, in the order each reads what the one before wrote: (part, script, config,
# overrides cutting the counts, whether it trains (takes the training flags of the dry run)).
STAGES = [
    ("stage-sft", "sft.py", "sft_24gb.yaml", ["--max_steps", "3", "--max_train_samples", "256", "--save_steps", "1000",
                                              "--logging_steps", "1"], True),
    ("stage-pairs", "preference_pairs.py", "pairs.yaml", ["--num_prompts", "64", "--heldout_prompts", "16"], False),
    ("stage-dpo", "dpo.py", "dpo_24gb.yaml", ["--sweep", "beta=0.1", "--max_steps", "4", "--max_train_pairs", "256",
                                              "--eval_steps", "2", "--max_eval_pairs", "64", "--save_steps", "1000",
                                              "--logging_steps", "1", *NO_LIVE_EVAL], True),
    ("stage-eval", "eval.py", "eval.yaml", ["--num_prompts", "32", "--samples_per_prompt", "2", "--best_of_n", "1", "4",
                                            "--best_of_n_prompts", "16", "--max_heldout_pairs", "64",
                                            "--report_prompts", "2"], False),
    ("stage-reward-model", "reward_model.py", "reward_model.yaml", ["--max_steps", "3", "--max_train_pairs", "256",
                                                                    "--save_steps", "1000", "--logging_steps", "1"],
     True),
    ("stage-rl", "rl.py", "rl.yaml", ["--sweep", "method=rloo,reward=classifier,beta=0.05",
                                      "method=rloo,reward=reward_model,beta=0.05", "--max_steps", "2",
                                      "--max_prompts", "64", "--save_steps", "1000", "--logging_steps", "1",
                                      *NO_LIVE_EVAL], True),
    ("stage-preferred-ft", "sft.py", "preferred_ft_24gb.yaml", ["--max_steps", "3", "--save_steps", "1000",
                                                                 "--logging_steps", "1", *NO_LIVE_EVAL], True),
]
STAGE_NEEDS = {"stage-sft": ["hub-cache"], "stage-pairs": ["stage-sft"], "stage-dpo": ["stage-pairs"],
               "stage-eval": ["stage-dpo"], "stage-reward-model": ["stage-pairs"],
               "stage-rl": ["stage-reward-model"], "stage-preferred-ft": ["stage-pairs"]}


def probe_environment() -> None:
    """The `environment` part: one line of JSON with what the parts run on. Versions are read from the installed
    packages' metadata (importing them all would cost the dry run seconds); torch is imported, for the device."""
    from importlib import metadata

    found = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers", "trl", "datasets", "accelerate", "peft", "tokenizers", "huggingface-hub"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "missing"
    import torch

    found["cuda"] = torch.version.cuda
    found["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    if torch.cuda.is_available():
        found["device_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        found["bf16"] = torch.cuda.is_bf16_supported()
    found["cpus"] = os.cpu_count()
    print("ENVIRONMENT " + json.dumps(found))


class MemorySampler:
    """The device's memory in use (nvidia-smi, every half second) and the running part's resident memory, the peak
    of each charged to the part running then."""

    def __init__(self, csv_path: Path):
        self.csv = csv_path.open("w")
        self.csv.write("seconds,part,gpu_memory_used_mib\n")
        self.part: Part | None = None
        self.pid: int | None = None
        self.start = time.monotonic()
        self.smi = None
        if shutil.which("nvidia-smi"):
            self.smi = subprocess.Popen(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                                         "-lms", "500"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            threading.Thread(target=self._read_gpu, daemon=True).start()
        threading.Thread(target=self._read_rss, daemon=True).start()

    def follow(self, part: Part | None, pid: int | None) -> None:
        self.part, self.pid = part, pid

    def _read_gpu(self) -> None:
        for line in self.smi.stdout:
            try:
                used = int(line.split(",")[0].strip())  # the first GPU's
            except ValueError:
                continue
            part = self.part
            if part is not None:
                part.peak_gpu_mib = max(part.peak_gpu_mib or 0, used)
            if not self.csv.closed:
                self.csv.write(f"{time.monotonic() - self.start:.1f},{part.name if part else ''},{used}\n")

    def _read_rss(self) -> None:
        while True:
            part, pid = self.part, self.pid
            if part is not None and pid is not None:
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                    high_water = next(int(line.split()[1]) for line in status.splitlines()
                                      if line.startswith("VmHWM:"))
                    part.peak_rss_mib = max(part.peak_rss_mib or 0, high_water // 1024)
                except (OSError, StopIteration, ValueError):
                    pass
            time.sleep(0.5)

    def close(self) -> None:
        if self.smi is not None:
            self.smi.terminate()
            self.smi.wait(timeout=10)
        self.csv.close()


def capped(text: str) -> str:
    """`text` within PART_LOG_LIMIT: its first quarter and its last three quarters, the cut said where it is."""
    data = text.encode()
    if len(data) <= PART_LOG_LIMIT:
        return text
    head, tail = data[: PART_LOG_LIMIT // 4], data[-3 * PART_LOG_LIMIT // 4:]
    return (head.decode(errors="replace") + f"\n[... {len(data) - len(head) - len(tail)} bytes left out ...]\n"
            + tail.decode(errors="replace"))


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def stop_group(process: subprocess.Popen) -> None:
    """End a part that ran out of time: its own process group (it was started in a new session), politely first."""
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


class Runner:
    def __init__(self, mode: Mode, out: Path, work: Path, env: dict, deadline: float, log):
        self.mode, self.out, self.work, self.env, self.deadline, self.log = mode, out, work, env, deadline, log
        self.parts: dict[str, Part] = {}
        self.sampler = MemorySampler(out / "gpu_memory.csv")
        self.background: dict[str, tuple[Part, subprocess.Popen, float, Path]] = {}

    def time_left(self) -> float:
        return self.deadline - time.monotonic() - RESERVE_S

    def blocked_by(self, part: Part) -> str | None:
        for name in part.needs:
            if name in self.background:
                self.finish_background(name)
            needed = self.parts.get(name)
            if needed is None or needed.status != "ok":
                return f"skipped: needs {name} ({needed.status if needed else 'not in this run'})"
        return None

    def start(self, part: Part) -> subprocess.Popen:
        part_log = self.work / f"{part.name}.out"
        handle = part_log.open("w")
        process = subprocess.Popen(part.command, cwd=part.cwd, env=self.env, stdout=handle, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True,
                                   preexec_fn=(lambda: os.nice(10)) if part.background else None)
        handle.close()
        return process

    def run(self, part: Part) -> None:
        self.parts[part.name] = part
        reason = part.skip_reason or self.blocked_by(part)
        limit = min(part.limit_s, self.time_left())
        if reason is None and limit < MINIMUM_PART_S:
            reason = f"skipped: {max(0, int(self.time_left()))} s left of the {self.mode.total_s} s budget"
        if reason is not None:
            part.status, part.note = "skipped", reason
            self.write_log(part, f"{reason}\n")
            print(f"[gpu-check] {part.name}: {reason}", flush=True)
            return
        print(f"[gpu-check] {part.name}: {part.what} (limit {int(limit)} s)", flush=True)
        begin = time.monotonic()
        process = self.start(part)
        if part.background:
            self.background[part.name] = (part, process, begin, self.work / f"{part.name}.out")
            part.status = "running"
            return
        self.sampler.follow(part, process.pid)
        try:
            process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            stop_group(process)
            part.status = "timed out"
        finally:
            self.sampler.follow(None, None)
        self.record(part, process, begin, limit)

    def finish_background(self, name: str) -> None:
        part, process, begin, _ = self.background.pop(name)
        limit = part.limit_s - (time.monotonic() - begin)
        try:
            process.wait(timeout=max(1.0, min(limit, self.time_left())))
        except subprocess.TimeoutExpired:
            stop_group(process)
            part.status = "timed out"
        self.record(part, process, begin, part.limit_s)

    def record(self, part: Part, process: subprocess.Popen, begin: float, limit: float) -> None:
        part.seconds = round(time.monotonic() - begin, 1)
        part.output = (self.work / f"{part.name}.out").read_text(errors="replace")
        if part.status == "timed out":
            part.note = f"stopped after its limit of {int(limit)} s; last line: {last_line(part.output)}"
        elif process.returncode == 0:
            # a stage's last line says how far it got; a benchmark part's is a table row, and its figures are below
            line = last_line(part.output)
            part.status, part.note = "ok", "" if line.startswith(("|", "ENVIRONMENT", "End-to-end")) else line
        else:
            part.status, part.note = f"failed (exit {process.returncode})", last_line(part.output)
        self.write_log(part, part.output)
        print(f"[gpu-check] {part.name}: {part.status} in {part.seconds} s", flush=True)

    def write_log(self, part: Part, text: str) -> None:
        self.log.write(f"\n===== {part.name}: {' '.join(part.command)}\n")
        self.log.write(capped(text))
        self.log.write(f"\n===== {part.name}: {part.status} ({part.seconds} s)\n")
        self.log.flush()

    def close(self) -> None:
        for name in list(self.background):
            self.finish_background(name)
        self.sampler.close()


def plan(mode: Mode, args, work: Path, python: str) -> list[Part]:
    """The parts, in the order they run."""
    wheels = Path(args.wheels)
    site = work / "site-packages"
    wheel_files = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    install = Part("install", [python, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
                               "--no-cache-dir", "--disable-pip-version-check", "--upgrade", "--target", str(site),
                               *map(str, wheel_files)], mode.limits["install"],
                   f"{len(wheel_files)} wheels from {wheels} into a private folder")
    if not wheel_files:
        install.skip_reason = f"skipped: no wheels in {wheels} (the installed packages are used as they are)"
    parts = [install, Part("environment", [python, "-m", "bench.gpu_check", "--probe-environment"],
                           mode.limits["environment"], "versions and the device")]
    hub_home = work / "hf-home"
    hub_cache = Part("hub-cache", [python, "-m", "tools.build_hub_cache", "--output_dir", str(hub_home),
                                   *mode.hub_cache_flags], mode.limits["hub-cache"],
                     f"the stand-in Hub cache ({'tiny' if mode.hub_cache_flags else 'full'} shapes)", background=True)
    if not HUB_CACHE_BUILDER.is_file():
        hub_cache.skip_reason = ("skipped: tools/build_hub_cache.py (the stand-in Hub cache builder) is not in this "
                                 "checkout; the stage runs need it")
    parts.append(hub_cache)
    bench = [python, "-m", "bench.run", "--config", mode.bench_config, *mode.bench_overrides]
    results = {name: work / f"{name}.json" for name in ("bench-dpo-64", "bench-dpo-8", "bench-inference", "bench-sft")}
    parts += [
        Part("bench-dpo-64", [*bench, "--stages", "dpo", "--dpo_batch_sizes", str(mode.large_batch),
                              "--output_file", str(results["bench-dpo-64"])], mode.limits["bench-dpo-64"],
             f"DPO, plain TRL beside our profiles, {mode.large_batch} pairs per step"),
        Part("bench-dpo-8", [*bench, "--stages", "dpo", "--dpo_batch_sizes", str(mode.small_batch),
                             "--output_file", str(results["bench-dpo-8"])], mode.limits["bench-dpo-8"],
             f"DPO, plain TRL beside our profiles, {mode.small_batch} pairs per step"),
        Part("bench-inference", [*bench, "--stages", "sample", "score", "kl",
                                 "--output_file", str(results["bench-inference"])], mode.limits["bench-inference"],
             "sampling (dynamic and static KV cache), classifier scoring, the exact-KL pass"),
        Part("bench-sft", [*bench, "--stages", "sft", "--output_file", str(results["bench-sft"]), "--previous_results",
                           *(str(results[name]) for name in ("bench-dpo-64", "bench-dpo-8", "bench-inference"))],
             mode.limits["bench-sft"], "SFT profiles, and the end-to-end estimate from every stage's figures"),
    ]
    rehearsal = work / "rehearsal"
    rehearsal.mkdir(exist_ok=True)
    for name, script, config, counts, trains in STAGES:
        command = [python, str(REPO / script), "--config", str(REPO / "configs" / "gpt2-large" / config), *counts,
                   "--report_to", "none", *(mode.stage_overrides if trains else [])]
        parts.append(Part(name, command, mode.limits[name], f"{script} --config configs/gpt2-large/{config}",
                          cwd=rehearsal, needs=STAGE_NEEDS[name]))
    return parts


def part_environment(work: Path, mode: Mode) -> dict:
    env = dict(os.environ)
    site = work / "site-packages"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), str(REPO), os.environ.get("PYTHONPATH")]))
    env.update(HF_HOME=str(work / "hf-home"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="disabled",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    if mode is DRY_RUN:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the dry run is the CPU's, even on a GPU machine
    return env


def benchmark_results(runner: Runner) -> dict | None:
    """The benchmark's figures: bench-sft's file (which carries the others' and the estimate), else the files of
    the benchmark parts that wrote one, merged."""
    from bench.report import merge_stages

    final = runner.work / "bench-sft.json"
    if final.is_file():
        return json.loads(final.read_text())
    merged = None
    for name in ("bench-dpo-64", "bench-dpo-8", "bench-inference"):
        path = runner.work / f"{name}.json"
        if path.is_file():
            results = json.loads(path.read_text())
            if merged is None:
                merged = {**results, "stages": {}}
            merge_stages(merged["stages"], results["stages"])
    return merged


def summary(runner: Runner, mode: Mode, parts: list[Part], bench: dict | None, wall_s: float) -> str:
    from bench.report import summary_table

    probe = runner.parts.get("environment")
    environment = next((json.loads(line.removeprefix("ENVIRONMENT ")) for line in
                        (probe.output if probe else "").splitlines() if line.startswith("ENVIRONMENT ")), {})
    ok = sum(part.status == "ok" for part in parts)
    lines = [f"# GPU check ({mode.name})", "",
             f"`bench/gpu_check.sh`{' --dry-run' if mode is DRY_RUN else ''}: {ok} of {len(parts)} parts ok in "
             f"{wall_s:.0f} s (budget {mode.total_s} s).", ""]
    if environment:
        lines += ["Machine: " + ", ".join(f"{key} {value}" for key, value in environment.items()), ""]
    lines += ["| part | status | seconds | limit | peak GPU memory (MiB, nvidia-smi) | peak RSS (MiB) | note |",
              "|---|---|---|---|---|---|---|"]
    for part in parts:
        note = part.note.replace("|", "\\|")
        lines.append(f"| {part.name} | {part.status} | {part.seconds if part.seconds is not None else ''} | "
                     f"{part.limit_s} | {part.peak_gpu_mib or ''} | {part.peak_rss_mib or ''} | {note} |")
    lines += [""]
    if bench:
        lines += ["## Benchmark", "", summary_table(bench), ""]
    else:
        lines += ["## Benchmark", "", "No benchmark part wrote figures (see gpu_check.log).", ""]
    lines += ["Raw output of every part: gpu_check.log; figures: bench.json; parts: parts.json; device memory over "
              "time: gpu_memory.csv.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", nargs="?", help="folder the summary and the logs go to (created if missing)")
    parser.add_argument("--dry-run", action="store_true",
                        help="the same parts on the CPU at tiny shapes (also GPU_CHECK_DRY_RUN=1)")
    parser.add_argument("--wheels", default=str(REPO / ".whl"), help="folder of the wheels to install first")
    parser.add_argument("--parts", default=None,
                        help="comma-separated names of the parts to run (default: all); the others are skipped")
    parser.add_argument("--probe-environment", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe_environment:
        probe_environment()
        return 0
    if not args.output_dir:
        print("error: give the output folder: bench/gpu_check.sh OUTDIR [--dry-run]", file=sys.stderr)
        return 2
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        print(f"error: {out} is a file, not a folder", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    mode = DRY_RUN if args.dry_run or os.environ.get("GPU_CHECK_DRY_RUN", "") not in ("", "0") else FULL
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch, (out / "gpu_check.log").open("w") as log:
        work = Path(scratch)
        python = sys.executable
        parts = plan(mode, args, work, python)
        if args.parts:
            wanted = set(args.parts.split(","))
            unknown = wanted - {part.name for part in parts}
            if unknown:
                print(f"error: --parts: unknown {', '.join(sorted(unknown))}; the parts are "
                      f"{', '.join(part.name for part in parts)}", file=sys.stderr)
                return 2
            for part in parts:
                if part.name not in wanted and part.skip_reason is None:
                    part.skip_reason = "skipped: not in --parts"
        log.write(f"gpu-check ({mode.name}) from {REPO.name}, parts: {', '.join(part.name for part in parts)}\n")
        runner = Runner(mode, out, work, part_environment(work, mode), began + mode.total_s, log)
        try:
            for part in parts:
                runner.run(part)
        finally:
            runner.close()
        bench = benchmark_results(runner)
        if bench is not None:
            (out / "bench.json").write_text(json.dumps(bench, indent=2, default=str) + "\n")
        (out / "parts.json").write_text(json.dumps(
            [{key: value for key, value in asdict(part).items() if key != "output"} for part in parts],
            indent=2, default=str) + "\n")
        text = summary(runner, mode, parts, bench, time.monotonic() - began)
        (out / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
