"""faiss vs scikit-learn k-means on 100k vectors, side by side in one run.

Data: 100,000 x 256 float32 from a seeded Gaussian mixture (64 true centres). Every method gets the
same K, the same number of Lloyd iterations and one initialisation:
- ``faiss``: ``hllm_creator.infer.cluster.fit`` (k-means++ seeds, faiss Kmeans, nredo=1; trains on
  a 256-points-per-centroid sample as faiss does by default, then assigns all points);
- ``faiss_all_points``: the same on all points (``max_points_per_centroid`` large);
- ``sklearn_kmeans``: ``KMeans(algorithm="lloyd", n_init=1, max_iter=niter)``;
- ``sklearn_minibatch``: ``MiniBatchKMeans(n_init=1, max_iter=niter, batch_size=4096)``.
Reported: seconds, inertia (mean squared distance to the nearest centroid over ALL points, same
formula for all), adjusted Rand index vs the true mixture labels.

    .venv/bin/python -m benchmarks.speed.kmeans [--n 100000] [--d 256] [--k 64] [--niter 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks._common import save


def inertia(x, c):
    import faiss

    index = faiss.IndexFlatL2(c.shape[1])
    index.add(np.ascontiguousarray(c, dtype=np.float32))
    d, i = index.search(x, 1)
    return float(d.mean()), i[:, 0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--niter", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.metrics import adjusted_rand_score

    from hllm_creator.infer.cluster import ClusterConfig, fit

    rng = np.random.default_rng(a.seed)
    centres = rng.normal(size=(a.k, a.d)).astype(np.float32) * 2.0
    truth = rng.integers(0, a.k, a.n)
    x = np.ascontiguousarray(centres[truth] + rng.normal(size=(a.n, a.d)).astype(np.float32))

    res = {}

    def record(name, secs, cents):
        inr, lab = inertia(x, cents)
        res[name] = {"seconds": round(secs, 2), "inertia": round(inr, 4),
                     "ari_vs_truth": round(float(adjusted_rand_score(truth, lab)), 4)}
        print(name, res[name], flush=True)

    for name, mppc in (("faiss", 256), ("faiss_all_points", 10**9)):
        cfg = ClusterConfig(k=a.k, niter=a.niter, nredo=1, seed=a.seed, min_cluster_size=1, max_points_per_centroid=mppc)
        t0 = time.perf_counter()
        r = fit(x, a.k, cfg)
        record(name, time.perf_counter() - t0, r.centroids)
    t0 = time.perf_counter()
    km = KMeans(n_clusters=a.k, algorithm="lloyd", n_init=1, max_iter=a.niter, random_state=a.seed, tol=0).fit(x)
    record("sklearn_kmeans", time.perf_counter() - t0, km.cluster_centers_.astype(np.float32))
    t0 = time.perf_counter()
    mb = MiniBatchKMeans(n_clusters=a.k, n_init=1, max_iter=a.niter, batch_size=4096, random_state=a.seed).fit(x)
    record("sklearn_minibatch", time.perf_counter() - t0, mb.cluster_centers_.astype(np.float32))
    save("kmeans", {"n": a.n, "d": a.d, "k": a.k, "niter": a.niter, "results": res,
                    "speedup_faiss_vs_sklearn_kmeans": round(res["sklearn_kmeans"]["seconds"] / res["faiss"]["seconds"], 2),
                    "speedup_faiss_vs_minibatch": round(res["sklearn_minibatch"]["seconds"] / res["faiss"]["seconds"], 2)})


if __name__ == "__main__":
    main()
