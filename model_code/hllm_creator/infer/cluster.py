"""Cluster user embeddings with faiss k-means (paper, Inference step 2).

- Metric: ``l2`` (default) trains plain L2 k-means on the raw user embeddings and assigns members
  by the nearest centroid in squared L2 (``distance`` = squared L2). ``cosine`` L2-normalizes the
  embeddings, trains spherical k-means (unit-norm centroids) and assigns by the largest inner
  product on the SAME normalized vectors (``distance`` = 1 - cosine). ``cluster_meta.json`` records
  ``metric`` ("l2" | "ip") and ``normalized`` so :func:`assign` always uses the training metric
  (the reference trains L2 k-means and assigns by dot product; we do not).
- Empty and tiny clusters: faiss re-seeds clusters that go empty during training (it splits a
  large cluster). After training, any cluster with fewer than ``min_cluster_size`` members is
  merged: its centroid is dropped and its members re-assigned to the nearest remaining centroid
  (same metric); this repeats until every cluster is big enough. Cluster ids are then renumbered
  0..K'-1 (ordered by size, largest first) and the merges are recorded in the meta.
- K: given, or chosen by a sweep: per K, inertia (mean squared distance to the assigned centroid)
  and the silhouette score on a seeded sample (+ Davies-Bouldin); the K with the best silhouette
  wins.
- ``member_means.npy``: the mean RAW embedding of each cluster's members. It is what downstream
  steps put in the user slot (for ``l2`` it equals the centroid up to one Lloyd step; for
  ``cosine`` the unit-norm centroid is not on the user-embedding scale).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from hllm_creator import tracking
from hllm_creator.config import StepConfig
from hllm_creator.data.schema import DataError
from hllm_creator.infer.common import (
    ASSIGNMENTS,
    CENTROIDS,
    CLUSTER_META,
    MEDOIDS,
    MEMBER_MEANS,
    read_embeddings,
    read_json,
)
from hllm_creator.io import atomic_path, write_json, write_parquet

log = logging.getLogger(__name__)


class ClusterConfig(StepConfig):
    """Config of ``hllm-creator cluster``."""

    k: int | None = Field(None, ge=1, description="Number of clusters (or give k_sweep).")
    k_sweep: list[int] = Field(default_factory=list, description="Candidate Ks; best silhouette wins.")
    metric: Literal["l2", "cosine"] = Field("l2", description="l2: L2 k-means, assign by L2. cosine: normalize, "
                                            "spherical k-means, assign by inner product.")
    niter: int = Field(25, ge=1, description="k-means iterations.")
    nredo: int = Field(3, ge=1, description="k-means restarts; the lowest objective wins.")
    seed: int = 0
    min_cluster_size: int = Field(5, ge=1, description="Clusters with fewer members are merged into the nearest "
                                  "other.")
    silhouette_sample: int = Field(5000, ge=100)
    max_points_per_centroid: int = Field(256, ge=1)
    use_gpu: bool | None = Field(None, description="None: faiss GPU when faiss.get_num_gpus() > 0.")
    standardize: bool = Field(True, description="z-score every feature before k-means (the space the Creative "
                              "LLM's projector reads: it sees standardized user embeddings); recorded in the meta "
                              "and applied again by assign().")

    @field_validator("k_sweep")
    @classmethod
    def _sweep(cls, v: list[int]) -> list[int]:
        if any(k < 2 for k in v):
            raise ValueError(f"every K in k_sweep must be >= 2, got {v}")
        return sorted(set(v))

    @model_validator(mode="after")
    def _one_of(self):
        if (self.k is None) == (not self.k_sweep):
            raise ValueError("give exactly one of k or k_sweep")
        return self


@dataclass
class ClusterResult:
    centroids: np.ndarray  # [K, d] float32, in the training space (normalized for cosine)
    member_means: np.ndarray  # [K, d] float32, mean raw member embedding
    cluster_ids: np.ndarray  # [n] int64
    distances: np.ndarray  # [n] float32
    meta: dict
    sweep: list[dict] = field(default_factory=list)
    medoids: np.ndarray | None = None  # [K, d] float32, the raw embedding of the member nearest each centroid

    @property
    def sizes(self) -> np.ndarray:
        return np.bincount(self.cluster_ids, minlength=len(self.centroids))


def _stdz(meta: dict | None):
    st = (meta or {}).get("standardize")
    if not st:
        return None
    return np.asarray(st["mean"], dtype=np.float32), np.asarray(st["std"], dtype=np.float32)


def _space(emb: np.ndarray, normalized: bool, stdz=None) -> np.ndarray:
    x = np.ascontiguousarray(emb, dtype=np.float32)
    if stdz is not None:
        if x.shape[1] != len(stdz[0]):
            raise DataError(f"embedding dim {x.shape[1]} does not match the clustering's standardization "
                            f"({len(stdz[0])} features)")
        x = (x - stdz[0]) / stdz[1]
    if normalized:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(x, dtype=np.float32)


def assign(centroids: np.ndarray, emb: np.ndarray, meta: dict) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid for each row of ``emb`` with the metric the centroids were trained with.

    ``meta`` is ``cluster_meta.json`` (``metric`` "l2" | "ip", ``normalized``). Returns
    (cluster_ids int64 [n], distances float32 [n]): squared L2 for "l2", 1 - cosine for "ip".
    """
    import faiss

    metric, normalized = meta.get("metric"), bool(meta.get("normalized"))
    centroids = np.ascontiguousarray(centroids, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[1] != centroids.shape[1]:
        raise DataError(f"embedding dim {emb.shape[-1]} does not match centroid dim {centroids.shape[1]}")
    x = _space(emb, normalized, _stdz(meta))
    if metric == "l2":
        index = faiss.IndexFlatL2(centroids.shape[1])
    elif metric == "ip":
        if not normalized:
            raise DataError("cluster_meta: metric 'ip' is only used on normalized embeddings")
        index = faiss.IndexFlatIP(centroids.shape[1])
    else:
        raise DataError(f"cluster_meta: unknown metric {metric!r} (expected 'l2' or 'ip')")
    index.add(centroids)
    d, i = index.search(x, 1)
    dist = d[:, 0] if metric == "l2" else 1.0 - d[:, 0]
    return i[:, 0].astype(np.int64), dist.astype(np.float32)


def kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ seeding (D^2 sampling, ``2 + ln k`` candidates per step, the one that lowers
    the potential most wins; as scikit-learn): far better starts than faiss' uniform sample."""
    n = len(x)
    trials = 2 + int(np.log(k))
    sq = (x * x).sum(1)
    cents = np.empty((k, x.shape[1]), dtype=np.float32)
    cents[0] = x[rng.integers(n)]
    d2 = ((x - cents[0]) ** 2).sum(1)
    for j in range(1, k):
        tot = float(d2.sum())
        if tot <= 0:
            cents[j] = x[rng.integers(n)]
            continue
        cand = np.searchsorted(np.cumsum(d2), rng.random(trials) * tot).clip(0, n - 1)
        dc = np.maximum(sq[None, :] - 2 * x[cand] @ x.T + sq[cand][:, None], 0)  # [trials, n]
        new = np.minimum(d2[None, :], dc)
        best = int(np.argmin(new.sum(1)))
        cents[j] = x[cand[best]]
        d2 = new[best]
    return cents


def _kmeans(x: np.ndarray, k: int, cfg: ClusterConfig, spherical: bool, gpu: bool) -> np.ndarray:
    """faiss k-means from k-means++ seeds, ``nredo`` restarts; the lowest objective on all points wins."""
    import faiss

    rng = np.random.default_rng(cfg.seed)
    cap = cfg.max_points_per_centroid * k
    best = None
    for r in range(cfg.nredo):
        sample = x[rng.choice(len(x), size=cap, replace=False)] if len(x) > cap else x
        seed_set = sample[rng.choice(len(sample), size=max(10_000, 40 * k), replace=False)] \
            if len(sample) > max(10_000, 40 * k) else sample  # seeding needs far fewer points than Lloyd
        init = kmeans_pp(seed_set, k, rng)
        if spherical:
            init /= np.maximum(np.linalg.norm(init, axis=1, keepdims=True), 1e-12)
        km = faiss.Kmeans(x.shape[1], k, niter=cfg.niter, seed=cfg.seed + r, spherical=spherical, gpu=gpu,
                          max_points_per_centroid=cfg.max_points_per_centroid, min_points_per_centroid=1,
                          verbose=False)
        km.train(x, init_centroids=init)
        cents = np.ascontiguousarray(km.centroids, dtype=np.float32)
        index = faiss.IndexFlatL2(x.shape[1])
        index.add(cents)
        obj = float(index.search(x, 1)[0].sum())
        if best is None or obj < best[0]:
            best = (obj, cents)
    return best[1]


def _merge_small(centroids: np.ndarray, x: np.ndarray, meta: dict, min_size: int):
    """Drop clusters below ``min_size`` (smallest first) and re-assign their members."""
    merged: list[dict] = []
    while True:
        ids, dist = assign(centroids, x, meta)
        sizes = np.bincount(ids, minlength=len(centroids))
        small = np.nonzero(sizes < min_size)[0]
        if len(small) == 0 or len(centroids) == 1:
            return centroids, ids, dist, merged
        victim = int(small[np.argmin(sizes[small])])
        merged.append({"dropped_centroid": victim, "members": int(sizes[victim])})
        centroids = np.delete(centroids, victim, axis=0)


def fit(emb: np.ndarray, k: int, cfg: ClusterConfig) -> ClusterResult:
    """Train k-means with K=k and assign every row (see the module docstring for the rules)."""
    import faiss

    n, d = emb.shape
    if k > n:
        raise DataError(f"k={k} is larger than the number of embeddings ({n})")
    normalized = cfg.metric == "cosine"
    meta = {"metric": "ip" if normalized else "l2", "normalized": normalized}
    stdz = None
    if cfg.standardize:
        e = emb.astype(np.float64)
        stdz = (e.mean(0).astype(np.float32), np.maximum(e.std(0), 1e-4).astype(np.float32))
    x = _space(emb, normalized, stdz)
    gpu = cfg.use_gpu if cfg.use_gpu is not None else faiss.get_num_gpus() > 0
    t0 = time.time()
    centroids = _kmeans(x, k, cfg, spherical=normalized, gpu=gpu)
    train_s = time.time() - t0
    centroids, ids, dist, merged = _merge_small(centroids, x, meta, cfg.min_cluster_size)  # x: already in space
    # renumber by size, largest first (stable: ties by old id)
    sizes = np.bincount(ids, minlength=len(centroids))
    order = np.argsort(-sizes, kind="stable")
    remap = np.empty_like(order)
    remap[order] = np.arange(len(order))
    centroids, ids = centroids[order], remap[ids]
    sizes = sizes[order]
    means = np.zeros((len(centroids), d), dtype=np.float64)
    np.add.at(means, ids, emb.astype(np.float64))
    means = (means / np.maximum(sizes, 1)[:, None]).astype(np.float32)
    # the medoid: the member nearest its centroid, a real user embedding (a mean of many users sits
    # near the global mean, off the distribution the Creative LLM was trained on)
    medoids = np.zeros_like(means)
    for c in range(len(centroids)):
        members = np.nonzero(ids == c)[0]
        if len(members):
            medoids[c] = emb[members[np.argmin(dist[members])]]
    inertia = float(np.mean(dist if meta["metric"] == "l2" else (2.0 * dist)))  # squared L2 on the unit sphere
    meta.update({
        "k_requested": k, "k": int(len(centroids)), "n": int(n), "dim": int(d),
        "distance": "squared_l2" if meta["metric"] == "l2" else "1_minus_cosine",
        "faiss_gpu": bool(gpu), "niter": cfg.niter, "nredo": cfg.nredo, "seed": cfg.seed,
        "min_cluster_size": cfg.min_cluster_size, "merged_small_clusters": merged,
        "sizes": [int(s) for s in sizes], "inertia": inertia, "train_seconds": round(train_s, 3),
        "centroids_space": ("standardized, " if stdz is not None else "") + (
            "unit-normalized" if normalized else "raw"),
        "user_slot": "medoids.npy (the member nearest each centroid) or member_means.npy (mean raw embedding)",
    })
    if stdz is not None:
        meta["standardize"] = {"mean": stdz[0].tolist(), "std": stdz[1].tolist()}
    return ClusterResult(centroids=centroids, member_means=means, cluster_ids=ids.astype(np.int64),
                         distances=dist, meta=meta, medoids=medoids)


def separation(x: np.ndarray, ids: np.ndarray, sample: int, seed: int) -> dict:
    """Silhouette (seeded sample) and Davies-Bouldin of a labelling of ``x``; NaN when undefined."""
    from sklearn.metrics import davies_bouldin_score, silhouette_score

    k = len(np.unique(ids))
    if k < 2 or k >= len(x):
        return {"silhouette": float("nan"), "davies_bouldin": float("nan")}
    s = silhouette_score(x, ids, sample_size=min(sample, len(x)), random_state=seed)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(x), size=min(len(x), 20000), replace=False)
    db = davies_bouldin_score(x[idx], ids[idx]) if len(np.unique(ids[idx])) >= 2 else float("nan")
    return {"silhouette": float(s), "davies_bouldin": float(db)}


