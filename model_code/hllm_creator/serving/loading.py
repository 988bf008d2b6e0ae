"""What the creative and predictor models share: loading (a path or ``models:/...``), the item
catalog and embedding cache, user embedding + cluster assignment (the batcher, the HTTP guards
and ``serve`` are in ``serving.batching`` / ``serving.runtime``).

Inference outputs read from ``--artifacts DIR`` (every file optional except the cluster files):
``centroids.npy`` + ``cluster_meta.json`` (+ ``medoids.npy`` or ``member_means.npy``: what goes in
the user slot for a cluster, as generate used it), ``matches.parquet`` (item_id, cluster_id, score,
rank, selected), ``creatives.parquet`` (item_id, cluster_id, original_title, llm_output, score,
grounded, reasons, and the served ``title`` + ``source``) and, for item ids in
histories, an item catalog ``items.parquet`` (``--items``: a dataset dir or the parquet file;
defaults to ``DIR/items.parquet`` when present).
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hllm_creator.data.text import item_text
from hllm_creator.infer.cluster import assign
from hllm_creator.infer.common import CENTROIDS, CLUSTER_META, CREATIVES, MATCHES, MEDOIDS, MEMBER_MEANS
from hllm_creator.infer.harm import _unit
from hllm_creator.infer.item_cache import ItemCache
from hllm_creator.infer.match import MEMBER_ID_PARTS
from hllm_creator.model import HLLMCreator
from hllm_creator.serving.bundle import EMB_META, bundle_paths, is_bundle, read_manifest, read_table, text_sha
from hllm_creator.serving.schemas import HISTORY_KEPT, looks_like_id
from hllm_creator.tracking import download_registered

log = logging.getLogger(__name__)
TITLE_LRU = 50_000  # free-text history titles kept embedded in memory


# ---- model source ------------------------------------------------------------------------------
def resolve_model_dir(model_dir: str | None = None, model_uri: str | None = None) -> Path:
    """A local model dir, or ``models:/hllm-creator@champion`` downloaded through MLflow.

    Either may be a serving bundle (``hllm_creator.publish``): see :func:`resolve_source`."""
    if bool(model_dir) == bool(model_uri):
        raise ValueError("give exactly one of --model-dir or --model-uri")
    if model_dir:
        p = Path(model_dir).expanduser()
        if not p.is_dir():
            raise ValueError(f"--model-dir {p} is not a directory")
        return p
    if not str(model_uri).startswith(("models:/", "runs:/", "file:", "/")):
        raise ValueError(f"--model-uri {model_uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")

    return Path(download_registered(model_uri))


def resolve_source(model_dir: str | None, model_uri: str | None, artifacts: str | Path | None,
                   items: str | Path | None) -> tuple[Path, str | Path | None, str | Path | None, dict | None]:
    """(model dir, artifacts, items, bundle manifest or None). A serving bundle (a dir with
    ``bundle.json``, local or downloaded from ``models:/...``) supplies its own model, artifacts and
    item catalog; an explicit ``--artifacts``/``--items`` still wins."""
    d = resolve_model_dir(model_dir, model_uri)
    if not is_bundle(d):
        return d, artifacts, items, None
    m_dir, art, cat = bundle_paths(d)
    man = read_manifest(d)
    log.info("serving bundle %s (run %s, dataset %s %s) from %s", man.get("bundle_id"), man.get("mlflow_run_id"),
             man.get("dataset"), man.get("dataset_hash"), model_uri or d)
    return m_dir, artifacts or art, items or cat, man


# ---- assets ------------------------------------------------------------------------------------
@dataclass
class HistoryInfo:
    used: int = 0            # entries that were embedded (after truncation to HISTORY_KEPT)
    unknown_ids: int = 0     # entries that look like ids but are not in the catalog
    titles: int = 0          # entries read as free-text titles


@dataclass
class ServingAssets:
    model: Any                                   # hllm_creator.model.HLLMCreator
    model_dir: Path
    centroids: np.ndarray | None = None          # [K, d] (training space of the clustering)
    slot: np.ndarray | None = None               # [K, d] a cluster in the Creative LLM's slot (as generate)
    score_slot: np.ndarray | None = None         # [K, d] a cluster for the predictor (as match: member means)
    score_id_parts: np.ndarray | None = None     # [K, dP] a cluster's ID part (hybrid predictor; as match)
    cluster_meta: dict = field(default_factory=dict)
    items: dict[str, dict] = field(default_factory=dict)        # item_id -> item row (title, ...)
    creatives: dict[tuple[str, int], dict] = field(default_factory=dict)  # (item, cluster) -> row
    selected: dict[tuple[str, int], dict] = field(default_factory=dict)   # (item, cluster) -> match row
    matched_items: set = field(default_factory=set)
    item_cache: Any = None
    emb_table: Any = None                        # serving.bundle.EmbeddingTable: the bundle's vectors
    _title_lru: OrderedDict = field(default_factory=OrderedDict)

    # -- precomputed item embeddings (a bundle's item_embeddings.npy): looked up by id, never encoded
    def precomputed(self, item_id: str) -> bool:
        return self.emb_table is not None and item_id in self.emb_table

    def scorable(self, item_id: str) -> bool:
        """An ad the predictor may score: in the catalog and, when the bundle carries precomputed
        embeddings, among them (the request path never encodes an ad)."""
        return item_id in self.items and (self.emb_table is None or item_id in self.emb_table)

    def catalog_embeddings(self, item_ids: Sequence[str]) -> np.ndarray:
        """Embeddings of catalog items by id: precomputed rows, else the item cache (encoding misses:
        only history items of a bundle without precomputed rows for them)."""
        d = int(self.model.item_hidden_size)
        out = np.zeros((len(item_ids), d), np.float32)
        pre = [k for k, i in enumerate(item_ids) if self.precomputed(i)]
        rest = [k for k, i in enumerate(item_ids) if not self.precomputed(i)]
        if pre:
            out[pre] = self.emb_table.rows([item_ids[k] for k in pre])
        if rest:
            out[rest] = self.item_embeddings([self.item_text_of(item_ids[k]) for k in rest])
        return out

    # -- item embeddings
    def item_text_of(self, item_id: str) -> str:
        return item_text(self.items[item_id])

    def _encode(self, texts: list[str]) -> np.ndarray:
        import torch

        with torch.no_grad():
            e = self.model.encode_items(list(texts))
        return e.detach().float().cpu().numpy() if hasattr(e, "detach") else np.asarray(e, np.float32)

    def item_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of catalog item texts (ItemCache keyed by (model hash, text); misses encoded in one call)."""
        if not texts:
            return np.zeros((0, int(self.model.item_hidden_size)), np.float32)
        return self.item_cache.get(list(texts), self._encode, batch_size=64, progress=False)

    def title_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of free-text history titles: a bounded LRU (TITLE_LRU entries), misses encoded in one call."""
        d = int(self.model.item_hidden_size)
        if not texts:
            return np.zeros((0, d), np.float32)
        lru = self._title_lru
        missing = list(dict.fromkeys(t for t in texts if t not in lru))
        if missing:
            for t, e in zip(missing, self._encode(missing)):
                lru[t] = e
        out = np.stack([lru[t] for t in texts]).astype(np.float32)
        for t in texts:
            lru.move_to_end(t)
        while len(lru) > TITLE_LRU:
            lru.popitem(last=False)
        return out

    def history_texts(self, history: list[str]) -> tuple[list[tuple[bool, str]], HistoryInfo]:
        """The last HISTORY_KEPT entries -> [(is_catalog_item, item id | title text)]; unknown ids dropped."""

        info = HistoryInfo()
        texts = []
        for e in history[-HISTORY_KEPT:]:
            if e in self.items:
                texts.append((True, e))
            elif looks_like_id(e):
                info.unknown_ids += 1
            else:
                info.titles += 1
                texts.append((False, item_text({"title": e})))
        info.used = len(texts)
        return texts, info

    def user_embeddings(self, histories: list[list[str]], *, content: bool = False):
        """[n, d_user] for the histories with >= 1 usable entry (rows of cold starts are NaN), and the
        infos; ``content``: also [n, d_item], each user's unit mean clicked-item vector (the do-no-harm
        content estimate's audience; NaN rows for cold starts)."""
        import torch

        per, infos = [], []
        for h in histories:
            t, info = self.history_texts(h)
            per.append(t)
            infos.append(info)
        flat = [x for ts in per for x in ts]
        emb = np.zeros((len(flat), int(self.model.item_hidden_size)), np.float32)
        cat = [i for i, (c, _) in enumerate(flat) if c]
        free = [i for i, (c, _) in enumerate(flat) if not c]
        if cat:
            emb[cat] = self.catalog_embeddings([flat[i][1] for i in cat])
        if free:
            emb[free] = self.title_embeddings([flat[i][1] for i in free])
        seqs, rows, o = [], [], 0
        for i, ts in enumerate(per):
            if ts:
                seqs.append(torch.from_numpy(np.ascontiguousarray(emb[o:o + len(ts)])))
                rows.append(i)
            o += len(ts)
        out = np.full((len(histories), int(self.model.user_hidden_size)), np.nan, np.float32)
        if seqs:
            with torch.no_grad():
                u = self.model.encode_users(seqs)
            out[rows] = u.detach().float().cpu().numpy()
        if not content:
            return out, infos

        aud = np.full((len(histories), int(self.model.item_hidden_size)), np.nan, np.float32)
        for r, seq in zip(rows, seqs):
            aud[r] = _unit(_unit(seq.numpy()).mean(axis=0))
        return out, infos, aud

    def assign(self, user_emb: np.ndarray) -> np.ndarray:
        """Nearest cluster per row (the metric of cluster_meta.json); -1 without clusters or for NaN rows."""
        ids = np.full(len(user_emb), -1, np.int64)
        ok = np.isfinite(user_emb).all(axis=1)
        if self.centroids is None or not ok.any():
            return ids

        cid, _ = assign(self.centroids, user_emb[ok], self.cluster_meta)
        ids[ok] = cid
        return ids

    def id_parts(self, histories: Sequence[Sequence[str]], cluster_ids: np.ndarray, mode: Sequence[str]):
        """The hybrid predictor's user-side ID parts [n, dP] per row, as ``conditioning`` picks the
        vector: the cluster's (match's ``member_id_parts.npy``) in mode 'cluster', else the user's own
        last clicks (entries that are not catalog ids add nothing); None without ID embeddings."""
        import torch

        if not getattr(self.model, "predictor_items", None):
            return None
        with torch.inference_mode():
            out = self.model.predictor.recent_part(self.model.recent_index(histories)).float().cpu().numpy()
        for i, (c, m) in enumerate(zip(cluster_ids, mode)):
            if m == "cluster" and c >= 0 and self.score_id_parts is not None and self.score_slot is not None:
                out[i] = self.score_id_parts[c]
        return out

    def conditioning(self, user_emb: np.ndarray, cluster_ids: np.ndarray, mode: Sequence[str],
                     *, for_scoring: bool = False) -> np.ndarray:
        """Per row: the cluster's vector (mode 'cluster') or the user's own embedding. The cluster's
        vector is what the offline step used: match scores member means, generate fills the slot
        with the medoid (``for_scoring`` picks the first)."""
        vec = self.score_slot if for_scoring and self.score_slot is not None else self.slot
        out = user_emb.copy()
        for i, (c, m) in enumerate(zip(cluster_ids, mode)):
            if m == "cluster" and c >= 0 and vec is not None:
                out[i] = vec[c]
        return out


