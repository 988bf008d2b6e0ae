"""The README's main command, quick part: a real SmolLM2 reply through the openai client."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_demo_llm_only_prints_a_real_completion(tmp_path):
    env = {**os.environ, "HLLM_WORKDIR": str(tmp_path / ".hllm"), "COLUMNS": "200"}
    r = subprocess.run([str(Path(sys.executable).parent / "hllm-creator"), "demo", "--llm-only"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = r.stdout
    assert "8,317 users, 4,344 items, 58,492 interactions" in out
    line = next(ln for ln in out.splitlines() if "SmolLM2 says:" in ln)
    answer = line.split("SmolLM2 says:", 1)[1].strip()
    assert len(answer.split()) >= 2, out  # a real, non-empty completion
    assert "server stopped" in out
    assert (tmp_path / ".hllm" / "data" / "amazon_scientific" / "manifest.json").exists()
