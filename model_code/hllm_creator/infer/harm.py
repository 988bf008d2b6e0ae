"""Do no harm: the product's own estimates of what a personalized title does for its audience,
against the original title, and the check that serves the original where they say it fits worse.

- ``predictor`` (``harm_gains``): the Item-User predictor's log-odds of a click by the cluster (its
  member-mean embedding and ID part, as match scores it) with the personalized title minus with the
  original.
- ``content`` (``content_gains``): the Item LLM's cosine of the personalized title to the cluster's
  clicked items (``cluster_content``: the mean of its members' mean clicked-item vectors) minus the
  original's.
- ``title_gain`` / ``title_content_gain``: the same for one user (or cluster) and one ad given as
  text (the creative server's per-request path).

The evaluation ruler (another encoder, held-out users' next clicks) plays no part in any of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hllm_creator.creative.copy import is_copy
from hllm_creator.data.text import item_text
from hllm_creator.infer.embed import frozen_item_embeddings, item_texts

HARM_MAX_TOKENS = 96  # a title within the 150-character budget is about 40 tokens: read it whole


def title_vectors(model, recs: list[dict], items: pd.DataFrame, *, bf16: bool = False):
    """The Item LLM's vector of every record's ``title`` and its ad's original title, each read whole
    (up to ``HARM_MAX_TOKENS``): ``(vectors, {(item_id, title): row})``."""
    by_id = {r["item_id"]: r for r in items.to_dict("records")}
    texts: dict[tuple[str, str], str] = {}
    for r in recs:
        for t in (r["title"], by_id[r["item_id"]]["title"]):
            # the title alone, whole: the catalog's item text (title, brand, category, description) is cut
            # to the Item LLM's token budget, which would cut the added fact off a long title and rate
            # every personalized title exactly as its original
            texts.setdefault((r["item_id"], t), item_text({"title": t}))
    keys = list(texts)
    budget = model.cfg.item_max_tokens
    try:
        model.cfg.item_max_tokens = max(budget, HARM_MAX_TOKENS)
        emb = model.encode_items([texts[k] for k in keys], autocast_bf16=bf16) if keys else None
    finally:
        model.cfg.item_max_tokens = budget
    return emb, {k: i for i, k in enumerate(keys)}


def harm_gains(model, recs: list[dict], items: pd.DataFrame, cluster_emb: np.ndarray,
               id_parts: np.ndarray | None = None, *, bf16: bool = False, vectors=None,
               ids: bool = True) -> np.ndarray:
    """The product's own estimate of what a served title does for its audience, per record: the
    Item-User predictor's log-odds of a click by the cluster (``cluster_emb``: the member-mean user
    embeddings match scores with, plus the hybrid predictor's ``id_parts``) on the record's ``title``
    (read whole by the Item LLM, up to ``HARM_MAX_TOKENS``), minus the same with the original title.
    0 for a record serving the original. The evaluation ruler plays no part in it. ``ids=False``:
    the LLM towers alone (an ad outside the ID catalog)."""
    import torch

    by_id = {r["item_id"]: r for r in items.to_dict("records")}
    emb, row = vectors if vectors is not None else title_vectors(model, recs, items, bf16=bf16)
    use_ids = ids and bool(getattr(model, "predictor_items", None))
    gains = np.zeros(len(recs), dtype=np.float64)
    for k, r in enumerate(recs):
        item = by_id[r["item_id"]]
        if is_copy(r["title"], item["title"]):
            continue
        c = int(r["cluster_id"])
        u = torch.from_numpy(np.asarray(cluster_emb[c:c + 1], dtype=np.float32))
        it = emb[[row[(r["item_id"], r["title"])], row[(r["item_id"], item["title"])]]]
        kw = {}
        if use_ids:
            kw["item_index"] = model.item_index([r["item_id"], r["item_id"]])
            if id_parts is not None:
                kw["user_id_part"] = torch.from_numpy(np.asarray(id_parts[c:c + 1], dtype=np.float32))
        p = model.score(u, it, **kw).double().clamp(1e-6, 1 - 1e-6)[0]
        logit = torch.log(p) - torch.log1p(-p)
        gains[k] = float(logit[0] - logit[1])
    return gains


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def cluster_content(item_vectors: dict[str, np.ndarray], assignments: pd.DataFrame, hist: pd.Series,
                    n_clusters: int) -> np.ndarray:
    """Per cluster, what its members click, in the Item LLM's space: the unit mean of its members' unit
    mean clicked-item vectors (``item_vectors``: item id -> Item LLM vector; ``hist``: user id -> clicked
    item ids, the histories the embed step read). A cluster none of whose members has a known click: 0."""
    dim = len(next(iter(item_vectors.values())))
    acc = np.zeros((n_clusters, dim), dtype=np.float64)
    for uid, cid in zip(assignments["user_id"].astype(str), assignments["cluster_id"].astype(int)):
        vs = [item_vectors[str(i)] for i in hist.get(uid, []) if str(i) in item_vectors]
        if vs and 0 <= cid < n_clusters:
            acc[cid] += _unit(np.mean(vs, axis=0))
    norms = np.linalg.norm(acc, axis=1, keepdims=True)
    return np.where(norms > 0, acc / np.maximum(norms, 1e-12), 0.0).astype(np.float32)


def content_gains(model, recs: list[dict], items: pd.DataFrame, content: np.ndarray, *, bf16: bool = False,
                  vectors=None) -> np.ndarray:
    """The product's second estimate, per record: the Item LLM's cosine of the record's ``title`` (read
    whole) to its cluster's clicked items (``content``: ``cluster_content``; a user's own for the
    per-user path) minus the original title's. 0 for a record serving the original. The evaluation
    ruler plays no part in it."""
    by_id = {r["item_id"]: r for r in items.to_dict("records")}
    emb, row = vectors if vectors is not None else title_vectors(model, recs, items, bf16=bf16)
    gains = np.zeros(len(recs), dtype=np.float64)
    if emb is None:
        return gains
    e = _unit(emb.float().cpu().numpy() if hasattr(emb, "float") else np.asarray(emb, dtype=np.float32))
    for k, r in enumerate(recs):
        original = by_id[r["item_id"]]["title"]
        if is_copy(r["title"], original):
            continue
        c = content[int(r["cluster_id"])]
        gains[k] = float(e[row[(r["item_id"], r["title"])]] @ c - e[row[(r["item_id"], original)]] @ c)
    return gains


def item_vectors(model, model_dir: str | Path | None, items: pd.DataFrame, needed: set[str], *,
                 bf16: bool = False) -> dict[str, np.ndarray]:
    """Item LLM vectors of the ``needed`` items: the model dir's ``item_embeddings.parquet`` (the frozen
    vectors training used) when it is this model's, else encoded here from the catalog text."""
    t = frozen_item_embeddings(model, model_dir)
    out: dict[str, np.ndarray] = {} if t is None else {
        str(i): np.asarray(v, dtype=np.float32) for i, v in zip(t["item_id"], t["embedding"]) if str(i) in needed}
    rest = sorted(needed - set(out))
    if rest:
        texts = item_texts(items[items["item_id"].astype(str).isin(rest)])
        ids = [i for i in rest if i in texts]
        if ids:
            emb = model.encode_items([texts[i] for i in ids], autocast_bf16=bf16)
            out.update(zip(ids, emb.float().cpu().numpy()))
    return out


