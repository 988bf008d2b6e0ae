"""benchmarks/gpu/gpu_check.py on this CPU-only machine: its clear no-GPU exit, and its parts at tiny
scale on CPU (the same functions the GPU run calls; a few seconds)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu" / "gpu_check.py"


def _mod():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


def test_without_a_gpu_require_gpu_exits_3_with_one_json_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "model_code"), str(REPO)])}
    p = subprocess.run([sys.executable, str(SCRIPT), "--require-gpu"], capture_output=True, text=True, timeout=120,
                       env=env)
    assert p.returncode == 3
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["gpu"] is False
    assert "no CUDA GPU" in p.stderr


def test_parts_run_at_tiny_scale_on_cpu():
    m = _mod()
    parts: dict = {}
    m._timed("generate", m.part_generate, 30, parts, device="cpu", backbone="tiny-llama", batch=4, new_tokens=3)
    m._timed("kmeans", m.part_kmeans, 30, parts, device="cpu", n=5000, d=32, k=8, niter=3)
    m._timed("embed", m.part_embed, 30, parts, device="cpu", users=16)
    m._timed("train", m.part_train, 60, parts, device="cpu", backbone="tiny-llama", seq=32, batch=2, steps=2)
    assert parts["generate"]["batched_tokens_per_s"] > 0 and parts["generate"]["new_tokens"] == 3
    assert parts["kmeans"]["cpu"]["clusters_used"] == 8 and parts["kmeans"]["gpu"] == {"skipped": "no GPU"}
    assert parts["embed"]["finite"] and parts["embed"]["users"] == 16
    assert parts["train"]["steps"] == 2 and parts["train"]["tokens_per_s"] > 0
    # a failing part is recorded, not raised
    m._timed("broken", lambda budget_s: 1 / 0, 10, parts)
    assert parts["broken"]["error"].startswith("ZeroDivisionError")
    assert m.peak_flops("NVIDIA H200") == 989e12 and m.peak_flops("unknown") is None