def cluster(emb: np.ndarray, cfg: ClusterConfig, *, progress: bool = True) -> ClusterResult:
    """K given: one fit. K sweep: fit each K, score it, keep the best silhouette (ties: smaller K)."""
    from tqdm.auto import tqdm

    if cfg.k is not None:
        res = fit(emb, cfg.k, cfg)
        res.meta.update(separation(_space(emb, res.meta["normalized"], _stdz(res.meta)), res.cluster_ids,
                                   cfg.silhouette_sample, cfg.seed))
        res.meta["chosen_by"] = "given"
        return res
    n = len(emb)
    ks = [k for k in cfg.k_sweep if k <= n]
    if not ks:
        raise DataError(f"every K in the sweep {cfg.k_sweep} exceeds the number of embeddings ({n})")
    best, sweep = None, []
    for k in tqdm(ks, desc="k-means sweep", unit="K", disable=not progress):
        res = fit(emb, k, cfg)
        sep = separation(_space(emb, res.meta["normalized"], _stdz(res.meta)), res.cluster_ids,
                         cfg.silhouette_sample, cfg.seed)
        res.meta.update(sep)
        row = {"k_requested": k, "k": res.meta["k"], "inertia": res.meta["inertia"], **sep,
               "min_size": int(res.sizes.min()), "max_size": int(res.sizes.max()),
               "sizes": res.meta["sizes"]}
        sweep.append(row)
        log.info("K=%d: inertia %.4f silhouette %.4f davies-bouldin %.4f", k, row["inertia"],
                 sep["silhouette"], sep["davies_bouldin"])
        score = sep["silhouette"] if np.isfinite(sep["silhouette"]) else -np.inf
        if best is None or score > best[0]:
            best = (score, res)
    res = best[1]
    res.sweep = sweep
    res.meta["chosen_by"] = "max silhouette over k_sweep"
    res.meta["sweep"] = [{k: v for k, v in r.items() if k != "sizes"} for r in sweep]
    return res


