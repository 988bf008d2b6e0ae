"""cluster: faiss k-means of the user embeddings (glue for ``hllm_creator.infer.cluster.run``)."""

from typing import Optional

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from hllm_creator_kfp.components._images import CPU_IMAGE
from hllm_creator_kfp.components._params import describe


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def cluster(
    embeddings: Input[Dataset],
    clusters: Output[Dataset],
    metrics: Output[Metrics],
    k: int = 0,
    k_sweep: Optional[str] = None,
    metric: str = "l2",
    min_cluster_size: int = 5,
    niter: int = 25,
    standardize: bool = True,
    seed: int = 0,
):
    """K-means clusters of the users; members assigned with the metric the centroids were trained with.

    The defaults are ``ClusterConfig``'s (KFP ships this function's source, so they are literals
    here; tests/unit/test_defaults_once.py fails when they drift).

    Args:
        embeddings: Dir (or file) with user_embeddings.parquet from embed / embed_merge.
        k: Number of clusters (0 = use k_sweep).
        clusters: Output dir: centroids.npy, member_means.npy, medoids.npy, assignments.parquet,
            cluster_meta.json.
        metrics: K, inertia, silhouette, Davies-Bouldin, min/max cluster size.
        k_sweep: Comma-separated candidate Ks, e.g. "8,16,32": the best silhouette wins.
        seed: Seed of the k-means++ initialisation and the silhouette sample.
    """
    from hllm_creator.infer.cluster import ClusterConfig, run

    sweep = [int(x) for x in (k_sweep or "").split(",") if x.strip()]
    cfg = ClusterConfig(k=k or None, k_sweep=sweep if not k else [], metric=metric,
                        min_cluster_size=min_cluster_size, niter=niter, seed=seed, standardize=standardize)
    res = run(embeddings.path, clusters.path, cfg, progress=False)
    m = res.meta
    clusters.metadata.update({"k": m["k"], "metric": m["metric"], "normalized": m["normalized"], "users": m["n"]})
    for name in ("k", "inertia", "silhouette", "davies_bouldin"):
        if m.get(name) is not None and m[name] == m[name]:  # skip NaN
            metrics.log_metric(name, float(m[name]))
    metrics.log_metric("min_cluster_size", float(min(m["sizes"])))
    metrics.log_metric("max_cluster_size", float(max(m["sizes"])))


describe(cluster)  # input descriptions from the config's fields, written once