def _emb_table(art: Path, model):
    """The artifacts' precomputed item embeddings for this model, or None when absent; another model's
    hash or dim is an error (the bundle's files disagree), never silently re-embedded."""
    f = _find(art, EMB_META)
    if f is None:
        return None
    t = read_table(f.parent)
    if t is None:
        return None
    if t.model_hash != model.model_hash:
        raise ValueError(f"{f}: item embeddings of model {t.model_hash}, the bundle's model is {model.model_hash}")
    if len(t) and t.matrix.shape[1] != int(model.item_hidden_size):
        raise ValueError(f"{f}: item embeddings have dim {t.matrix.shape[1]}, the model's {model.item_hidden_size}")
    return t


def _stale_rows(a: ServingAssets, table) -> list[str]:
    """Rows whose text hash is not the catalog's text of that item (checked for the ads with
    creatives, i.e. what the predictor answers; the full check runs in ``publish``)."""
    ads = {i for i, _ in a.creatives} | a.matched_items
    return [i for i in ads if i in table and i in a.items
            and table.shas[table.row[i]] != text_sha(a.item_text_of(i))]


def _read_items(path: Path) -> dict[str, dict]:
    import pandas as pd

    f = path / "items.parquet" if path.is_dir() else path
    df = pd.read_parquet(f)
    if "item_id" not in df.columns or "title" not in df.columns:
        raise ValueError(f"{f}: an item catalog needs columns item_id and title")
    keep = [c for c in ("item_id", "title", "description", "brand", "categories", "selling_points") if c in df]
    return {str(r["item_id"]): r for r in df[keep].to_dict("records")}


