"""Predictor load test: requests/s and p50/p99 latency at concurrency 1, 8 and 32 (histories of 50 items).

One run, side by side: the same `hllm-creator serve predictor` process (real KServe HTTP on
127.0.0.1, micro-batching on) is hit by a closed-loop async client with C in-flight requests; then
a second server with batching off (``--max-batch 1``) takes the concurrency-32 load, to attribute the
gain to batching. Each request: one instance, a 50-item history (catalog item ids), 10 candidate ads.

    .venv/bin/python -m benchmarks.speed.predictor_load [--seconds 12] [--out benchmarks/results/predictor_load.json]

Model: the untrained tiny-llama HLLMCreator (hidden 64, 2 layers per LLM) and real inference outputs
on a slice of the bundled dataset (tests/helpers.py: tiny_serving_stack).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks._common import RESULTS
from hllm_creator.io import write_json
from tests.helpers import tiny_serving_stack


def percentiles(lat: list[float]) -> dict:
    a = np.asarray(lat) * 1000.0
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p99_ms": round(float(np.percentile(a, 99)), 2),
            "mean_ms": round(float(a.mean()), 2)}


async def closed_loop(url: str, bodies: list[dict], concurrency: int, seconds: float, warmup: float = 2.0) -> dict:
    """C workers, each sends its next request when the previous one is answered (aiohttp: a light
    client, so the figures measure the server rather than the load generator)."""
    import aiohttp
    import orjson

    payloads = [orjson.dumps(b) for b in bodies]
    lat: list[float] = []
    errors = 0
    stop_at = [0.0]
    measuring = [False]
    conn = aiohttp.TCPConnector(limit=concurrency + 4)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=120),
                                     headers={"content-type": "application/json"}) as session:
        async def worker(w: int):
            nonlocal errors
            i = w
            while time.perf_counter() < stop_at[0]:
                data = payloads[i % len(payloads)]
                i += concurrency
                t0 = time.perf_counter()
                async with session.post(f"{url}/v1/models/predictor:predict", data=data) as r:
                    await r.read()
                    ok = r.status == 200
                dt = time.perf_counter() - t0
                if not ok:
                    errors += 1
                elif measuring[0]:
                    lat.append(dt)

        # warm-up (not measured), then the measured window
        stop_at[0] = time.perf_counter() + warmup
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        measuring[0] = True
        t0 = time.perf_counter()
        stop_at[0] = t0 + seconds
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"concurrency": concurrency, "requests": len(lat), "seconds": round(wall, 2),
            "requests_per_s": round(len(lat) / wall, 2), **percentiles(lat), "errors": errors}


def batch_stats(url: str) -> tuple[float, float]:
    from prometheus_client.parser import text_string_to_metric_families

    s = c = 0.0
    for fam in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for x in fam.samples:
            if x.labels.get("model") == "predictor" and x.name == "hllm_serving_batch_size_sum":
                s = x.value
            if x.labels.get("model") == "predictor" and x.name == "hllm_serving_batch_size_count":
                c = x.value
    return s, c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=12.0, help="measured seconds per concurrency level")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--history", type=int, default=50)
    ap.add_argument("--candidates", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the server (1: see docs/serving.md)")
    ap.add_argument("--stack-dir", default=None, help="reuse a tiny_serving_stack dir (built when missing)")
    ap.add_argument("--batch-wait-ms", type=float, default=3.0)
    ap.add_argument("--out", default=str(RESULTS / "predictor_load.json"))
    args = ap.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from hllm_creator.process import serve_process

    root = Path(args.stack_dir or tempfile.mkdtemp(prefix="bench-predictor-"))
    t0 = time.time()
    cached = root / "stack.json"
    if cached.exists():  # reuse a stack built by an earlier run in the same --stack-dir
        stack = json.loads(cached.read_text())
    else:
        stack = tiny_serving_stack(root, n_users=48, n_ads=24)
        cached.write_text(json.dumps(stack))
    print(f"stack ready in {time.time() - t0:.0f}s: {root}")
    import pandas as pd

    catalog = pd.read_parquet(stack["items"])["item_id"].astype(str).tolist()
    rng = random.Random(0)
    bodies = [{"instances": [{"user_history": rng.sample(catalog, min(args.history, len(catalog))),
                              "candidate_ad_ids": rng.sample(stack["ads"], min(args.candidates, len(stack["ads"])))}]}
              for _ in range(256)]
    base = ["--model-dir", stack["model_dir"], "--artifacts", stack["artifacts"], "--items", stack["items"],
            "--threads", str(args.threads)]
    results: dict = {"benchmark": "predictor_load", "history_items": args.history, "candidates": args.candidates,
                     "client": "aiohttp closed loop, same machine", "model": "tiny-llama HLLMCreator (untrained; hidden 64, 2 layers per LLM)",
                     "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other work; "
                                f"load avg at start {os.getloadavg()[0]:.1f})",
                     "runs": []}
    with serve_process("predictor", base + ["--max-batch", "32", "--batch-wait-ms", str(args.batch_wait_ms)],
                       timeout=300) as h:
        for c in args.concurrency:
            s0, n0 = batch_stats(h.url)
            r = asyncio.run(closed_loop(h.url, bodies, c, args.seconds))
            s1, n1 = batch_stats(h.url)
            r.update(batching=True, mean_batch=round((s1 - s0) / max(1.0, n1 - n0), 2))
            print(json.dumps(r))
            results["runs"].append(r)
    with serve_process("predictor", base + ["--max-batch", "1"], timeout=300) as h:
        r = asyncio.run(closed_loop(h.url, bodies, max(args.concurrency), args.seconds))
        r.update(batching=False, mean_batch=1.0)
        print(json.dumps(r))
        results["runs"].append(r)
    by = {(r["concurrency"], r["batching"]): r for r in results["runs"]}
    c1, cmax = min(args.concurrency), max(args.concurrency)
    results[f"speedup_c{cmax}_vs_c{c1}"] = round(by[(cmax, True)]["requests_per_s"] / by[(c1, True)]["requests_per_s"], 2)
    results[f"speedup_batching_at_c{cmax}"] = round(by[(cmax, True)]["requests_per_s"] / by[(cmax, False)]["requests_per_s"], 2)
    results["load_avg_end"] = round(os.getloadavg()[0], 1)
    print(json.dumps({k: v for k, v in results.items() if k.startswith("speedup")}))
    print(f"wrote {write_json(results, args.out)}")


if __name__ == "__main__":
    main()
