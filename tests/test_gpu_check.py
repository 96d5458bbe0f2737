"""bench/gpu_check.sh, the one command a GPU machine runs, rehearsed on the CPU at tiny shapes (its dry run), so that
it cannot rot between loans of a GPU: every part runs or says why not, a failing part does not stop the others, and
what it writes fits what comes back from such a machine (at most 8 files of at most 16 MiB)."""

import json
import os
import subprocess
import sys

from tests.conftest import REPO

PARTS = ["install", "environment", "hub-cache", "bench-dpo-64", "bench-dpo-8", "bench-inference", "bench-sft",
         "stage-sft", "stage-pairs", "stage-dpo", "stage-eval", "stage-reward-model", "stage-rl", "stage-preferred-ft"]


def test_the_dry_run_runs_every_part_and_reports_each_in_one_summary(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    # a wheel pip cannot install: the first part fails, and every other part must still run
    (wheels / "broken-0.0.1-py3-none-any.whl").write_bytes(b"not a zip file")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(["bash", "bench/gpu_check.sh", str(out), "--dry-run", "--wheels", str(wheels)], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    files = sorted(path for path in out.rglob("*") if path.is_file())
    assert {path.name for path in files} == {"summary.md", "gpu_check.log", "bench.json", "parts.json",
                                             "gpu_memory.csv"}
    assert len(files) <= 8 and all(path.stat().st_size < 16 * 2**20 for path in files)

    parts = {part["name"]: part for part in json.loads((out / "parts.json").read_text())}
    assert list(parts) == PARTS
    assert parts["install"]["status"].startswith("failed")
    for name in ("environment", "bench-dpo-64", "bench-dpo-8", "bench-inference", "bench-sft"):
        assert parts[name]["status"] == "ok", (name, parts[name]["note"])
    summary = (out / "summary.md").read_text()
    assert "# GPU check (dry run)" in summary
    for name in PARTS:
        assert f"| {name} | {parts[name]['status']} |" in summary
    if (REPO / "tools" / "build_hub_cache.py").is_file():
        for name in PARTS[7:]:
            assert parts[name]["status"] == "ok", (name, parts[name]["note"])
    else:
        assert "tools/build_hub_cache.py (the stand-in Hub cache builder) is not in this checkout" in summary
        assert parts["stage-sft"]["note"] == "skipped: needs hub-cache (skipped)"

    # the benchmark's table: plain TRL beside our profile at both batches, sampling with both caches, the estimate
    for row in ("| dpo plain TRL @ 32 |", "| dpo tiny/dpo @ 32 |", "| dpo plain TRL @ 4 |", "| dpo tiny/dpo @ 4 |",
                "| sample (dynamic cache) |", "| sample (static cache) |", "| score |", "| kl |", "| sft tiny/sft |"):
        assert row in summary
    assert "End-to-end estimate for configs/tiny/sft.yaml" in summary
    bench = json.loads((out / "bench.json").read_text())
    assert bench["stages"]["dpo"]["plain TRL @ 32"]["config_class"] == "trl.trainer.dpo_config.DPOConfig"
    assert bench["estimate"]["total_seconds"] > 0
    log = (out / "gpu_check.log").read_text()
    assert all(f"===== {name}: " in log for name in PARTS)


def test_the_output_folder_is_required(tmp_path):
    result = subprocess.run(["bash", "bench/gpu_check.sh"], cwd=REPO, env={**os.environ, "PYTHON": sys.executable},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.strip() == (
        "error: give the output folder: bench/gpu_check.sh OUTDIR [--dry-run]")