def _find(art: Path, name: str) -> Path | None:
    """``name`` in the artifacts dir or one level below (one dir per step: cluster/, match/, ...)."""
    if (art / name).exists():
        return art / name
    hits = sorted(art.glob(f"*/{name}"))
    return hits[0] if hits else None


# what a server needs from the inference outputs before it may turn ready (``require``)
REQUIRED_FILES = {"clusters": (CENTROIDS, CLUSTER_META), "matches": (MATCHES,), "creatives": (CREATIVES,)}


def check_required(artifacts: str | Path | None, require: Sequence[str]) -> None:
    """Raise a ValueError naming every required output that is missing and the dirs searched.

    ``require``: keys of REQUIRED_FILES. Files are looked up as :func:`load_assets` does (the dir
    and one level below), so a server never turns ready without them."""
    if not require:
        return
    need = [(k, f) for k in require for f in REQUIRED_FILES[k]]
    if artifacts is None:
        raise ValueError(f"no inference outputs given: this server needs {', '.join(sorted(set(require)))} "
                         f"({', '.join(f for _, f in need)}); pass --artifacts DIR, or serve a bundle "
                         f"(`hllm-creator publish RUN_DIR`, then --model-dir BUNDLE or --model-uri models:/...)")
    art = Path(artifacts)
    if not art.is_dir():
        raise ValueError(f"--artifacts {art} is not a directory")
    missing = [f"{k}: {f}" for k, f in need if _find(art, f) is None]
    if missing:
        looked = [str(art), f"{art}/*/"]
        deeper = sorted({str(p.parent) for _, f in need for p in art.glob(f"*/*/{f}")})[:4]
        hint = (f"; found deeper in {', '.join(deeper)}: a pipeline run dir is not a serving dir, "
                f"assemble one with `hllm-creator publish RUN_DIR`") if deeper else ""
        raise ValueError(f"inference outputs missing ({'; '.join(missing)}); looked in {' and '.join(looked)}{hint}")


