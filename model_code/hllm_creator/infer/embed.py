"""User embeddings for all users (paper, Inference step 1), batched, with an item-embedding cache.

- History: ``no-test`` (default) = every click except the user's test target (the last click, as
  in :func:`hllm_creator.data.leave_last_out`), so offline evaluation on the test target stays
  honest; users with fewer than 3 clicks have no held-out target and keep all clicks. ``all`` =
  every click (production: the freshest profile). Only clicks (label 1) count, oldest first; the
  model keeps the last ``max_history`` of them. Users with no click at all get no embedding and
  are counted in ``embed_meta.json``.
- Items: each distinct item text is encoded ONCE per model (:class:`ItemCache`, keyed by text and
  ``model_hash``, persisted on disk) and its vector reused across users and shards.
- Shards: ``shard=(i, n)`` keeps users whose ``sha256(user_id) mod n == i``: deterministic,
  independent of row order, balanced; :func:`merge_shards` checks that all n shards of the same
  model are there with no user twice, and writes one ``user_embeddings.parquet``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from hllm_creator import tracking
from hllm_creator.config import StepConfig
from hllm_creator.data import load_dataset
from hllm_creator.data.schema import DataError
from hllm_creator.data.split import user_sequences
from hllm_creator.data.text import item_text
from hllm_creator.infer.common import USER_EMBEDDINGS, embeddings_frame, read_embeddings, read_json
from hllm_creator.infer.item_cache import ItemCache, cache_key
from hllm_creator.io import write_json, write_parquet

log = logging.getLogger(__name__)
EMBED_META = "embed_meta.json"


class EmbedConfig(StepConfig):
    """Config of ``hllm-creator embed``."""

    model_dir: str
    data_dir: str
    shard_index: int = Field(0, ge=0)
    shard_count: int = Field(1, ge=1)
    batch_size: int = Field(64, ge=1, description="Users per User-LLM forward.")
    item_batch_size: int = Field(32, ge=1, description="Items per Item-LLM forward.")
    history: Literal["no-test", "all"] = Field("no-test", description="no-test: all clicks except the test target "
                                               "(last click; users with < 3 clicks keep all); all: every click.")
    item_cache: str | None = Field(None, description="Item-embedding cache parquet (keyed by item text + model "
                                   "hash). Default: <cache dir>/item_cache/<model_hash>.parquet.")
    max_users: int | None = Field(None, ge=1, description="Only the first N users of the shard (smoke runs).")
    seed_from_model_dir: bool = Field(True, description="Seed the item cache with the model dir's "
                                      "item_embeddings.parquet (the frozen item vectors training used) when "
                                      "its model_hash matches.")
    bf16: bool = Field(False, description="bf16 autocast for the Item/User LLMs (about 2-4x faster on AMX "
                                          "CPUs/GPUs; embeddings differ slightly from fp32, so the item "
                                          "cache key includes the precision).")

    @model_validator(mode="after")
    def _shard(self):
        if self.shard_index >= self.shard_count:
            raise ValueError(f"shard index {self.shard_index} must be < shard count {self.shard_count}")
        return self

    @field_validator("model_dir", "data_dir")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v:
            raise ValueError("must not be empty")
        return v


def parse_shard(spec: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n."""
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise DataError(f"--shard must look like i/n (e.g. 0/4), got {spec!r}") from None
    if n < 1 or not 0 <= i < n:
        raise DataError(f"--shard {spec!r}: need 0 <= i < n and n >= 1")
    return i, n


def shard_of(user_id: str, n: int) -> int:
    return int(hashlib.sha256(str(user_id).encode()).hexdigest()[:15], 16) % n


def histories(interactions: pd.DataFrame, mode: str = "no-test") -> pd.Series:
    """user_id -> clicked item_ids (oldest first) per the history mode (see module docstring)."""
    if mode not in ("no-test", "all"):
        raise DataError(f"unknown history mode {mode!r} (no-test | all)")
    seqs = user_sequences(interactions)
    if mode == "all":
        return seqs
    return seqs.map(lambda s: s[:-1] if len(s) >= 3 else s)


def load_model(model_dir: str | Path):
    """``HLLMCreator.load`` with a clear error for a missing dir."""
    p = Path(model_dir)
    if not p.is_dir():
        raise DataError("model dir does not exist (output of `hllm-creator train`)", file=str(p))
    from hllm_creator.model import HLLMCreator  # torch at import: the CLI and the light paths never load it

    return HLLMCreator.load(p, device="cpu")


def _encoder(model, batch_size: int, bf16: bool = False):
    import torch

    def enc(texts: list[str]) -> np.ndarray:
        kw = {"autocast_bf16": True} if bf16 else {}
        with torch.inference_mode():
            return model.encode_items(texts, batch_size=batch_size, **kw).float().cpu().numpy()

    return enc


