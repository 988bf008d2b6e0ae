#!/usr/bin/env bash
# The GPU check in one command, for the few minutes a GPU is lent: < 8 min on one GPU, one JSON
# line on stdout (also written to benchmarks/results/gpu_check.json). Without a GPU it says so and
# runs the CPU-side checks only. Extra args go to benchmarks/gpu/gpu_check.py (e.g. --require-gpu).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
# model_code/: a machine where the project is not pip-installed; the repo root: `benchmarks`, `tests`
export PYTHONPATH="$PWD/model_code:$PWD${PYTHONPATH:+:$PYTHONPATH}" OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1
exec timeout 480 "$PY" -m benchmarks.gpu.gpu_check --out benchmarks/results/gpu_check.json "$@"
