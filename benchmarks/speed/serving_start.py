"""How a predictor server's start time and memory grow with the number of ads.

For a published bundle: start ``hllm-creator serve predictor --model-dir BUNDLE`` as a subprocess,
time it until ``/v2/health/ready`` answers, read its resident memory (VmRSS, VmHWM) when ready and
after one request, and the time of that first request. Variants:

- ``bundle``: the bundle as published (item embeddings precomputed, memory-mapped at load);
- ``no-embeddings``: the same bundle without ``item_embeddings.*`` (the
  server then encodes every catalog item the machine's item cache lacks before it turns ready);
- ``synthetic-N``: the bundle plus N synthetic catalog items (unique ids and titles made from the real
  titles' words, random unit rows of the model's dim as their precomputed vectors: the Item LLM is
  never run for them, which is the point): how start and memory grow with the catalog.

Copies share the model files with the bundle (hard links). Usage::

    python -m benchmarks.speed.serving_start BUNDLE --synthetic 100000 --out benchmarks/results/serving_start.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd


def rss_mb(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            out[k] = round(int(v.split()[0]) / 1024, 1)
    return out


def copy_bundle(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    for p in sorted(src.rglob("*")):
        if p.is_file():
            q = dst / p.relative_to(src)
            q.parent.mkdir(parents=True, exist_ok=True)
            os.link(p, q)


def add_synthetic(b: Path, n: int, seed: int = 0) -> None:
    """``n`` synthetic items appended to the catalog and to the precomputed embedding table."""
    from hllm_creator.data.text import item_text
    from hllm_creator.serving.bundle import EMB_INDEX, EMB_META, EMB_NPY, text_sha

    art = b / "artifacts"
    items = pd.read_parquet(art / "items.parquet")
    rng = np.random.default_rng(seed)
    words = np.array(" ".join(items["title"].astype(str)).split())
    pick = rng.integers(0, len(words), size=(n, 8))
    titles = [" ".join(words[row]) + f" S{k}" for k, row in enumerate(pick)]
    syn = pd.DataFrame({"item_id": [f"SYN{k:07d}" for k in range(n)], "title": titles, "description": "",
                        "brand": None, "categories": [["Synthetic"]] * n, "selling_points": [[]] * n})
    for f in ("items.parquet", EMB_NPY, EMB_INDEX, EMB_META):  # replace the links, never write through them
        (art / f).unlink()
    all_items = pd.concat([items, syn], ignore_index=True)
    all_items.to_parquet(art / "items.parquet", index=False)
    src = b.parent / "_src_meta.json"
    meta = json.loads(src.read_text())
    old = np.load(src.parent / "_src_emb.npy")
    d = old.shape[1]
    rows = rng.standard_normal((n, d)).astype(np.float32)
    rows *= np.linalg.norm(old, axis=1).mean() / np.linalg.norm(rows, axis=1, keepdims=True)
    np.save(art / EMB_NPY, np.concatenate([old, rows]))
    idx = pd.read_parquet(src.parent / "_src_index.parquet")
    shas = [text_sha(item_text(r)) for r in syn.to_dict("records")]
    pd.concat([idx, pd.DataFrame({"item_id": syn["item_id"], "text_sha256": shas})], ignore_index=True).to_parquet(
        art / EMB_INDEX, index=False)
    (art / EMB_META).write_text(json.dumps({**meta, "count": len(all_items), "synthetic": n}))


def measure(bundle: Path, log: Path, ad: str, history: list[str]) -> dict:
    from hllm_creator.process import free_port, stop_process, wait_ready

    port = free_port()
    t0 = time.time()
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "hllm_creator.cli", "serve", "predictor", "--model-dir",
                                 str(bundle), "--host", "127.0.0.1", "--port", str(port)], stdout=f, stderr=f)
    try:
        wait_ready(f"http://127.0.0.1:{port}", lambda: None if proc.poll() is None else
                   f"server exited: {log.read_text()[-2000:]}", interval=0.2)
        ready = time.time() - t0
        mem_ready = rss_mb(proc.pid)
        t1 = time.time()
        r = httpx.post(f"http://127.0.0.1:{port}/v1/models/predictor:predict", timeout=120,
                       json={"instances": [{"user_history": history, "candidate_ad_ids": [ad]}]})
        first = time.time() - t1
        r.raise_for_status()
        return {"ready_s": round(ready, 2), "first_request_s": round(first, 3), "rss_ready_mb": mem_ready["VmRSS"],
                "rss_after_request_mb": rss_mb(proc.pid)["VmRSS"], "peak_rss_mb": rss_mb(proc.pid)["VmHWM"],
                "answer_title": r.json()["predictions"][0]["ads"][0]["title"]}
    finally:
        stop_process(proc)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--synthetic", type=int, nargs="*", default=[100_000])
    ap.add_argument("--work", type=Path, default=Path("/tmp/serving_start"))
    ap.add_argument("--skip-no-embeddings", action="store_true")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    from hllm_creator.serving.bundle import EMB_INDEX, EMB_META, EMB_NPY

    a.work.mkdir(parents=True, exist_ok=True)
    art = a.bundle / "artifacts"
    items = pd.read_parquet(art / "items.parquet")
    cre = pd.read_parquet(art / "creatives.parquet")
    ad = str(cre["item_id"].iloc[0])
    history = [i for i in items["item_id"].astype(str).head(6) if i != ad][:5]
    shutil.copy(art / EMB_META, a.work / "_src_meta.json")
    shutil.copy(art / EMB_NPY, a.work / "_src_emb.npy")
    shutil.copy(art / EMB_INDEX, a.work / "_src_index.parquet")
    res = {"bundle": str(a.bundle), "catalog_items": len(items), "load": os.getloadavg(), "runs": {}}
    b = a.work / "bundle"
    copy_bundle(a.bundle, b)
    res["runs"]["bundle"] = {"items": len(items), **measure(b, a.work / "bundle.log", ad, history)}
    print("bundle", res["runs"]["bundle"], flush=True)
    if not a.skip_no_embeddings:
        for f in (EMB_NPY, EMB_INDEX, EMB_META):
            (b / "artifacts" / f).unlink()
        # the item cache on this machine is left as it is (shared): the log says how many items missed it
        res["runs"]["no-embeddings"] = {"items": len(items), **measure(b, a.work / "noemb.log", ad, history)}
        miss = [ln for ln in (a.work / "noemb.log").read_text().splitlines() if "cache misses" in ln]
        res["runs"]["no-embeddings"]["log"] = miss[-1].split(": ", 1)[-1] if miss else None
        print("no-embeddings", res["runs"]["no-embeddings"], flush=True)
    for n in a.synthetic:
        copy_bundle(a.bundle, b)
        add_synthetic(b, n)
        res["runs"][f"synthetic-{n}"] = {"items": len(items) + n, **measure(b, a.work / f"syn{n}.log", ad, history)}
        print(f"synthetic-{n}", res["runs"][f"synthetic-{n}"], flush=True)
    res["load_after"] = os.getloadavg()
    if a.out:
        a.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