def write(res: ClusterResult, user_ids: list[str], out: str | Path) -> Path:
    """centroids.npy, member_means.npy, assignments.parquet, cluster_meta.json (atomic each)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    arrays = [(CENTROIDS, res.centroids), (MEMBER_MEANS, res.member_means)]
    if res.medoids is not None:
        arrays.append((MEDOIDS, res.medoids))
    for name, arr in arrays:
        with atomic_path(out / name) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, arr.astype(np.float32))
    write_parquet(pd.DataFrame({"user_id": pd.Series(user_ids, dtype=str),
                                "cluster_id": res.cluster_ids.astype(np.int64),
                                "distance": res.distances.astype(np.float32)}), out / ASSIGNMENTS)
    write_json(res.meta, out / CLUSTER_META)
    return out


def load(path: str | Path) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, dict]:
    """A cluster dir -> (centroids, member_means, assignments, meta), checked against each other."""
    p = Path(path)
    if not p.is_dir():
        raise DataError("cluster dir does not exist (output of `hllm-creator cluster`)", file=str(p))
    for name in (CENTROIDS, ASSIGNMENTS, CLUSTER_META):
        if not (p / name).exists():
            raise DataError(f"{name} missing from cluster dir", file=str(p / name))
    cents = np.load(p / CENTROIDS)
    means = np.load(p / MEMBER_MEANS) if (p / MEMBER_MEANS).exists() else cents
    meta = read_json(p / CLUSTER_META)
    asg = pd.read_parquet(p / ASSIGNMENTS)
    for col in ("user_id", "cluster_id", "distance"):
        if col not in asg.columns:
            raise DataError(f"missing column {col!r}", file=str(p / ASSIGNMENTS), column=col)
    if cents.ndim != 2 or means.shape != cents.shape:
        raise DataError(f"centroids shape {cents.shape} / member means {means.shape} invalid",
                        file=str(p / CENTROIDS))
    bad = (asg["cluster_id"] < 0) | (asg["cluster_id"] >= len(cents))
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        raise DataError(f"cluster_id {asg['cluster_id'].iloc[i]} outside 0..{len(cents) - 1}",
                        file=str(p / ASSIGNMENTS), column="cluster_id", row=i)
    return cents.astype(np.float32), means.astype(np.float32), asg, meta


def load_slots(path: str | Path, kind: str = "medoid") -> np.ndarray:
    """What fills the Creative LLM's user slot per cluster: ``medoid`` (the member nearest the
    centroid; falls back to the member means for cluster dirs written before medoids existed) or
    ``mean`` (the mean member embedding)."""
    _, means, _, _ = load(path)
    if kind == "mean":
        return means
    if kind != "medoid":
        raise ValueError(f"slot must be 'medoid' or 'mean', got {kind!r}")
    p = Path(path) / MEDOIDS
    if not p.exists():
        log.warning("%s has no %s (written before medoids): using member means", path, MEDOIDS)
        return means
    med = np.load(p).astype(np.float32)
    if med.shape != means.shape:
        raise DataError(f"medoids shape {med.shape} does not match member means {means.shape}", file=str(p))
    return med


def plots(emb: np.ndarray, res: ClusterResult, *, sample: int = 5000, seed: int = 0):
    """(cluster-size histogram, 2-D PCA projection coloured by cluster) as matplotlib figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    sizes = res.sizes
    fig1, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(np.arange(len(sizes)), sizes, color="tab:blue")
    ax.set_xlabel("cluster id (largest first)")
    ax.set_ylabel("users")
    ax.set_title(f"cluster sizes (K={len(sizes)}, n={int(sizes.sum())})")
    fig1.tight_layout()

    rng = np.random.default_rng(seed)
    idx = rng.choice(len(emb), size=min(sample, len(emb)), replace=False)
    x = _space(emb, res.meta["normalized"], _stdz(res.meta))
    pca = PCA(n_components=2, random_state=seed).fit(x[idx])
    xy = pca.transform(x[idx])
    cxy = pca.transform(res.centroids)
    fig2, ax = plt.subplots(figsize=(6, 5))
    ax.scatter(xy[:, 0], xy[:, 1], c=res.cluster_ids[idx], cmap="tab20", s=4, alpha=0.6)
    ax.scatter(cxy[:, 0], cxy[:, 1], c="black", marker="x", s=30, label="centroids")
    ev = pca.explained_variance_ratio_
    ax.set_xlabel(f"PC1 ({ev[0]:.0%})")
    ax.set_ylabel(f"PC2 ({ev[1]:.0%})")
    ax.set_title(f"user embeddings, PCA, coloured by cluster ({len(idx)} users)")
    ax.legend(loc="best", fontsize=8)
    fig2.tight_layout()
    return fig1, fig2


