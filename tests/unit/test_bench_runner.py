"""`make bench` (``python -m benchmarks``): every benchmark module is listed (run at a quick scale or
skipped with what it needs), a run prints the table and leaves the recorded figures alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from benchmarks.__main__ import BENCHMARKS

REPO = Path(__file__).resolve().parents[2]


def test_every_benchmark_module_is_listed_once():
    modules = sorted(f"{p.parent.name}.{p.stem}" for group in ("speed", "quality", "gpu")
                     for p in (REPO / "benchmarks" / group).glob("*.py") if p.stem != "__init__")
    listed = [b.module for b in BENCHMARKS]
    assert sorted(listed) == modules
    for b in BENCHMARKS:  # what runs says what it measured; what does not run says why
        assert (b.headline is not None) != bool(b.tool or (b.needs and not b.runs_if)), b.module


def test_a_run_prints_the_table_and_writes_only_to_its_results_folder(tmp_path):
    recorded = REPO / "benchmarks" / "results" / "embed_scaling.json"
    before = recorded.read_bytes()
    p = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "embed_scaling,serving_start,feed_holdout",
                        "--results", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "HLLM_BENCH_RESULTS": ""})
    assert p.returncode == 0, p.stdout + p.stderr
    rows = {line.split("|")[1].strip(): line.split("|")[2:4] for line in p.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| benchmark")}
    result, secs = rows["speed.embed_scaling"]
    assert "users per 30-min shard" in result and float(secs) > 0
    assert rows["speed.serving_start"][0].strip().startswith("skipped: needs a published bundle")
    assert rows["quality.feed_holdout"][0].strip().startswith("not a benchmark:")
    assert (tmp_path / "embed_scaling.json").exists() and (tmp_path / "bench.json").exists()
    assert recorded.read_bytes() == before


def test_an_unknown_name_is_refused_with_the_known_ones():
    p = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "kmeanz"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2
    assert "no benchmark named kmeanz" in p.stderr and "kmeans" in p.stderr
