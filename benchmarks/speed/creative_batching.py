"""Creative LLM serving: generated tokens/s with micro-batching vs without.

One run, side by side: `hllm-creator serve creative` (real KServe HTTP on 127.0.0.1) with
``--max-batch 32`` and then with ``--max-batch 1`` (every request its own ``generate`` call) takes
the same closed-loop load: C concurrent clients, each request one instance (a real user history from
the bundled data, one ad), sampling with a fixed seed and ``max_new_tokens`` tokens. Tokens are
counted by the server (``hllm_serving_generated_tokens_total``: the Creative LLM tokenizer's count of
the decoded outputs), so the figure is what the model produced, not what was asked for.

    .venv/bin/python -m benchmarks.speed.creative_batching [--requests 64] [--concurrency 32]

Model: the untrained tiny-llama HLLMCreator (hidden 64, 2 layers): a per-step-overhead-bound model,
so the batching gain here is an upper bound of what a 135M+ model gets on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks._common import RESULTS
from hllm_creator.io import write_json
from tests.helpers import tiny_serving_stack


def counters(url: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for fam in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for x in fam.samples:
            if x.labels.get("model") == "creative" and x.name in (
                    "hllm_serving_generated_tokens_total", "hllm_serving_batch_size_sum",
                    "hllm_serving_batch_size_count", "hllm_serving_instances_total"):
                out[x.name] = x.value
    return out


async def load(url: str, bodies: list[dict], concurrency: int) -> tuple[float, list[float], int]:
    lat: list[float] = []
    errors = 0
    queue = list(bodies)
    async with httpx.AsyncClient(timeout=600) as client:
        async def worker():
            nonlocal errors
            while queue:
                body = queue.pop()
                t0 = time.perf_counter()
                r = await client.post(f"{url}/v1/models/creative:predict", json=body)
                lat.append(time.perf_counter() - t0)
                errors += r.status_code != 200
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - t0, lat, errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the server (1: see docs/serving.md)")
    ap.add_argument("--stack-dir", default=None)
    ap.add_argument("--out", default=str(RESULTS / "creative_batching.json"))
    args = ap.parse_args()


    from hllm_creator.process import serve_process

    root = Path(args.stack_dir or tempfile.mkdtemp(prefix="bench-creative-"))
    stack = tiny_serving_stack(root, n_users=48, generate=False)
    users = list(stack["users"])
    titles = stack["titles"]
    bodies = []
    for i in range(args.requests):
        ad = stack["ads"][i % len(stack["ads"])]
        bodies.append({"instances": [{"user_history": stack["users"][users[i % len(users)]],
                                      "ad": {"title": titles[ad]}, "do_sample": True, "seed": 0,
                                      "temperature": 1.0, "top_p": 1.0,
                                      "max_new_tokens": args.max_new_tokens}]})
    base = ["--model-dir", stack["model_dir"], "--artifacts", stack["artifacts"], "--items", stack["items"],
            "--threads", str(args.threads)]
    results = {"benchmark": "creative_batching", "requests": args.requests, "concurrency": args.concurrency,
               "max_new_tokens": args.max_new_tokens,
               "model": "tiny-llama HLLMCreator (untrained; hidden 64, 2 layers per LLM)",
               "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared; load avg at start "
                          f"{os.getloadavg()[0]:.1f})", "runs": []}
    for max_batch in (32, 1):
        with serve_process("creative", base + ["--max-batch", str(max_batch), "--batch-wait-ms", "20"],
                           timeout=300) as h:
            asyncio.run(load(h.url, bodies[:4], 4))  # warm-up
            c0 = counters(h.url)
            wall, lat, errors = asyncio.run(load(h.url, bodies, args.concurrency))
            c1 = counters(h.url)
            tok = c1["hllm_serving_generated_tokens_total"] - c0.get("hllm_serving_generated_tokens_total", 0)
            calls = c1["hllm_serving_batch_size_count"] - c0.get("hllm_serving_batch_size_count", 0)
            a = np.asarray(lat) * 1000
            r = {"max_batch": max_batch, "batching": max_batch > 1, "seconds": round(wall, 2),
                 "generated_tokens": int(tok), "tokens_per_s": round(tok / wall, 1),
                 "requests_per_s": round(len(lat) / wall, 2), "generate_calls": int(calls),
                 "mean_batch": round(args.requests / max(calls, 1), 2),
                 "p50_ms": round(float(np.percentile(a, 50)), 1), "p99_ms": round(float(np.percentile(a, 99)), 1),
                 "errors": int(errors)}
            print(json.dumps(r))
            results["runs"].append(r)
    b, nb = results["runs"]
    results["tokens_per_s_speedup"] = round(b["tokens_per_s"] / max(nb["tokens_per_s"], 1e-9), 2)
    results["load_avg_end"] = round(os.getloadavg()[0], 1)
    print(json.dumps({"tokens_per_s_speedup": results["tokens_per_s_speedup"]}))
    print(f"wrote {write_json(results, args.out)}")


if __name__ == "__main__":
    main()