def sweep_plot(sweep: list[dict]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [r["k_requested"] for r in sweep]
    fig, ax1 = plt.subplots(figsize=(6, 3.5))
    ax1.plot(ks, [r["inertia"] for r in sweep], "o-", color="tab:blue", label="inertia")
    ax1.set_xlabel("K")
    ax1.set_ylabel("inertia", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(ks, [r["silhouette"] for r in sweep], "s--", color="tab:red", label="silhouette")
    ax2.set_ylabel("silhouette", color="tab:red")
    ax1.set_title("k-means sweep")
    fig.tight_layout()
    return fig


def run(embeddings: str | Path, out: str | Path, cfg: ClusterConfig, *, progress: bool = True) -> ClusterResult:
    """The step: read user embeddings, cluster, write outputs, log params/metrics/plots to MLflow."""
    ids, emb = read_embeddings(embeddings)
    with tracking.step_run("cluster", cfg):
        res = cluster(emb, cfg, progress=progress)
        write(res, ids, out)
        sizes = res.sizes
        tracking.log_metrics({"k": res.meta["k"], "inertia": res.meta["inertia"],
                              "silhouette": res.meta.get("silhouette", float("nan")),
                              "davies_bouldin": res.meta.get("davies_bouldin", float("nan")),
                              "min_cluster_size": int(sizes.min()), "max_cluster_size": int(sizes.max()),
                              "merged_small_clusters": len(res.meta["merged_small_clusters"]),
                              "users": len(ids)})
        for r in res.sweep:
            tracking.log_metrics({"sweep_inertia": r["inertia"], "sweep_silhouette": r["silhouette"],
                                  "sweep_davies_bouldin": r["davies_bouldin"]}, step=r["k_requested"])
        tracking.log_json(res.meta, "cluster_meta.json")
        fig1, fig2 = plots(emb, res, seed=cfg.seed)
        tracking.log_figure(fig1, "cluster_sizes.png")
        tracking.log_figure(fig2, "user_embeddings_pca.png")
        if res.sweep:
            tracking.log_figure(sweep_plot(res.sweep), "k_sweep.png")
            tracking.log_table(pd.DataFrame([{k: v for k, v in r.items() if k != "sizes"} | {
                "sizes": str(r["sizes"])} for r in res.sweep]), "k_sweep")
    return res
