"""cluster component: python_func call and a KFP local-runner run (importer -> cluster)."""

from pathlib import Path

import numpy as np
from helpers import kfp_local
from kfp import dsl

from hllm_creator.infer.common import embeddings_frame
from hllm_creator_kfp.components.cluster.component import cluster


def _embeddings(d: Path) -> Path:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 8)) * 8
    x = (centers[rng.integers(0, 3, 300)] + rng.normal(size=(300, 8))).astype(np.float32)
    d.mkdir(parents=True)
    embeddings_frame([f"u{i:03d}" for i in range(300)], x).to_parquet(d / "user_embeddings.parquet")
    return d


def test_python_func_k_and_sweep(tmp_path):
    emb = _embeddings(tmp_path / "emb")
    out, metrics = dsl.Dataset(uri=str(tmp_path / "c")), dsl.Metrics(uri=str(tmp_path / "m.json"))
    cluster.python_func(embeddings=dsl.Dataset(uri=str(emb)), clusters=out, metrics=metrics, k_sweep="2,3,5")
    assert out.metadata["k"] == 3 and out.metadata["metric"] == "l2" and out.metadata["users"] == 300
    assert metrics.metadata["k"] == 3.0 and "silhouette" in metrics.metadata
    assert (tmp_path / "c" / "assignments.parquet").exists() and (tmp_path / "c" / "centroids.npy").exists()
    out2 = dsl.Dataset(uri=str(tmp_path / "c2"))
    cluster.python_func(embeddings=dsl.Dataset(uri=str(emb)), clusters=out2,
                        metrics=dsl.Metrics(uri=str(tmp_path / "m2.json")), k=4, metric="cosine")
    assert out2.metadata["metric"] == "ip" and out2.metadata["normalized"] is True


def test_local_runner(tmp_path):
    emb = _embeddings(tmp_path / "emb")
    kfp_local(tmp_path)

    @dsl.pipeline(name="cluster-test")
    def pipe(uri: str):
        e = dsl.importer(artifact_uri=uri, artifact_class=dsl.Dataset, reimport=False)
        cluster(embeddings=e.output, k=3, min_cluster_size=2)

    pipe(uri=str(emb))
    asg = list((tmp_path / "kfp").rglob("assignments.parquet"))
    assert len(asg) == 1
    import pandas as pd

    df = pd.read_parquet(asg[0])
    assert len(df) == 300 and df["cluster_id"].nunique() == 3
