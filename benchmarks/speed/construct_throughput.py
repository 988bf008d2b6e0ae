"""Construct throughput (kept rows/s, tokens/s) against the embedded SmolLM2 server at concurrency 1 and 8.

One run each, same ads, fresh cache each (no cache hits), side by side; prints the ratio and writes
benchmarks/results/construct_throughput.json. The teacher asks one title per (ad, fact phrase).

    .venv/bin/python -m benchmarks.speed.construct_throughput --ads 6 [--base-url URL --model NAME]

Without --base-url it starts `hllm-creator serve llm` on a free 127.0.0.1 port.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import RESULTS, ROOT

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ads", type=int, default=6)
    ap.add_argument("--base-url")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--data", default=str(ROOT / ".hllm" / "data" / "amazon_scientific"))
    ap.add_argument("--concurrency", default="1,8")
    ap.add_argument("--out", default=str(RESULTS / "construct_throughput.json"))
    args = ap.parse_args()

    from hllm_creator.llm.client import LLMConfig
    from hllm_creator.process import wait_ready
    from hllm_creator.teacher.construct import ConstructConfig, construct

    proc = None
    base = args.base_url
    if not base:
        port = _free_port()
        log = open(Path(tempfile.gettempdir()) / f"bench_llm_{port}.log", "w")
        proc = subprocess.Popen([str(BIN / "hllm-creator"), "serve", "llm", "--model", args.model, "--host",
                                 "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        wait_ready(f"http://127.0.0.1:{port}", lambda: None if proc.poll() is None else "server exited",
                   timeout=600, interval=1)
        base = f"http://127.0.0.1:{port}/openai/v1"
    results = {}
    try:
        for conc in [int(c) for c in args.concurrency.split(",")]:
            with tempfile.TemporaryDirectory() as tmp:
                llm = LLMConfig(base_url=base, model=args.model, concurrency=conc, cache_path=f"{tmp}/c.sqlite",
                                progress=False)
                cfg = ConstructConfig(data=args.data, out=f"{tmp}/out", ads=args.ads, history_len=5,
                                      rewrite_max_tokens=40, llm=llm)
                t0 = time.perf_counter()
                s = construct(cfg)
                wall = time.perf_counter() - t0
            tok = s["llm"]["llm_completion_tokens"]
            results[str(conc)] = {"wall_s": round(wall, 2), "ads": s["ads"], "kept": s["kept"],
                                  "rows_per_s": round(s["kept"] / wall, 4), "llm_calls": s["llm"]["llm_calls"],
                                  "completion_tokens": tok, "completion_tokens_per_s": round(tok / wall, 2),
                                  "total_tokens": s["llm"]["llm_total_tokens"], "acceptance": s["acceptance"]}
            print(f"concurrency {conc}: {results[str(conc)]}", flush=True)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    keys = list(results)
    ratio = (results[keys[-1]]["rows_per_s"] / results[keys[0]]["rows_per_s"]) if len(keys) > 1 else None
    record = {"benchmark": "construct_throughput", "model": args.model, "ads": args.ads, "results": results,
              "speedup_rows_per_s": round(ratio, 2) if ratio else None, "host": platform.node(),
              "cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
              "note": "one run each; the machine is shared, so load_avg tells how busy it was"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"speedup concurrency {keys[-1]} vs {keys[0]}: {ratio:.2f}x" if ratio else "one setting only")


if __name__ == "__main__":
    main()
