"""Embedded LLM server: 8 concurrent chat requests (dynamic batching) vs the same 8 one at a time.

One run, one server: ``hllm-creator serve llm --model smollm2-135m-instruct`` (real KServe HTTP on
127.0.0.1, real SmolLM2-135M-Instruct) gets the same 8 chat requests through the official ``openai``
client, first all 8 at once from 8 threads (the server batches them into one ``generate`` call),
then one after another. Every request is greedy with ``max_tokens`` fixed and ``ignore_eos`` on, so
each produces exactly ``max_tokens`` tokens and the two modes do the same work. Tokens are the
server's ``usage.completion_tokens``. Besides wall-clock tokens/s, tokens per CPU-second of the
server process (from /proc) are recorded: on a shared CPU that figure is far less sensitive to what
other processes do during each phase.

    .venv/bin/python -m benchmarks.speed.llm_server [--max-tokens 48] [--requests 8] [--rounds 1]

Writes ``benchmarks/results/llm_server.json``. The machine is shared: the 1-minute load average
before and after each phase is recorded next to the figures.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import platform
import statistics
import time
from pathlib import Path

from benchmarks._common import RESULTS

PRODUCTS = ["green tea with zero sugar", "a cordless drill", "nitrile lab gloves", "a digital caliper",
            "safety goggles", "a soldering station", "an LED work light", "a stainless steel thermos"]


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) the server process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=1, help="repeat batched+sequential this many times")
    ap.add_argument("--batch-window-ms", type=float, default=20.0)
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                    help="server weights (auto: the server's default)")
    ap.add_argument("--out", default=str(RESULTS / "llm_server.json"))
    args = ap.parse_args()

    import openai

    from hllm_creator.io import write_json
    from hllm_creator.process import serve_process

    prompts = [f"Write a catchy ad title for {PRODUCTS[i % len(PRODUCTS)]}." for i in range(args.requests)]
    server_args = ["--model", args.model, "--max-batch-size", str(args.requests),
                   "--batch-window-ms", str(args.batch_window_ms), "--no-json-warmup",
                   "--dtype", args.dtype]
    rounds = []
    with serve_process("llm", server_args, timeout=300) as srv:
        client = openai.OpenAI(base_url=srv.openai_base_url, api_key="none", max_retries=0, timeout=900)
        name = client.models.list().data[0].id

        def one(prompt: str) -> int:
            r = client.chat.completions.create(model=name, temperature=0, max_tokens=args.max_tokens,
                                               messages=[{"role": "user", "content": prompt}],
                                               extra_body={"ignore_eos": True})
            return r.usage.completion_tokens

        one("warm up")  # first call pays one-time costs

        def phase(run) -> dict:
            load0, cpu0 = _load(), _cpu_s(srv.proc.pid)
            t0 = time.perf_counter()
            toks = run()
            dt = time.perf_counter() - t0
            cpu = _cpu_s(srv.proc.pid) - cpu0
            return {"tokens": sum(toks), "seconds": round(dt, 2), "tokens_per_s": round(sum(toks) / dt, 2),
                    "server_cpu_s": round(cpu, 2), "tokens_per_cpu_s": round(sum(toks) / max(cpu, 1e-9), 2),
                    "load_before": load0, "load_after": _load()}

        def concurrent_run() -> list[int]:
            with concurrent.futures.ThreadPoolExecutor(len(prompts)) as ex:
                return list(ex.map(one, prompts))

        for k in range(args.rounds):
            res = {"batched": phase(concurrent_run), "sequential": phase(lambda: [one(p) for p in prompts])}
            b, q = res["batched"], res["sequential"]
            res["ratio"] = round(b["tokens_per_s"] / q["tokens_per_s"], 2)
            res["ratio_per_cpu_s"] = round(b["tokens_per_cpu_s"] / q["tokens_per_cpu_s"], 2)
            print(f"round {k + 1}: batched {b['tokens_per_s']} tok/s ({b['tokens']} tokens in {b['seconds']} s, "
                  f"{b['tokens_per_cpu_s']} tok/CPU-s), sequential {q['tokens_per_s']} tok/s ({q['seconds']} s, "
                  f"{q['tokens_per_cpu_s']} tok/CPU-s); ratio {res['ratio']}x wall, "
                  f"{res['ratio_per_cpu_s']}x per CPU-s  [load {b['load_before']} -> {q['load_after']}]",
                  flush=True)
            rounds.append(res)
    tot = {m: {"tokens": sum(r[m]["tokens"] for r in rounds), "seconds": sum(r[m]["seconds"] for r in rounds),
               "cpu": sum(r[m]["server_cpu_s"] for r in rounds)} for m in ("batched", "sequential")}
    out = {"benchmark": "llm_server", "model": args.model, "requests": args.requests,
           "max_tokens": args.max_tokens, "dtype": args.dtype, "greedy": True, "ignore_eos": True,
           "batch_window_ms": args.batch_window_ms, "rounds": rounds,
           "ratio_median": statistics.median(r["ratio"] for r in rounds),
           "ratio_pooled": round((tot["batched"]["tokens"] / tot["batched"]["seconds"])
                                 / (tot["sequential"]["tokens"] / tot["sequential"]["seconds"]), 2),
           "ratio_per_cpu_s_pooled": round((tot["batched"]["tokens"] / tot["batched"]["cpu"])
                                           / (tot["sequential"]["tokens"] / tot["sequential"]["cpu"]), 2),
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                       "note": "shared 2-core machine; other engineers' jobs ran at the same time "
                               "(see load_before/load_after)"},
           "command": "python -m benchmarks.speed.llm_server " + " ".join(
               f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
           "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json(out, Path(args.out))
    print(f"batched/sequential tokens/s ratio: median {out['ratio_median']}x, pooled {out['ratio_pooled']}x "
          f"(per server CPU-second: {out['ratio_per_cpu_s_pooled']}x)  -> {args.out}")
    return out


if __name__ == "__main__":
    main()
