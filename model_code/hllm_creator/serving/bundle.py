"""The serving bundle as a server reads it: its layout, its manifest and its item embeddings.

A bundle is one directory that ``hllm-creator serve predictor|creative`` loads with no other
argument (``--model-dir BUNDLE`` or ``--model-uri models:/hllm-creator@champion``)::

    BUNDLE/
      bundle.json        the manifest (BUNDLE_SCHEMA): run ids, dataset + config hashes, the GSB and
                         personalization figures, sha256 and size of every file
      model/             the trained model dir (hllm-creator train)
      artifacts/         centroids.npy, cluster_meta.json, member_means.npy, medoids.npy,
                         matches.parquet (+ member_id_parts.npy for a hybrid predictor),
                         creatives.parquet (+ their *_meta.json) and items.parquet
                         (the item catalog of the run's dataset)

The precomputed item (ad) embeddings are three files in ``artifacts/``, computed upstream
(``publish.ad_embeddings``) and read here without encoding:

- ``item_embeddings.npy``: float32 [n, d], one row per catalog item (the Item LLM's vector of
  ``data.text.item_text(item)``, fp32, as match scores ads);
- ``item_embeddings.parquet``: (item_id, text_sha256) in row order: which item each row is, and the
  text it was computed from (a changed text is a stale row, never served);
- ``item_embeddings.json``: ``model_hash`` (the model the vectors belong to), dim, count, seconds,
  and how many rows were reused vs encoded.

Serving memory-maps the ``.npy``: start time does not grow with the rows, resident memory grows as
rows are touched (docs/serving.md). Assembling, checking and registering a bundle is ``publish``'s.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from hllm_creator.io import sha256_file

BUNDLE_SCHEMA = "hllm-creator-bundle/1"
MANIFEST = "bundle.json"
MODEL = "model"
ARTIFACTS = "artifacts"
ITEMS = "items.parquet"


class BundleError(ValueError):
    """A bundle that cannot be assembled or loaded; the message names the file and the place."""


def is_bundle(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_manifest(path: str | Path) -> dict:
    f = Path(path) / MANIFEST
    try:
        m = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise BundleError(f"{f}: not a readable bundle manifest ({e})") from None
    if m.get("schema") != BUNDLE_SCHEMA:
        raise BundleError(f"{f}: schema {m.get('schema')!r}, expected {BUNDLE_SCHEMA!r}")
    return m


def bundle_paths(bundle: str | Path) -> tuple[Path, Path, Path]:
    """(model dir, artifacts dir, items.parquet) of a bundle; each checked to exist."""
    b = Path(bundle)
    read_manifest(b)
    model, art, items = b / MODEL, b / ARTIFACTS, b / ARTIFACTS / ITEMS
    for p in (model, art, items):
        if not p.exists():
            raise BundleError(f"bundle {b}: {p.relative_to(b)} is missing")
    return model, art, items


def verify_bundle(bundle: str | Path) -> list[str]:
    """Files whose sha256 or size differs from the manifest (or are missing): empty when intact."""
    b = Path(bundle)
    m = read_manifest(b)
    bad = []
    for rel, meta in m.get("files", {}).items():
        p = b / rel
        if not p.is_file():
            bad.append(f"{rel}: missing")
        elif p.stat().st_size != meta["bytes"] or sha256_file(p) != meta["sha256"]:
            bad.append(f"{rel}: content differs from the manifest")
    return bad


# ---- the precomputed item embeddings ----------------------------------------------------------
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
    import pandas as pd

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