def max_history(model) -> int | None:
    cfg = getattr(model, "cfg", None)
    return getattr(cfg, "max_history", None) or getattr(model, "max_history", None)


def cache_id(model, bf16: bool = False) -> str:
    """The item-cache key prefix: the model hash (+ ``-bf16`` for bf16-encoded items)."""
    return f"{model.model_hash}-bf16" if bf16 else model.model_hash


def frozen_item_embeddings(model, model_dir: str | Path | None) -> pd.DataFrame | None:
    """The model dir's ``item_embeddings.parquet`` (item_id, embedding; written by train with the frozen
    Item LLM) when ``item_embeddings.json`` names this model's hash; None when absent, stale or broken
    (an optional cache: skipped, not fatal)."""
    if not model_dir:
        return None
    d = Path(model_dir)
    f, j = d / "item_embeddings.parquet", d / "item_embeddings.json"
    if not (f.exists() and j.exists()):
        return None
    try:
        if json.loads(j.read_text()).get("model_hash") != model.model_hash:
            log.info("item_embeddings.parquet in %s is for another model hash: not used", d)
            return None
        return pd.read_parquet(f)
    except Exception as e:  # noqa: BLE001  (a broken optional cache is skipped, not fatal)
        log.warning("cannot read %s (%s): not used", f, e)
        return None


def seed_cache(cache, model, model_dir: str | Path, items: pd.DataFrame) -> int:
    """Put ``frozen_item_embeddings`` into ``cache`` under each item's text. Returns how many entries
    were added (0 when absent, stale or of another dim)."""
    df = frozen_item_embeddings(model, model_dir)
    if df is None:
        return 0
    texts = item_texts(items)
    added = 0
    for iid, v in zip(df["item_id"], df["embedding"]):
        t = texts.get(iid)
        if t is None or len(v) != model.item_hidden_size:
            continue
        k = cache_key(cache.model_hash, t)
        if k not in cache._mem:
            cache._mem[k] = np.asarray(v, dtype=np.float32)
            added += 1
    return added


def item_texts(items: pd.DataFrame) -> dict[str, str]:
    return {r["item_id"]: item_text(r) for r in items.to_dict("records")}


def embed_users(model, items: pd.DataFrame, hist: pd.Series, *, batch_size: int = 64,
                item_batch_size: int = 32, cache=None, progress: bool = True,
                bf16: bool = False) -> tuple[list[str], np.ndarray]:
    """Embed the users of ``hist`` (user_id -> item ids): items via the cache, users batched."""
    import torch
    from tqdm.auto import tqdm

    cache = cache if cache is not None else ItemCache(cache_id(model, bf16), persist=False)
    max_hist = max_history(model)
    users = sorted(hist.index.tolist())
    seqs = [list(hist[u])[-max_hist:] if max_hist else list(hist[u]) for u in users]
    texts = item_texts(items)
    needed = sorted({i for s in seqs for i in s})
    unknown = [i for i in needed if i not in texts]
    if unknown:
        raise DataError(f"{len(unknown)} clicked item(s) missing from items, e.g. {unknown[0]!r}",
                        file="items.parquet", column="item_id")
    mat = cache.get([texts[i] for i in needed], _encoder(model, item_batch_size, bf16),
                    batch_size=item_batch_size, progress=progress)
    row = {iid: k for k, iid in enumerate(needed)}
    mat_t = torch.from_numpy(mat)
    out = []
    with torch.inference_mode(), tqdm(total=len(users), desc="embed users", unit="user",
                                      disable=not progress) as bar:
        for s in range(0, len(users), batch_size):
            batch = [mat_t[[row[i] for i in seq]] for seq in seqs[s:s + batch_size]]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out.append(model.encode_users(batch, batch_size=len(batch)).float().cpu().numpy())
            bar.update(len(batch))
    emb = np.concatenate(out).astype(np.float32) if out else np.zeros((0, model.user_hidden_size), np.float32)
    return users, emb


def embed_users_naive(model, items: pd.DataFrame, hist: pd.Series, *, item_batch_size: int = 32,
                      progress: bool = True) -> tuple[list[str], np.ndarray]:
    """The baseline the cache is measured against: per user, encode its history items, then the user."""
    import torch
    from tqdm.auto import tqdm

    max_hist = max_history(model)
    texts = item_texts(items)
    users = sorted(hist.index.tolist())
    out = []
    with torch.inference_mode():
        for u in tqdm(users, desc="embed users (naive)", unit="user", disable=not progress):
            seq = list(hist[u])[-max_hist:] if max_hist else list(hist[u])
            ie = model.encode_items([texts[i] for i in seq], batch_size=item_batch_size)
            out.append(model.encode_users([ie]).float().cpu().numpy())
    return users, np.concatenate(out).astype(np.float32)