def load_assets(model_dir: Path, artifacts: str | Path | None, items: str | Path | None = None,
                device: str = "cpu", require: Sequence[str] = ()) -> ServingAssets:
    """Load the model and the inference outputs; everything checked before the server says ready.

    ``require`` (keys of REQUIRED_FILES): outputs without which loading fails (the server does not
    turn ready) with a message that names what is missing and where it looked."""
    import pandas as pd

    check_required(artifacts, require)
    t0 = time.time()
    model = HLLMCreator.load(model_dir, device=device)
    a = ServingAssets(model=model, model_dir=Path(model_dir))
    cache = ItemCache(model.model_hash, persist=True)  # read what `infer` cached for this model
    cache.persist = False                              # never write parquet on the request path
    a.item_cache = cache
    art = Path(artifacts) if artifacts else None
    if art is not None:
        if not art.is_dir():
            raise ValueError(f"--artifacts {art} is not a directory")
        cents_f = _find(art, CENTROIDS)
        if cents_f is not None:
            meta_f = cents_f.parent / CLUSTER_META
            if not meta_f.exists():
                raise ValueError(f"{cents_f.parent}: centroids.npy without cluster_meta.json (the metric)")
            a.cluster_meta = json.loads(meta_f.read_text())
            a.centroids = np.load(cents_f).astype(np.float32)
            # the slot generate used: the medoid (member nearest the centroid), else the member mean;
            # centroids are in the clustering space (standardized), not the user-embedding space
            med, mm = cents_f.parent / MEDOIDS, cents_f.parent / MEMBER_MEANS
            a.score_slot = (np.load(mm) if mm.exists() else a.centroids).astype(np.float32)
            a.slot = np.load(med).astype(np.float32) if med.exists() else a.score_slot
            if a.centroids.shape[1] != int(model.user_hidden_size):
                raise ValueError(f"centroids have dim {a.centroids.shape[1]} but the model's user "
                                 f"embeddings have {model.user_hidden_size}: artifacts from another model?")
        parts_f = _find(art, MEMBER_ID_PARTS)
        if parts_f is not None and getattr(model, "predictor_items", None):
            a.score_id_parts = np.load(parts_f).astype(np.float32)
            want = (None if a.centroids is None else len(a.centroids), model.predictor.d)
            if a.score_id_parts.ndim != 2 or (want[0] is not None and a.score_id_parts.shape[0] != want[0]) \
                    or a.score_id_parts.shape[1] != want[1]:
                raise ValueError(f"{parts_f}: shape {a.score_id_parts.shape}, expected [{want[0]}, {want[1]}] "
                                 "(clusters x the predictor's dim): outputs of another model or clustering?")
        matches_f = _find(art, MATCHES)
        if matches_f is not None:
            m = pd.read_parquet(matches_f)
            a.matched_items = set(m["item_id"].astype(str))
            for r in m[m["selected"].astype(bool)].to_dict("records"):
                a.selected[(str(r["item_id"]), int(r["cluster_id"]))] = r
        creatives_f = _find(art, CREATIVES)
        if creatives_f is not None:
            c = pd.read_parquet(creatives_f)
            for r in c.to_dict("records"):
                a.creatives[(str(r["item_id"]), int(r["cluster_id"]))] = r
                a.items.setdefault(str(r["item_id"]), {"title": r["original_title"]})
    if not items and art is not None:
        items = _find(art, "items.parquet")
    if items:
        cat = _read_items(Path(items))
        cat.update({k: v for k, v in a.items.items() if k not in cat})
        a.items = cat
    table = _emb_table(art, model) if art is not None else None
    if table is not None:  # the bundle's precomputed vectors: looked up by id, nothing encoded at load
        a.emb_table = table
        stale = _stale_rows(a, table)
        for i in stale:  # a row computed from another text than the catalog's: never served
            table.row.pop(i, None)
        missing = sum(1 for i in a.items if i not in table)
        log.info("item embeddings: %d precomputed rows (model %s) memory-mapped; %d catalog items without one "
                 "(%d stale) are not scored as ads", len(table), table.model_hash, missing, len(stale))
    elif a.items:  # no precomputed rows (outputs of an older publish): every catalog item embedded before ready
        t1 = time.time()
        a.item_embeddings([a.item_text_of(i) for i in a.items])
        log.info("item embeddings of %d catalog items ready in %.1fs (cache misses: %d; a bundle from "
                 "`hllm-creator publish` carries them precomputed)", len(a.items), time.time() - t1, cache.misses)
    log.info("serving assets loaded in %.1fs: %d items, %s clusters, %d selected pairs, %d creatives",
             time.time() - t0, len(a.items), None if a.centroids is None else len(a.centroids),
             len(a.selected), len(a.creatives))
    return a
