"""cluster: real faiss k-means, same-metric assignment, tiny-cluster merging, sweep, outputs, MLflow."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hllm_creator.data.schema import DataError
from hllm_creator.infer import cluster as cl
from hllm_creator.infer.common import embeddings_frame


def blobs(n=1200, k=4, d=8, seed=0, spread=8.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * spread
    lab = rng.integers(0, k, n)
    return (centers[lab] + rng.normal(size=(n, d))).astype(np.float32), lab


def purity(pred, true):
    tab = pd.crosstab(pred, true)
    return tab.max(axis=1).sum() / len(pred)


def test_l2_recovers_blobs_and_assign_matches_training():
    x, lab = blobs()
    res = cl.cluster(x, cl.ClusterConfig(k=4, standardize=False), progress=False)
    assert res.meta["metric"] == "l2" and res.meta["normalized"] is False
    assert purity(res.cluster_ids, lab) > 0.99
    # assignments are exactly the nearest centroid in squared L2
    d2 = ((x[:, None, :] - res.centroids[None]) ** 2).sum(-1)
    assert (d2.argmin(1) == res.cluster_ids).all()
    np.testing.assert_allclose(d2.min(1), res.distances, rtol=1e-3, atol=1e-3)
    ids, dist = cl.assign(res.centroids, x, res.meta)
    assert (ids == res.cluster_ids).all()
    # sizes ordered largest first, member means are the raw means
    assert list(res.sizes) == sorted(res.sizes, reverse=True)
    np.testing.assert_allclose(res.member_means[0], x[res.cluster_ids == 0].mean(0), atol=1e-4)


def test_standardized_space_is_recorded_and_applied_at_assign(tmp_path):
    """Default: k-means on z-scored features (what the Creative LLM's projector reads); assign()
    applies the same transform from the meta; medoids are real members' embeddings."""
    x, lab = blobs(seed=2)
    x[:, 0] *= 1000.0  # one huge feature (LLM "massive activations") would dominate raw L2
    res = cl.cluster(x, cl.ClusterConfig(k=4), progress=False)
    assert purity(res.cluster_ids, lab) > 0.99
    mean, std = np.asarray(res.meta["standardize"]["mean"]), np.asarray(res.meta["standardize"]["std"])
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-4, atol=1e-2)
    z = (x - mean) / std
    d2 = ((z[:, None, :] - res.centroids[None]) ** 2).sum(-1)
    assert (d2.argmin(1) == res.cluster_ids).all()
    ids, _ = cl.assign(res.centroids, x, res.meta)
    assert (ids == res.cluster_ids).all()
    for c in range(len(res.centroids)):  # the medoid is the member nearest its centroid
        members = np.nonzero(res.cluster_ids == c)[0]
        assert any(np.array_equal(res.medoids[c], x[m]) for m in members)
    cl.write(res, [str(i) for i in range(len(x))], tmp_path / "c")
    np.testing.assert_array_equal(cl.load_slots(tmp_path / "c", "medoid"), res.medoids)
    np.testing.assert_allclose(cl.load_slots(tmp_path / "c", "mean"), res.member_means)
    with pytest.raises(ValueError, match="medoid"):
        cl.load_slots(tmp_path / "c", "centroid")


def test_cosine_normalizes_at_assign_too():
    x, lab = blobs(seed=1)
    scaled = x * np.random.default_rng(0).uniform(0.1, 10, size=(len(x), 1)).astype(np.float32)
    res = cl.cluster(scaled, cl.ClusterConfig(k=4, metric="cosine", standardize=False), progress=False)
    assert res.meta["metric"] == "ip" and res.meta["normalized"] is True
    np.testing.assert_allclose(np.linalg.norm(res.centroids, axis=1), 1.0, atol=1e-4)
    xn = scaled / np.linalg.norm(scaled, axis=1, keepdims=True)
    cos = xn @ res.centroids.T
    assert (cos.argmax(1) == res.cluster_ids).all()
    np.testing.assert_allclose(1 - cos.max(1), res.distances, atol=1e-4)
    # the same embeddings, rescaled again, land in the same clusters (the metric ignores norms)
    ids, _ = cl.assign(res.centroids, scaled * 3.0, res.meta)
    assert (ids == res.cluster_ids).all()


def test_assign_rejects_mismatched_meta_and_dims():
    x, _ = blobs()
    res = cl.fit(x, 3, cl.ClusterConfig(k=3))
    with pytest.raises(DataError, match="unknown metric"):
        cl.assign(res.centroids, x, {"metric": "cosine?", "normalized": False})
    with pytest.raises(DataError, match="normalized"):
        cl.assign(res.centroids, x, {"metric": "ip", "normalized": False})
    with pytest.raises(DataError, match="dim"):
        cl.assign(res.centroids, x[:, :4], res.meta)


