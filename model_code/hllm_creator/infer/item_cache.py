"""An on-disk cache of item embeddings, keyed by (model hash, item text).

Every item is encoded by the Item LLM once per model and reused across users, shards, match and
serving. The key is ``sha256(model_hash + NUL + item_text)``, so a new model or a changed item
text (hllm_creator.data.text.item_text decides what the Item LLM reads) never hits a stale entry.

Storage: one parquet file (key str, embedding list<float32>), default
``<cache_dir>/item_cache/<model_hash>.parquet`` (``$HLLM_CACHE``, else ``~/.cache/hllm-creator``).
Saves are atomic and merge with what another process (a parallel shard) saved meanwhile.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from hllm_creator.data.schema import DataError
from hllm_creator.io import write_parquet
from hllm_creator.paths import cache_dir

log = logging.getLogger(__name__)


def cache_key(model_hash: str, text: str) -> str:
    return hashlib.sha256(f"{model_hash}\x00{text}".encode()).hexdigest()


def default_path(model_hash: str) -> Path:
    return cache_dir() / "item_cache" / f"{model_hash}.parquet"


class ItemCache:
    """``get(texts, encode)`` returns [n, d] float32, encoding only the texts not cached yet."""

    def __init__(self, model_hash: str, path: str | Path | None = None, *, persist: bool = True):
        if not model_hash:
            raise ValueError("ItemCache needs a non-empty model_hash")
        self.model_hash = model_hash
        self.path = Path(path) if path is not None else default_path(model_hash)
        self.persist = persist
        self._mem: dict[str, np.ndarray] = {}
        self.hits = 0
        self.misses = 0
        if persist and self.path.exists():
            self._mem.update(self._read(self.path))

    @staticmethod
    def _read(path: Path) -> dict[str, np.ndarray]:
        try:
            df = pd.read_parquet(path)
        except Exception as e:  # noqa: BLE001  (pyarrow raises several kinds for a file that is not parquet)
            raise DataError(f"item cache is not a readable parquet file ({e}); delete it to rebuild",
                            file=str(path)) from None
        for col in ("key", "embedding"):
            if col not in df.columns:
                raise DataError(f"item cache lacks column {col!r}; delete it to rebuild", file=str(path),
                                column=col)
        return {k: np.asarray(v, dtype=np.float32) for k, v in zip(df["key"], df["embedding"])}

    def __len__(self) -> int:
        return len(self._mem)

    def get(self, texts: Sequence[str], encode: Callable[[list[str]], np.ndarray], *,
            batch_size: int = 32, progress: bool = True, desc: str = "items") -> np.ndarray:
        """Embeddings for ``texts`` (in order); the missing ones are encoded in batches and cached."""
        from tqdm.auto import tqdm

        keys = [cache_key(self.model_hash, t) for t in texts]
        missing: dict[str, str] = {}
        for k, t in zip(keys, texts):
            if k not in self._mem and k not in missing:
                missing[k] = t
        self.misses += len(missing)
        self.hits += len(set(keys)) - len(missing)
        if missing:
            mk, mt = list(missing), list(missing.values())
            with tqdm(total=len(mt), desc=f"encode {desc}", unit="item", disable=not progress) as bar:
                for s in range(0, len(mt), batch_size):
                    emb = np.asarray(encode(mt[s:s + batch_size]), dtype=np.float32)
                    if emb.shape[0] != len(mt[s:s + batch_size]):
                        raise RuntimeError(f"encoder returned {emb.shape[0]} rows for "
                                           f"{len(mt[s:s + batch_size])} texts")
                    for k, e in zip(mk[s:s + batch_size], emb):
                        self._mem[k] = e
                    bar.update(len(emb))
            if self.persist:
                self.save()
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self._mem[k] for k in keys]).astype(np.float32)

    def save(self) -> Path:
        if self.path.exists():  # merge what a parallel process saved meanwhile
            for k, v in self._read(self.path).items():
                self._mem.setdefault(k, v)
        keys = sorted(self._mem)
        write_parquet(pd.DataFrame({"key": keys, "embedding": [self._mem[k] for k in keys]}), self.path)
        log.info("item cache: %d entries -> %s", len(keys), self.path)
        return self.path
