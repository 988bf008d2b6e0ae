"""Staggered arrivals on the embedded LLM server: 32 chat requests arriving over 10 s with mixed
``max_tokens`` (a third short, 5-16 tokens; the rest 32-256), greedy, ``ignore_eos`` so every
request generates exactly its budget. Today's server (the code at ``--old-rev``, exported with
``git archive``) against this tree's, one after the other on the same machine, same arrivals.

Per server: p50/p99 latency of all requests and of the short ones, generated tokens/s (all tokens /
first arrival to last reply), wall time. Writes ``benchmarks/results/staggered_arrivals.json``.

  nice -n 10 .venv/bin/python -m benchmarks.speed.staggered_arrivals --old-rev cd5920d
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import RESULTS, ROOT

TOPICS = ["green tea", "hiking boots", "a cordless drill", "headphones", "a skillet", "dog food", "a desk",
          "a backpack", "a smart watch", "running shoes", "a coffee grinder", "a yoga mat"]


def workload(n: int, span_s: float, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        short = i % 3 == 0
        mt = rng.randint(5, 16) if short else rng.choice([32, 64, 128, 192, 256])
        out.append({"at": round(span_s * i / n + rng.uniform(0, span_s / n), 3), "max_tokens": mt,
                    "short": short, "content": f"Write a catchy ad title for {rng.choice(TOPICS)}."})
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, max(0, int(round(q / 100 * (len(xs) - 1)))))], 2)


async def run_load(url: str, name: str, reqs: list[dict]) -> dict:
    import httpx

    async with httpx.AsyncClient(timeout=900, limits=httpx.Limits(max_connections=64)) as c:
        t0 = time.monotonic()

        async def one(r):
            await asyncio.sleep(max(0.0, r["at"] - (time.monotonic() - t0)))
            ts = time.monotonic()
            resp = await c.post(f"{url}/openai/v1/chat/completions", json={
                "model": name, "messages": [{"role": "user", "content": r["content"]}],
                "max_tokens": r["max_tokens"], "temperature": 0, "ignore_eos": True})
            te = time.monotonic()
            ok = resp.status_code == 200
            return {"latency": te - ts, "end": te - t0, "status": resp.status_code, "short": r["short"],
                    "tokens": resp.json()["usage"]["completion_tokens"] if ok else 0}

        res = await asyncio.gather(*(one(r) for r in reqs))
    lat = [x["latency"] for x in res]
    short = [x["latency"] for x in res if x["short"]]
    toks = sum(x["tokens"] for x in res)
    wall = max(x["end"] for x in res)
    return {"p50_s": pct(lat, 50), "p99_s": pct(lat, 99), "short_p50_s": pct(short, 50),
            "short_p99_s": pct(short, 99), "tokens": toks, "tokens_per_s": round(toks / wall, 1),
            "wall_s": round(wall, 1), "statuses": sorted({x["status"] for x in res})}


def start(src: Path, port: int, log: Path, extra: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{src / 'model_code'}:{src}", "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, "-m", "hllm_creator.cli", "serve", "llm", "--model", "smollm2-135m-instruct",
           "--host", "127.0.0.1", "--port", str(port), "--no-json-warmup", *extra]
    return subprocess.Popen(cmd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--old-rev", default="cd5920d", help="git revision of today's server")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--span-s", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "staggered_arrivals.json"))
    args = ap.parse_args()
    from hllm_creator.process import free_port, stop_process, wait_ready

    reqs = workload(args.n, args.span_s, args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="staggered-"))
    old = tmp / "old"
    old.mkdir()
    subprocess.run(f"git -C {ROOT} archive {args.old_rev} model_code | tar -x -C {old}", shell=True, check=True)
    result: dict = {"requests": args.n, "span_s": args.span_s, "seed": args.seed, "old_rev": args.old_rev,
                    "workload": reqs, "load_avg_start": os.getloadavg()}
    for label, src, extra in (("old", old, []), ("new", ROOT, [])):
        port = free_port()
        proc = start(src, port, tmp / f"{label}.log", extra)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, lambda p=proc: None if p.poll() is None else f"server exited {p.returncode}")
            asyncio.run(run_load(url, "smollm2-135m-instruct",  # warm-up
                                 [dict(r, at=0.0, max_tokens=8) for r in reqs[:2]]))
            result[label] = asyncio.run(run_load(url, "smollm2-135m-instruct", reqs))
            result[label]["load_avg_after"] = os.getloadavg()
            print(label, json.dumps(result[label]), flush=True)
        finally:
            stop_process(proc)
    o, n = result["old"], result["new"]
    result["short_p99_ratio_new_over_old"] = round(n["short_p99_s"] / o["short_p99_s"], 3)
    result["tokens_per_s_ratio_new_over_old"] = round(n["tokens_per_s"] / o["tokens_per_s"], 3)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "workload"}, indent=2))


if __name__ == "__main__":
    main()