def test_tiny_clusters_are_merged_and_recorded():
    x, _ = blobs(n=600, k=3, spread=10.0)
    x[:3] = 400.0  # three far outliers: k-means gives them their own cluster
    res = cl.fit(x, 4, cl.ClusterConfig(k=4, min_cluster_size=10))
    assert res.sizes.min() >= 10
    assert res.meta["k_requested"] == 4 and res.meta["k"] == len(res.centroids) == 3
    assert res.meta["merged_small_clusters"] == [{"dropped_centroid": res.meta["merged_small_clusters"][0][
        "dropped_centroid"], "members": 3}]
    assert set(np.unique(res.cluster_ids)) == {0, 1, 2}  # ids contiguous after the merge


def test_sweep_picks_best_silhouette_and_records_every_k():
    x, _ = blobs(n=1500, k=5, seed=3)
    res = cl.cluster(x, cl.ClusterConfig(k_sweep=[2, 5, 9]), progress=False)
    rows = {r["k_requested"]: r for r in res.sweep}
    assert set(rows) == {2, 5, 9}
    assert rows[2]["inertia"] > rows[5]["inertia"] >= rows[9]["inertia"]
    assert res.meta["k"] == 5
    assert rows[5]["silhouette"] == max(r["silhouette"] for r in res.sweep)
    assert all(sum(r["sizes"]) == len(x) for r in res.sweep)


def test_config_and_input_errors():
    with pytest.raises(ValueError, match="exactly one"):
        cl.ClusterConfig()
    with pytest.raises(ValueError, match="exactly one"):
        cl.ClusterConfig(k=3, k_sweep=[4])
    with pytest.raises(DataError, match="larger than"):
        cl.fit(np.zeros((3, 4), np.float32), 5, cl.ClusterConfig(k=5))


def test_run_writes_outputs_and_logs_plots(tmp_path):
    x, _ = blobs(n=800, k=4)
    ids = [f"u{i:04d}" for i in range(len(x))]
    (tmp_path / "emb").mkdir()
    embeddings_frame(ids, x).to_parquet(tmp_path / "emb" / "user_embeddings.parquet")
    cl.run(tmp_path / "emb", tmp_path / "clusters", cl.ClusterConfig(k_sweep=[3, 4]), progress=False)
    out = tmp_path / "clusters"
    cents = np.load(out / "centroids.npy")
    asg = pd.read_parquet(out / "assignments.parquet")
    meta = json.loads((out / "cluster_meta.json").read_text())
    assert cents.shape == (meta["k"], 8) and cents.dtype == np.float32
    assert list(asg.columns) == ["user_id", "cluster_id", "distance"] and asg["user_id"].tolist() == ids
    assert meta["metric"] == "l2" and meta["normalized"] is False
    # what load() returns re-assigns to the same clusters
    c2, means, asg2, meta2 = cl.load(out)
    ids2, _ = cl.assign(c2, x, meta2)
    assert (ids2 == asg2["cluster_id"].to_numpy()).all()
    runs = mlflow.search_runs(search_all_experiments=True)
    assert len(runs) == 1 and runs["tags.step"].iloc[0] == "cluster"
    run_id = runs["run_id"].iloc[0]
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)}
    assert {"cluster_sizes.png", "user_embeddings_pca.png", "k_sweep.png", "cluster_meta.json"} <= arts
    assert runs["params.k_sweep"].iloc[0] == "[3, 4]"
    hist = mlflow.MlflowClient().get_metric_history(run_id, "sweep_silhouette")
    assert sorted(m.step for m in hist) == [3, 4]


def test_cli_cluster_and_bad_input(tmp_path):
    from hllm_creator.cli import app

    x, _ = blobs(n=300, k=3)
    embeddings_frame([f"u{i}" for i in range(len(x))], x).to_parquet(tmp_path / "e.parquet")
    r = CliRunner().invoke(app, ["cluster", "--embeddings", str(tmp_path / "e.parquet"), "--k", "3",
                                 "--out", str(tmp_path / "c"), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "K=3" in r.output and (tmp_path / "c" / "assignments.parquet").exists()
    # ragged embeddings: error names the file, column and row
    bad = pd.DataFrame({"user_id": ["a", "b"], "embedding": [np.zeros(4, np.float32), np.zeros(3, np.float32)]})
    bad.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"column embedding, row 1"):
        cl.run(tmp_path / "bad.parquet", tmp_path / "c2", cl.ClusterConfig(k=1), progress=False)
    assert not (tmp_path / "c2").exists()
