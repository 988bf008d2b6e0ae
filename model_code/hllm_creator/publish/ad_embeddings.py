"""The bundle's precomputed item (ad) embeddings, computed upstream (the files' format:
``serving.bundle``, which reads them without encoding).

Where the vectors come from, cheapest first: an earlier bundle's rows (a refresh: old ads are never
re-encoded), the model dir's ``item_embeddings.parquet`` (the frozen Item LLM's vectors training
computed), the item cache that embed/match filled (``infer.item_cache``), and only then the Item LLM.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from hllm_creator.infer.embed import _encoder, item_texts, seed_cache
from hllm_creator.infer.item_cache import ItemCache, cache_key
from hllm_creator.io import atomic_path, write_json, write_parquet
from hllm_creator.serving.bundle import EMB_INDEX, EMB_META, EMB_NPY, read_table, text_sha

log = logging.getLogger(__name__)


def write_item_embeddings(model, items: pd.DataFrame, out_dir: str | Path, *, model_dir: str | Path | None = None,
                          reuse: list[str | Path] = (), item_cache: str | Path | None = None,
                          progress: bool = False) -> dict:
    """Write the three files for every row of ``items`` into ``out_dir``; returns the meta.

    ``reuse``: artifacts dirs of earlier bundles whose rows (same model hash, same text) are copied;
    ``model_dir``: its training-time item_embeddings.parquet seeds the cache; ``item_cache``: the item
    cache file (default: the model's, under the cache dir). Only what none of them has is encoded."""

    t0 = time.time()
    out_dir = Path(out_dir)
    cache = ItemCache(model.model_hash, item_cache)
    cache.persist = False  # publish reads the cache, never rewrites it
    texts = item_texts(items)
    ids = [str(i) for i in items["item_id"]]
    reused = 0
    for d in reuse:
        t = read_table(d, mmap=True)
        if t is None or t.model_hash != model.model_hash:
            continue
        for iid, sha, k in zip(t.ids, t.shas, range(len(t))):
            txt = texts.get(iid)
            if txt is not None and text_sha(txt) == sha:
                key = cache_key(cache.model_hash, txt)
                if key not in cache._mem:
                    cache._mem[key] = np.asarray(t.matrix[k], dtype=np.float32)
                reused += 1  # rows (items), not distinct texts: two items may share a text
    seeded = seed_cache(cache, model, model_dir, items) if model_dir is not None else 0
    before = cache.misses
    mat = cache.get([texts[i] for i in ids], _encoder(model, 32), progress=progress, desc="catalog items")
    encoded = cache.misses - before
    mat = np.ascontiguousarray(mat, dtype=np.float32).reshape(len(ids), -1)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / EMB_NPY) as tmp, open(tmp, "wb") as f:
        np.save(f, mat)
    write_parquet(pd.DataFrame({"item_id": ids, "text_sha256": [text_sha(texts[i]) for i in ids]}),
                  out_dir / EMB_INDEX)
    meta = {"model_hash": model.model_hash, "count": len(ids), "dim": int(mat.shape[1]) if len(ids) else 0,
            "dtype": "float32", "text": "hllm_creator.data.text.item_text", "reused_from_bundle": reused,
            "seeded_from_model_dir": seeded, "encoded": int(encoded), "seconds": round(time.time() - t0, 2)}
    write_json(meta, out_dir / EMB_META)
    log.info("item embeddings: %d rows (%d reused, %d from the model dir, %d encoded) in %.1fs", len(ids), reused,
             seeded, encoded, meta["seconds"])
    return meta
