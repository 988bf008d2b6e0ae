"""How embedding scales with users: shard count, batch size, item cache and output sizes up to 10M users.

Computed, not guessed: the per-user and per-item costs come from the measured run in
``benchmarks/results/embed_cache.json`` (all 8,317 bundled users, the ``--preset cpu`` model,
quiet 2-core CPU): warm-cache users/s gives the User-LLM cost per user, (cold - warm) seconds over
the distinct item texts gives the Item-LLM cost per item. Override them with a GPU's measured
rates (``--users-per-s``, ``--items-per-s``, e.g. from benchmarks/gpu/gpu_check.py) to size a GPU run.

Prints a markdown table and writes ``benchmarks/results/embed_scaling.json``.
    .venv/bin/python -m benchmarks.speed.embed_scaling [--target-minutes 30] [--catalog 1000000]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from benchmarks._common import RECORDED, RESULTS

USERS = (10_000, 100_000, 1_000_000, 10_000_000)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--measured", default=str(RECORDED / "embed_cache.json"))
    ap.add_argument("--users-per-s", type=float, default=None, help="per-pod users/s (default: measured warm)")
    ap.add_argument("--items-per-s", type=float, default=None, help="per-pod items/s (default: measured)")
    ap.add_argument("--target-minutes", type=float, default=30.0, help="wall time one shard may take")
    ap.add_argument("--catalog", type=int, default=1_000_000, help="distinct items at 1M+ users (the catalog)")
    ap.add_argument("--dim", type=int, default=576, help="user/item embedding size (SmolLM2 576, TinyLlama 2048)")
    ap.add_argument("--out", default=str(RESULTS / "embed_scaling.json"))
    a = ap.parse_args(argv)

    m = json.loads(Path(a.measured).read_text())
    users_per_s = a.users_per_s or m["cached_warm"]["users_per_s"]
    item_s = (m["cached"]["seconds"] - m["cached_warm"]["seconds"]) / m["distinct_item_texts"]
    items_per_s = a.items_per_s or 1.0 / item_s
    per_user_ms = 1000.0 / users_per_s
    users_per_shard = int(a.target_minutes * 60 * users_per_s)
    # distinct items touched: measured 4,331 of a 4,344-item catalog at 8,317 users (saturated);
    # beyond the bundled data it is bounded by the catalog
    rows = []
    for n in USERS:
        shards = max(1, math.ceil(n / users_per_shard))
        items = min(a.catalog, max(m["distinct_item_texts"], n // 10))
        rows.append({
            "users": n, "shards": shards, "users_per_shard": math.ceil(n / shards),
            "shard_wall_min": round(math.ceil(n / shards) / users_per_s / 60, 1),
            "cpu_core_hours": round(n / users_per_s * 2 / 3600, 2),
            "distinct_items": items,
            "item_cache_gb": round(items * (a.dim * 4 + 24) / 1e9, 3),
            "item_encode_min_once": round(items / items_per_s / 60, 1),
            "user_embeddings_gb": round(n * (a.dim * 4 + 24) / 1e9, 2),
        })
    res = {"benchmark": "embed_scaling", "measured_from": Path(a.measured).name,
           "measured": {"users": m["users"], "model": m["model"], "machine": m["machine"]["note"],
                        "loadavg": m["machine"]["loadavg_1m_at_end"], "batch_size": m["batch_size"]},
           "users_per_s_per_pod": round(users_per_s, 1), "per_user_ms": round(per_user_ms, 2),
           "items_per_s": round(items_per_s, 1), "target_minutes_per_shard": a.target_minutes,
           "users_per_shard_max": users_per_shard, "dim": a.dim, "catalog": a.catalog, "rows": rows}
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"per user {per_user_ms:.2f} ms ({users_per_s:.1f} users/s per 2-core pod), per item "
          f"{1000 / items_per_s:.2f} ms; a shard of <= {a.target_minutes:.0f} min holds {users_per_shard:,} users")
    print("| users | shards | users/shard | shard wall (min) | CPU core-hours | distinct items | "
          "item cache (GB) | item encode once (min) | user_embeddings (GB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['users']:,} | {r['shards']} | {r['users_per_shard']:,} | {r['shard_wall_min']} | "
              f"{r['cpu_core_hours']} | {r['distinct_items']:,} | {r['item_cache_gb']} | "
              f"{r['item_encode_min_once']} | {r['user_embeddings_gb']} |")
    return res


if __name__ == "__main__":
    main()
