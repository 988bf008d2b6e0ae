"""tests/pipeline_digest.py: structure exactly, floats within the stated tolerance (never a hash of floats)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pipeline_digest as pd_
import pytest


def _run(root, *, noise=0.0, title="Gorilla Tape 2 Pack", rows=3, big=600, extra_col=False):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(rows, 8))
    d = root / "embed" / "embeddings"
    d.mkdir(parents=True)
    df = pd.DataFrame({"user_id": [f"u{i}" for i in range(rows)], "embedding": list(emb + noise),
                       "score": np.linspace(0.1, 0.9, rows) + noise})
    if extra_col:
        df["new"] = 1
    df.to_parquet(d / "user_embeddings.parquet")
    np.save(d / "centroids.npy", rng.normal(size=(big,)) + noise)
    (d / "meta.json").write_text(json.dumps({"title": title, "k": 2, "loss": 0.5 + noise, "elapsed_s": noise * 1e6,
                                             "path": "/tmp/x"}))
    (d / "plot.png").write_bytes(b"png")
    return root


def test_float_noise_within_tolerance_passes_and_is_measured(tmp_path):
    a = pd_.digest(_run(tmp_path / "a"))
    b = pd_.digest(_run(tmp_path / "b", noise=1e-5))
    dev = pd_.Deviation()
    assert pd_.compare(a, b, dev) == []
    assert 0 < dev.abs <= 1.1e-5 and dev.ratio < 0.01
    assert "embed/embeddings/plot.png" not in a  # plots are left out
    assert "summary" in a["embed/embeddings/centroids.npy"]  # long arrays summarised, still with tolerance


@pytest.mark.parametrize("change, expect", [
    (dict(noise=0.05), "tolerance"),                    # a float beyond the tolerance
    (dict(title="Gorilla Tape, Black"), "Gorilla"),     # a changed string (a title)
    (dict(rows=4), "rows"),                             # structure: row count
    (dict(extra_col=True), "columns"),                  # structure: a new column
])
def test_real_changes_fail(tmp_path, change, expect):
    a = pd_.digest(_run(tmp_path / "a"))
    b = pd_.digest(_run(tmp_path / "b", **change))
    out = pd_.compare(a, b)
    assert out and any(expect in line for line in out), out


def test_missing_and_new_files_and_an_old_format(tmp_path):
    a = pd_.digest(_run(tmp_path / "a"))
    b = dict(a)
    b.pop("embed/embeddings/meta.json")
    b["x/new.json"] = {"k": 1}
    out = pd_.compare(a, b)
    assert "missing: embed/embeddings/meta.json" in out and "new: x/new.json" in out
    assert "re-record" in pd_.compare({"__format__": 1, **a}, a)[0]
