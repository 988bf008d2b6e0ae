"""Cluster-level vs per-user generation for N users (generations and wall time), side by side.

For one ad and N users (default: all users of the bundled data) clustered into K clusters:
- cluster-level (the paper's method): K generations, the centroid in the user slot (all K measured);
- per-user: N generations, each user's own embedding in the slot; measured on a sample of S users
  with the same batch size and decoding, then extrapolated to N (stated as such).
User embeddings come from a real ``embed_users`` run on the first N users; clusters from
``infer.cluster``. Decoding: the reference sampling defaults with a short ``--max-new-tokens``.

    .venv/bin/python -m benchmarks.speed.cluster_vs_user_generation [--model DIR] [--users N] [--k 32] [--sample 32]
"""

from __future__ import annotations

import argparse
import time

from benchmarks._common import dataset, model, save


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model dir (default: untrained demo architecture, SmolLM2 creative)")
    ap.add_argument("--data", help="dataset dir (default: bundled)")
    ap.add_argument("--users", type=int, default=None, help="N (default: all users)")
    ap.add_argument("--embeddings", help="user_embeddings.parquet of the same model (skips embedding)")
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--sample", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    a = ap.parse_args()

    import numpy as np
    import torch

    from hllm_creator.infer import embed as E
    from hllm_creator.infer.cluster import ClusterConfig, cluster
    from hllm_creator.infer.common import read_embeddings
    from hllm_creator.infer.generate import ad_of
    from hllm_creator.infer.match import default_ads

    ds = dataset(a.data)
    m, what = model(a.model)
    t0 = time.perf_counter()
    if a.embeddings:
        users, emb = read_embeddings(a.embeddings)
        if a.users:
            users, emb = users[:a.users], emb[:a.users]
    else:
        hist = E.histories(ds.interactions)
        hist = hist.iloc[:a.users] if a.users else hist
        users, emb = E.embed_users(m, ds.items, hist)
    embed_s = time.perf_counter() - t0
    n = len(users)
    t0 = time.perf_counter()
    res = cluster(emb, ClusterConfig(k=a.k, min_cluster_size=1), progress=False)
    cluster_s = time.perf_counter() - t0
    ad = ad_of({r["item_id"]: r for r in ds.items.to_dict("records")}[default_ads(ds.items, ds.interactions, 1)[0]])
    p1, p2 = m.build_prompts({k: v for k, v in ad.items() if k != "brand"})
    kw = dict(do_sample=True, temperature=0.8, top_p=0.95, top_k=50, max_new_tokens=a.max_new_tokens, seed=0,
              batch_size=a.batch)

    def gen(vectors: np.ndarray) -> float:
        t = time.perf_counter()
        m.generate(torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)), [p1] * len(vectors),
                   [p2] * len(vectors), **kw)
        return time.perf_counter() - t

    k = len(res.member_means)
    cluster_gen_s = gen(res.member_means)
    rng = np.random.default_rng(0)
    sample = rng.choice(n, size=min(a.sample, n), replace=False)
    user_gen_s = gen(emb[sample])
    per_user_total = user_gen_s / len(sample) * n
    save("cluster_vs_user_generation", {
        "model": what, "users": n, "k": k, "ad": ad["title"], "batch": a.batch, "max_new_tokens": a.max_new_tokens,
        "embed_seconds": round(embed_s, 1), "cluster_seconds": round(cluster_s, 2),
        "cluster_level": {"generations": k, "seconds": round(cluster_gen_s, 2)},
        "per_user": {"generations": n, "measured_sample": len(sample), "sample_seconds": round(user_gen_s, 2),
                     "extrapolated_seconds": round(per_user_total, 1)},
        "generations_ratio": round(n / k, 1), "wall_time_ratio": round(per_user_total / cluster_gen_s, 1),
    })


if __name__ == "__main__":
    main()
