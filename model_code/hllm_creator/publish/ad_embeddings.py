"""The bundle's precomputed item (ad) embeddings: computed upstream, read by serving without encoding.

Three files in the bundle's ``artifacts/``:

- ``item_embeddings.npy``: float32 [n, d], one row per catalog item (the Item LLM's vector of
  ``data.text.item_text(item)``, fp32, as match scores ads);
- ``item_embeddings.parquet``: (item_id, text_sha256) in row order: which item each row is, and the
  text it was computed from (a changed text is a stale row, never served);
- ``item_embeddings.json``: ``model_hash`` (the model the vectors belong to), dim, count, seconds,
  and how many rows were reused vs encoded.

Where the vectors come from, cheapest first: an earlier bundle's rows (a refresh: old ads are never
re-encoded), the model dir's ``item_embeddings.parquet`` (the frozen Item LLM's vectors training
computed), the item cache that embed/match filled (``infer.item_cache``), and only then the Item LLM.
Serving memory-maps the ``.npy``: start time does not grow with the rows, resident memory grows as
rows are touched (docs/serving.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

EMB_NPY = "item_embeddings.npy"
EMB_INDEX = "item_embeddings.parquet"
EMB_META = "item_embeddings.json"
EMB_FILES = (EMB_NPY, EMB_INDEX, EMB_META)


def text_sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class EmbeddingTable:
    """item_id -> row of a float32 matrix (memory-mapped), for one model hash."""

    def __init__(self, ids: list[str], shas: list[str], matrix: np.ndarray, meta: dict):
        self.ids, self.shas, self.matrix, self.meta = ids, shas, matrix, meta
        self.row = {i: k for k, i in enumerate(ids)}
        self.model_hash = str(meta.get("model_hash") or "")

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.row

    def rows(self, item_ids) -> np.ndarray:
        return np.asarray(self.matrix[[self.row[i] for i in item_ids]], dtype=np.float32)


def read_table(art: str | Path, *, mmap: bool = True) -> EmbeddingTable | None:
    """The table in ``art`` (a bundle's artifacts dir), or None when the files are absent.
    Raises ValueError naming the file when they disagree with each other."""
    art = Path(art)
    if not all((art / f).exists() for f in EMB_FILES):
        return None
    meta = json.loads((art / EMB_META).read_text())
    idx = pd.read_parquet(art / EMB_INDEX)
    mat = np.load(art / EMB_NPY, mmap_mode="r" if mmap else None)
    if mat.ndim != 2 or mat.shape[0] != len(idx) or mat.dtype != np.float32:
        raise ValueError(f"{art / EMB_NPY}: shape {mat.shape} {mat.dtype}, expected [{len(idx)}, d] float32 "
                         f"(rows of {art / EMB_INDEX})")
    return EmbeddingTable(idx["item_id"].astype(str).tolist(), idx["text_sha256"].astype(str).tolist(), mat, meta)


def write_item_embeddings(model, items: pd.DataFrame, out_dir: str | Path, *, model_dir: str | Path | None = None,
                          reuse: list[str | Path] = (), item_cache: str | Path | None = None,
                          progress: bool = False) -> dict:
    """Write the three files for every row of ``items`` into ``out_dir``; returns the meta.

    ``reuse``: artifacts dirs of earlier bundles whose rows (same model hash, same text) are copied;
    ``model_dir``: its training-time item_embeddings.parquet seeds the cache; ``item_cache``: the item
    cache file (default: the model's, under the cache dir). Only what none of them has is encoded."""
    from hllm_creator.infer.embed import _encoder, item_texts, seed_cache
    from hllm_creator.infer.item_cache import ItemCache, cache_key
    from hllm_creator.io import atomic_path, write_json, write_parquet

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
