"""Item-cache embedding vs naive per-user encoding (users/s), side by side in one run.

cached: ``hllm_creator.infer.embed.embed_users`` over ALL users of the bundled data with a COLD item
  cache: every distinct item text is encoded once (that cost is included), users are batched.
naive:  for each user, encode its history items, then the user (``embed_users_naive``), on a random
  sample of users (seeded); its users/s is extrapolated to all users (stated as such).
Both use the same model, threads and history mode, and the sample's embeddings are checked equal.

    .venv/bin/python -m benchmarks.speed.embed_cache [--model MODEL_DIR] [--naive-sample 200] [--max-users N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks._common import dataset, model, save


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model dir (default: untrained demo architecture)")
    ap.add_argument("--data", help="dataset dir (default: bundled)")
    ap.add_argument("--naive-sample", type=int, default=200)
    ap.add_argument("--max-users", type=int, default=None, help="cached path on the first N users only")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    from hllm_creator.infer import embed as E
    from hllm_creator.infer.item_cache import ItemCache

    ds = dataset(a.data)
    m, what = model(a.model, creative="tiny-llama")
    hist = E.histories(ds.interactions)
    if a.max_users:
        hist = hist.iloc[:a.max_users]
    n = len(hist)
    texts = E.item_texts(ds.items)
    mh = E.max_history(m)
    clicks = sum(min(len(s), mh or 10**9) for s in hist)
    distinct = len({texts[i] for s in hist for i in (s[-mh:] if mh else s)})

    cache = ItemCache(m.model_hash + "-bench", persist=False)  # cold, in memory
    t0 = time.perf_counter()
    users, emb = E.embed_users(m, ds.items, hist, batch_size=a.batch_size, cache=cache)
    cached_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    E.embed_users(m, ds.items, hist, batch_size=a.batch_size, cache=cache, progress=False)
    warm_s = time.perf_counter() - t0

    rng = np.random.default_rng(a.seed)
    sample = sorted(rng.choice(hist.index.to_numpy(), size=min(a.naive_sample, n), replace=False).tolist())
    t0 = time.perf_counter()
    su, semb = E.embed_users_naive(m, ds.items, hist.loc[sample])
    naive_s = time.perf_counter() - t0
    idx = {u: k for k, u in enumerate(users)}
    max_diff = float(np.abs(emb[[idx[u] for u in su]] - semb).max())

    naive_ups = len(sample) / naive_s
    cached_ups = n / cached_s
    save("embed_cache", {
        "model": what, "model_hash": m.model_hash, "users": n, "history_items_encoded_naive": clicks,
        "distinct_item_texts": distinct, "batch_size": a.batch_size,
        "cached": {"seconds": round(cached_s, 2), "users_per_s": round(cached_ups, 2),
                   "note": "cold cache, all users, item encoding included"},
        "cached_warm": {"seconds": round(warm_s, 2), "users_per_s": round(n / warm_s, 2),
                        "note": "second pass, every item from the cache"},
        "naive": {"sample_users": len(sample), "seconds": round(naive_s, 2), "users_per_s": round(naive_ups, 2),
                  "extrapolated_seconds_all_users": round(n / naive_ups, 1)},
        "speedup_cold": round(cached_ups / naive_ups, 2), "speedup_warm": round((n / warm_s) / naive_ups, 2),
        "max_abs_diff_cached_vs_naive": max_diff,
        "target": ">= 5x (cold)", "met": cached_ups / naive_ups >= 5,
    })


if __name__ == "__main__":
    main()