def title_gain(model, user_emb: np.ndarray, ad: dict, title: str, *, id_part: np.ndarray | None = None) -> float:
    """``harm_gains`` for one user (or cluster) vector and one ad given as text (an ad outside the
    catalog has no ID part): the predictor's log-odds of a click with ``title`` minus with the ad's
    original title."""
    items = pd.DataFrame([{**ad, "item_id": "_ad", "categories": ad.get("categories") or []}])
    rec = {"item_id": "_ad", "cluster_id": 0, "title": title}
    # the ad has no ID in the predictor's table: its text alone is scored (the shared model is not
    # touched: this runs per request in the server)
    return float(harm_gains(model, [rec], items, np.asarray(user_emb, dtype=np.float32)[None],
                            None if id_part is None else np.asarray(id_part)[None], ids=False)[0])


def title_content_gain(model, content: np.ndarray, ad: dict, title: str) -> float:
    """``content_gains`` for one audience vector (``content``: a user's unit mean clicked-item vector,
    or a cluster's) and one ad given as text: the Item LLM's cosine of ``title`` to it minus the
    original title's."""
    items = pd.DataFrame([{**ad, "item_id": "_ad", "categories": ad.get("categories") or []}])
    rec = {"item_id": "_ad", "cluster_id": 0, "title": title}
    return float(content_gains(model, [rec], items, np.asarray(content, dtype=np.float32)[None])[0])


def do_no_harm(recs: list[dict], gains: np.ndarray, threshold: float, content: np.ndarray | None = None,
               content_threshold: float = 0.0) -> int:
    """In place: a record whose personalized title's predictor ``gains`` is below ``threshold``, or
    (given) whose ``content`` gain is below ``content_threshold``, serves the original title instead
    (source "original", the reason says which estimate and by how much). Every record gets
    ``harm_gain``, ``content_gain`` (NaN when not estimated) and ``candidate_title`` (the personalized
    title before this check). Returns how many records changed."""
    changed = 0
    content = np.full(len(recs), np.nan) if content is None else np.asarray(content, dtype=float)
    for r, g, c in zip(recs, gains, content):
        r["harm_gain"] = float(g)
        r["content_gain"] = float(c)
        r["candidate_title"] = r["title"]
        why = []
        if r["personalized"] and g < threshold:
            why.append(f"do no harm: the predictor rates the personalized title {g:+.3f} log-odds against the "
                       f"original (needs >= {threshold:+.3f})")
        if r["personalized"] and np.isfinite(c) and c < content_threshold:
            why.append(f"do no harm: the personalized title is {c:+.4f} cosine from the audience's clicked items "
                       f"against the original (needs >= {content_threshold:+.4f})")
        if why:
            r.update(title=r["original_title"], source="original", personalized=False,
                     reasons=list(r["reasons"]) + why)
            changed += 1
    return changed


def harm_curve(cr: pd.DataFrame, thresholds=(-2.0, -1.0, -0.5, -0.25, -0.1, 0.0, 0.1, 0.25, 0.5, 1.0)) -> list[dict]:
    """Share of (ad, cluster) pairs that would serve their personalized title, per do-no-harm threshold
    (from each pair's ``harm_gain``; the audience fit at each threshold is the personalization step's)."""
    if not len(cr) or "harm_gain" not in cr.columns:
        return []
    cand = ~np.array([is_copy(c, o) for c, o in zip(cr["candidate_title"], cr["original_title"])])
    g = cr["harm_gain"].to_numpy()
    return [{"threshold": float(t), "personalized_share": float((cand & (g >= t)).mean())} for t in thresholds]