def run(cfg: EmbedConfig, out: str | Path, *, progress: bool = True, model=None) -> dict:
    """The step: load model + data, embed this shard's users, write user_embeddings.parquet + meta."""
    t0 = time.time()
    ds = load_dataset(cfg.data_dir)
    model = model if model is not None else load_model(cfg.model_dir)
    hist = histories(ds.interactions, cfg.history)
    all_users = int(ds.interactions["user_id"].nunique())
    no_clicks = all_users - len(hist)
    keep = [u for u in hist.index if shard_of(u, cfg.shard_count) == cfg.shard_index]
    hist = hist.loc[sorted(keep)]
    if cfg.max_users:
        hist = hist.iloc[:cfg.max_users]
    cache = ItemCache(cache_id(model, cfg.bf16), cfg.item_cache)
    seeded = seed_cache(cache, model, cfg.model_dir, ds.items) if cfg.seed_from_model_dir else 0
    cached_before = len(cache)
    with tracking.step_run("embed", cfg):
        t1 = time.time()
        users, emb = embed_users(model, ds.items, hist, batch_size=cfg.batch_size,
                                 item_batch_size=cfg.item_batch_size, cache=cache, progress=progress,
                                 bf16=cfg.bf16)
        secs = time.time() - t1
        out = Path(out)
        write_parquet(embeddings_frame(users, emb), out / USER_EMBEDDINGS)
        meta = {"model_hash": model.model_hash, "model_dir": str(cfg.model_dir), "dataset": ds.name,
                "dataset_sha256": ds.manifest.get("sha256", {}), "history": cfg.history, "bf16": cfg.bf16,
                "shard_index": cfg.shard_index, "shard_count": cfg.shard_count, "users": len(users),
                "users_without_clicks": int(no_clicks), "dim": int(emb.shape[1]) if len(emb) else 0,
                "items_encoded": cache.misses, "items_from_cache": cache.hits,
                "item_cache": str(cache.path), "item_cache_entries_before": cached_before,
                "seeded_from_model_dir": seeded,
                "embed_seconds": round(secs, 2), "total_seconds": round(time.time() - t0, 2),
                "users_per_second": round(len(users) / max(secs, 1e-9), 2)}
        write_json(meta, out / EMBED_META)
        tracking.log_metrics({k: meta[k] for k in ("users", "users_without_clicks", "items_encoded",
                                                   "items_from_cache", "embed_seconds", "users_per_second")})
    return meta


def merge_shards(shard_dirs: list[str | Path], out: str | Path) -> dict:
    """Merge shard outputs (each a dir with user_embeddings.parquet + embed_meta.json) into one."""
    if not shard_dirs:
        raise DataError("merge: no shard dirs given")
    metas, ids, embs = [], [], []
    for d in shard_dirs:
        d = Path(d)
        if not (d / EMBED_META).exists():
            raise DataError(f"{EMBED_META} missing: not an embed output dir", file=str(d / EMBED_META))
        metas.append(read_json(d / EMBED_META))
        if metas[-1].get("users") == 0:
            continue  # an empty shard (fewer users than shards) is fine
        i, e = read_embeddings(d / USER_EMBEDDINGS)
        ids += i
        embs.append(e)
    counts = {m["shard_count"] for m in metas}
    hashes = {m["model_hash"] for m in metas}
    modes = {m["history"] for m in metas}
    if len(hashes) > 1 or len(counts) > 1 or len(modes) > 1:
        raise DataError(f"merge: shards disagree (model_hash {sorted(hashes)}, shard_count {sorted(counts)}, "
                        f"history {sorted(modes)})")
    n = counts.pop()
    got = sorted(m["shard_index"] for m in metas)
    if got != list(range(n)):
        raise DataError(f"merge: expected shards 0..{n - 1} once each, got {got}")
    if not embs:
        raise DataError("merge: every shard is empty (no users with clicks)")
    dims = {e.shape[1] for e in embs}
    if len(dims) > 1:
        raise DataError(f"merge: shards have different embedding dims {sorted(dims)}")
    emb = np.concatenate(embs)
    order = np.argsort(np.asarray(ids, dtype=object), kind="stable")
    ids = [ids[k] for k in order]
    if len(set(ids)) != len(ids):
        dup = next(u for a, u in zip(ids, ids[1:]) if a == u)
        raise DataError(f"merge: user {dup!r} appears in more than one shard")
    out = Path(out)
    write_parquet(embeddings_frame(ids, emb[order]), out / USER_EMBEDDINGS)
    meta = {**{k: metas[0][k] for k in ("model_hash", "history", "dataset")}, "shard_index": 0,
            "shard_count": 1, "merged_from": n, "users": len(ids), "dim": int(emb.shape[1]),
            "users_without_clicks": metas[0].get("users_without_clicks", 0),
            "embed_seconds": round(sum(m["embed_seconds"] for m in metas), 2)}
    write_json(meta, out / EMBED_META)
    return meta
