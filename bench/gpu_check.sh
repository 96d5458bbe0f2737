#!/usr/bin/env bash
# Every GPU figure of the project in one command on a bare GPU machine (at most 9 minutes), or its dry run on a CPU:
#   bench/gpu_check.sh OUTDIR                 # benchmark beside plain TRL, sampling/scoring/KL, each gpt2-large stage
#   bench/gpu_check.sh OUTDIR --dry-run       # the same parts at tiny shapes on the CPU (or GPU_CHECK_DRY_RUN=1)
# Wheels the machine lacks (trl, datasets, ...) are installed first from .whl/ (or --wheels DIR), into a private
# folder. OUTDIR gets summary.md, gpu_check.log, bench.json, parts.json and gpu_memory.csv. See docs/benchmarks.md.
# PYTHON names the interpreter (default python3). The parts are listed in bench/gpu_check.py.
set -u
cd "$(dirname "$0")/.." || exit 1
exec "${PYTHON:-python3}" -m bench.gpu_check "$@"
