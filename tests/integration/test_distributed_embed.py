"""Embedding at scale: 3 shards as 3 concurrent processes (like the pipeline's ParallelFor pods:
each its own cold item cache, no shared state) + ``embed-merge`` == one ``--shard 0/1`` run.

The real CLI in subprocesses on a tiny model and 60 bundled users; about 30 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def _env(work: Path) -> dict:
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "model_code"), str(REPO), env.get("PYTHONPATH", "")])
    # each "pod" its own work dir and tracking store (concurrent first use of one sqlite file races)
    env.update(HLLM_WORKDIR=str(work), MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}",
               OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    return env


def _embed(data, model, out: Path, shard: str, work: Path) -> subprocess.Popen:
    cmd = [str(BIN / "hllm-creator"), "embed", "--model", str(model), "--data", str(data), "--out", str(out),
           "--shard", shard, "--item-cache", str(work / "item_cache.parquet"), "--no-model-item-cache",
           "--batch-size", "7", "--quiet"]
    return subprocess.Popen(cmd, env=_env(work), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _read(d: Path) -> tuple[list[str], np.ndarray]:
    df = pd.read_parquet(d / "user_embeddings.parquet").sort_values("user_id")
    return df["user_id"].tolist(), np.stack(df["embedding"].to_numpy())


def test_three_concurrent_shards_merged_equal_one_shard(infer_workflow, tmp_path):
    data, model = infer_workflow
    procs = [_embed(data, model, tmp_path / f"s{i}", f"{i}/3", tmp_path / f"w{i}") for i in range(3)]
    procs.append(_embed(data, model, tmp_path / "one", "0/1", tmp_path / "w_one"))
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out[-3000:]
    r = subprocess.run([str(BIN / "hllm-creator"), "embed-merge", *[str(tmp_path / f"s{i}") for i in (1, 2, 0)],
                        "--out", str(tmp_path / "merged")], env=_env(tmp_path / "wm"), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    sizes = [len(_read(tmp_path / f"s{i}")[0]) for i in range(3)]
    assert sum(sizes) == 60 and min(sizes) > 5, sizes  # a real 3-way split, nobody lost
    u1, e1 = _read(tmp_path / "one")
    um, em = _read(tmp_path / "merged")
    assert um == u1 and len(u1) == 60
    # different shard membership = different batches (padding, item encode order): equal to float noise
    np.testing.assert_allclose(em, e1, atol=1e-5, rtol=1e-5)
    assert np.abs(e1).max() > 1e-2  # not vacuous
    # each shard encoded items itself (its own cold cache, as separate pods would)
    assert all((tmp_path / f"w{i}" / "item_cache.parquet").exists() for i in range(3))
