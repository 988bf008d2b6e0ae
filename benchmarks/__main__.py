"""``python -m benchmarks`` (``make bench``): the quick benchmarks in one go, then a table.

Every benchmark module is listed in ``BENCHMARKS``, either with the small arguments that make it quick
on a 2-core CPU (the same code and measure as the recorded run, at a smaller scale) or with the reason
it does not run here (a trained model, a GPU, a published bundle, an extra). Each runs as its own
process (``python -m benchmarks.<group>.<name>``) with a time limit; its JSON goes to a scratch
results folder (``HLLM_BENCH_RESULTS``, default ``.hllm/bench``), so the recorded figures in
``benchmarks/results/`` that the docs cite stay as they are; its output goes to ``<results>/logs/``.

    python -m benchmarks [--only kmeans,grounding_gate] [--timeout 420] [--list]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks._common import ROOT


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass(frozen=True)
class Bench:
    module: str  # under benchmarks/, e.g. "speed.kmeans"
    args: tuple[str, ...] = ()
    needs: str = ""  # why it does not run in `make bench` ("" = it runs)
    tool: str = ""  # a module the benchmarks use, not a benchmark itself: what it is
    headline: Callable[[dict], str] | None = None  # the result column, from the JSON it writes
    runs_if: Callable[[], bool] | None = None  # lifts `needs` when true
    out: str = ""  # for a benchmark that writes where `--out` says: the file name it gets there

    @property
    def name(self) -> str:
        return self.module.rsplit(".", 1)[1]

    def skip_reason(self) -> str:
        if self.tool:
            return f"not a benchmark: {self.tool}"
        if self.needs and not (self.runs_if and self.runs_if()):
            return f"skipped: needs {self.needs}"
        return ""


def _speedup(d: dict, key: str, what: str) -> str:
    return f"{what} x{d[key]}"


# what does not run here, and what it needs
NEEDS = {
    "speed.staggered_arrivals": "a past server revision to compare against (--old-rev, git history)",
    "speed.serving_start": "a published bundle (BUNDLE: the output of `hllm-creator publish`)",
    "speed.full_inference": "a trained model (--model: `hllm-creator train --preset cpu`)",
    "quality.recommendation": "the `bench` extra and ~1 h of tuning: `make bench-rec [MODEL=M]`",
    "quality.cold_start_refit": "a model trained on cold_start's split (--model, --split)",
    "quality.cold_item_space": "2-3 min of CPU alone (the frozen Item LLM over the catalog, layers 2-8)",
    "quality.audience_fit_split": "a generate run (--data, --clusters, --creatives)",
    "quality.audience_rules": "a trained model and a cluster run (--model, --data, --clusters)",
    "quality.personalization_bound": "a match run (--data, --clusters, --matches)",
    "quality.personalization_sweep": "a trained model and an embed run (--model, --data, --embed)",
}
# modules the benchmarks use, not benchmarks themselves
TOOLS = {
    "quality.rec_rankers": "the rankers and protocol of quality.recommendation",
    "quality.feed_holdout": "a held-out ad feed from a dataset, for the refresh demo and cold_start",
    "quality.rec_report": "one MLflow run `recommendation` with the recorded warm and cold tables",
}

BENCHMARKS: tuple[Bench, ...] = (
    Bench("speed.embed_scaling", (), headline=lambda d: f"{d['users_per_shard_max']:,} users per 30-min shard "
          f"({d['users_per_s_per_pod']} users/s per pod, from the recorded embed_cache run)"),
    Bench("speed.grounding_gate", ("--n", "300", "--reps", "3"),
          headline=lambda d: f"originals pass {d['originals_pass']}/{d['ads']}; "
          f"warm gate p50 {d['warm_ms']['p50']} ms"),
    Bench("speed.kmeans", ("--n", "20000", "--niter", "10"),
          headline=lambda d: f"faiss {d['results']['faiss']['seconds']} s vs sklearn KMeans "
          f"{d['results']['sklearn_kmeans']['seconds']} s (x{d['speedup_faiss_vs_sklearn_kmeans']}), 20k x 256"),
    Bench("speed.batched_generation", ("--batch", "8", "--max-new-tokens", "16"),
          headline=lambda d: f"batched vs sequential tokens/s x{d[d['best']]['speedup_tokens_per_s']} ({d['best']}, "
          "batch 8)"),
    Bench("speed.embed_cache", ("--max-users", "1000", "--naive-sample", "50"),
          headline=lambda d: f"item cache vs naive users/s x{d['speedup_cold']} cold, x{d['speedup_warm']} warm "
          f"({d['users']} users)"),
    Bench("speed.cluster_vs_user_generation", ("--users", "500", "--k", "8", "--sample", "8"),
          headline=lambda d: f"{d['generations_ratio']}x fewer generations, {d['wall_time_ratio']}x less time "
          f"({d['users']} users, K={d['k']})"),
    Bench("speed.llm_server", ("--max-tokens", "32"),
          headline=lambda d: f"8 concurrent vs one at a time tokens/s x{d['ratio_pooled']}"),
    Bench("speed.creative_batching", ("--requests", "32", "--concurrency", "16"),
          headline=lambda d: _speedup(d, "tokens_per_s_speedup", "micro-batching tokens/s")),
    Bench("speed.predictor_load", ("--seconds", "4"),
          headline=lambda d: "; ".join(f"{k} x{v}" for k, v in d.items() if k.startswith("speedup"))),
    Bench("speed.construct_throughput", ("--ads", "2"),
          headline=lambda d: _speedup(d, "speedup_rows_per_s", "concurrency 8 vs 1 rows/s")),
    Bench("speed.cb_probe", ("--n", "8", "--rounds", "1", "--max-new", "16"),
          headline=lambda d: "tokens/s: ours static {} / token-level {} / HF generate {} / transformers "
          "generate_batch {}".format(*(d[k][0]["tokens_per_s"] for k in (
              "ours_static", "ours_token_level", "hf_generate_left_padded", "transformers_generate_batch")))),
    # without a model: the split and the content baselines only (--model M adds the HLLM rows: hours)
    Bench("quality.cold_start", ("--no-mlflow", "--bootstrap", "200"), out="cold_start_baselines.json",
          headline=lambda d: "audience Recall@100 of {} held-out ads: {}".format(d["n_ads"], ", ".join(
              f"{k} {v['recall@100']['mean']:.3f}" for k, v in d["rankers"].items()))),
    Bench("gpu.gpu_check", (), needs="a CUDA GPU (benchmarks/gpu/gpu_check.sh on a lent GPU)", runs_if=_cuda,
          out="gpu_check.json",
          headline=lambda d: ", ".join(f"{k}: {'ok' if 'error' not in v and 'skipped' not in v else 'not ok'}"
                                       for k, v in d["parts"].items())),
    *(Bench(m, needs=why) for m, why in NEEDS.items()),
    *(Bench(m, tool=what) for m, what in TOOLS.items()),
)


def run_one(b: Bench, results: Path, timeout: float) -> dict:
    skip = b.skip_reason()
    if skip:
        return {"benchmark": b.module, "result": skip, "seconds": None, "ok": None}
    logs = results / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{b.name}.log"
    out = results / (b.out or f"{b.name}.json")
    out.unlink(missing_ok=True)
    args = list(b.args) + (["--out", str(out)] if b.out else [])
    cmd = [sys.executable, "-m", f"benchmarks.{b.module}", *args]
    env = {**os.environ, "HLLM_BENCH_RESULTS": str(results)}
    print(f"[bench] {b.module} {' '.join(args)}", flush=True)
    t0 = time.time()
    with log.open("w") as fh:
        # its own process group: on a timeout the servers it started go down with it
        p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            rc = None
    secs = round(time.time() - t0, 1)
    if rc != 0:
        why = f"timed out after {timeout:.0f} s" if rc is None else f"exit {rc}"
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        return {"benchmark": b.module, "result": f"FAILED ({why}): {tail[0][:160]} (log: {log})", "seconds": secs,
                "ok": False}
    try:
        result = b.headline(json.loads(out.read_text())) if b.headline else "ok"
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        result = f"ok (no headline: {type(e).__name__} {e}; see {out})"
    return {"benchmark": b.module, "result": result, "seconds": secs, "ok": True}


def table(rows: list[dict]) -> str:
    lines = ["| benchmark | result | seconds |", "|---|---|---|"]
    lines += [f"| {r['benchmark']} | {r['result']} | {'' if r['seconds'] is None else r['seconds']} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma list of benchmark names (e.g. kmeans,grounding_gate)")
    ap.add_argument("--timeout", type=float, default=420.0, help="seconds per benchmark before it counts as failed")
    ap.add_argument("--results", default=os.environ.get("HLLM_BENCH_RESULTS") or str(ROOT / ".hllm" / "bench"),
                    help="where the runs write their JSON and logs (default .hllm/bench)")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and what each needs, run nothing")
    a = ap.parse_args(argv)
    chosen = list(BENCHMARKS)
    if a.only:
        names = {n.strip() for n in a.only.split(",") if n.strip()}
        unknown = names - {b.name for b in BENCHMARKS}
        if unknown:
            ap.error(f"--only: no benchmark named {', '.join(sorted(unknown))} "
                     f"(known: {', '.join(b.name for b in BENCHMARKS)})")
        chosen = [b for b in BENCHMARKS if b.name in names]
    if a.list:
        for b in chosen:
            print(f"{b.module:34s} {b.skip_reason() or ' '.join(b.args) or '(no arguments)'}")
        return 0
    results = Path(a.results).resolve()
    results.mkdir(parents=True, exist_ok=True)
    t0, load0 = time.time(), os.getloadavg()[0]
    rows = [run_one(b, results, a.timeout) for b in chosen]
    summary = {"wall_s": round(time.time() - t0, 1), "loadavg_1m_start": round(load0, 2),
               "loadavg_1m_end": round(os.getloadavg()[0], 2), "cpu_count": os.cpu_count(), "rows": rows}
    (results / "bench.json").write_text(json.dumps(summary, indent=2) + "\n")
    print()
    print(table(rows))
    print(f"\nwall {summary['wall_s']} s on {os.cpu_count()} CPUs, 1-min load {summary['loadavg_1m_start']} -> "
          f"{summary['loadavg_1m_end']} (other jobs count: figures of a shared machine are not comparable); "
          f"JSON and logs in {results}")
    return 1 if any(r["ok"] is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
