"""Score every (ad, cluster) pair with the Item-User predictor and pick the clusters per ad
(paper, Inference steps 3-5).

- The user slot of each cluster is its member-mean embedding (``member_means.npy``; the centroid
  for L2 k-means), the ad is embedded by the Item LLM through the same item cache as embed.
- ``HLLMCreator.score`` gives a match probability for every pair, computed in batches of clusters.
- Per ad the clusters are ranked by score (ties: smaller cluster id first); the top ``top_k`` are
  selected, and with a ``threshold`` only those whose score is at least the threshold.
- Coverage of an ad = users in its selected clusters / all clustered users: the share of users who
  receive a personalized title for that ad.
- Ads: ``ads_from`` (a checked ad feed: its ad_ids, which ``refresh`` adds to the dataset as items
  without clicks: the Item LLM scores an ad by its text alone), else ``ads`` (item ids) when given,
  else the ``n_ads`` most-clicked items of the dataset (clicks = label 1 rows; ties by item_id).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from hllm_creator import tracking
from hllm_creator.config import StepConfig
from hllm_creator.data import load_dataset
from hllm_creator.data.feed import feed_ads
from hllm_creator.data.schema import DataError
from hllm_creator.infer import cluster as cl
from hllm_creator.infer.common import MATCHES
from hllm_creator.infer.embed import _encoder, histories, item_texts, load_model
from hllm_creator.infer.item_cache import ItemCache
from hllm_creator.io import atomic_path, write_json, write_parquet

log = logging.getLogger(__name__)
MATCH_META = "match_meta.json"


class MatchConfig(StepConfig):
    """Config of ``hllm-creator match``."""

    model_dir: str
    data_dir: str
    clusters_dir: str
    ads: list[str] = Field(default_factory=list, description="Ad item ids; empty: the n_ads most clicked.")
    ads_from: str | None = Field(None, description="A checked ad feed (refresh's feed.parquet, or its dir): its "
                                 "ad_ids are the ads (items of the dataset: refresh adds them; no clicks needed).")
    n_ads: int = Field(20, ge=1, description="Without ads: the N most-clicked items (ties by id).")
    top_k: int = Field(3, ge=1, description="Clusters selected per ad (best predictor score first).")
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="Also require a match score >= this (0..1).")
    batch_size: int = Field(256, ge=1, description="Clusters per predictor call.")
    item_cache: str | None = Field(None, description="Item-embedding cache parquet.")


def usable_ad(title: str) -> bool:
    """An item that can run as an ad: a title of at least 3 words with no markup left in it (the
    bundled catalog has a few titles such as "Industrial & Scientific />")."""
    t = str(title or "")
    return len(t.split()) >= 3 and not any(c in t for c in "<>{}")


def default_ads(items: pd.DataFrame, interactions: pd.DataFrame, n: int) -> list[str]:
    """The ``n`` most-clicked usable items (ties by item_id), one per distinct title: deterministic.
    The teacher (dataset-construct) writes for the same list."""
    clicks = interactions.loc[interactions["label"] == 1, "item_id"].value_counts()
    df = pd.DataFrame({"item_id": clicks.index.astype(str), "clicks": clicks.to_numpy()})
    titles = dict(zip(items["item_id"].astype(str), items["title"]))
    df = df[df["item_id"].isin(set(titles))]
    df = df.sort_values(["clicks", "item_id"], ascending=[False, True], kind="stable")
    df["title"] = df["item_id"].map(titles)
    df = df[df["title"].map(usable_ad)].drop_duplicates("title", keep="first")
    return df["item_id"].head(n).tolist()


def check_ads(ads: list[str], items: pd.DataFrame) -> list[str]:
    known = set(items["item_id"])
    for k, a in enumerate(ads):
        if a not in known:
            raise DataError(f"ad id {a!r} (position {k} of --ads) is not an item of the dataset",
                            file="items.parquet", column="item_id")
    if len(set(ads)) != len(ads):
        raise DataError(f"--ads lists an id twice: {ads}")
    return list(ads)


def select(scores: np.ndarray, ad_ids: list[str], top_k: int, threshold: float | None = None) -> pd.DataFrame:
    """scores [n_ads, K] -> matches (item_id, cluster_id, score, rank, selected), every pair listed.

    Rank 1 = best cluster for the ad (ties: smaller cluster id); selected = rank <= top_k and, with a
    threshold, score >= threshold.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] != len(ad_ids):
        raise ValueError(f"scores shape {scores.shape} does not match {len(ad_ids)} ads")
    if not np.isfinite(scores).all():
        raise ValueError("scores hold NaN or inf")
    n_ads, k = scores.shape
    rows = []
    for a, iid in enumerate(ad_ids):
        order = np.lexsort((np.arange(k), -scores[a]))  # score desc, then cluster id asc
        for r, c in enumerate(order, start=1):
            s = float(scores[a, c])
            rows.append((iid, int(c), s, r, r <= top_k and (threshold is None or s >= threshold)))
    return pd.DataFrame(rows, columns=["item_id", "cluster_id", "score", "rank", "selected"]).astype(
        {"item_id": str, "cluster_id": "int64", "score": "float32", "rank": "int64", "selected": bool})


def coverage(matches: pd.DataFrame, sizes: np.ndarray) -> pd.DataFrame:
    """Per ad: selected clusters, users covered and the share of all users covered."""
    total = int(np.sum(sizes))
    sel = matches[matches["selected"]]
    out = []
    for iid in matches["item_id"].drop_duplicates():
        cl = sel.loc[sel["item_id"] == iid, "cluster_id"].to_numpy()
        users = int(np.sum(sizes[cl])) if len(cl) else 0
        out.append({"item_id": iid, "clusters_selected": len(cl), "users_covered": users,
                    "coverage": users / total if total else 0.0})
    return pd.DataFrame(out)


MEMBER_ID_PARTS = "member_id_parts.npy"


def member_id_parts(model, assignments: pd.DataFrame, hist: pd.Series, k: int) -> np.ndarray | None:
    """The hybrid predictor's user-side ID part of each cluster: the mean over its members of
    ``predictor.recent_part`` of their last clicks (the ID analogue of the member-mean embedding the
    clusters are scored with) -> [k, d]; None when the model has no ID embeddings."""
    import torch

    if not getattr(model, "predictor_items", None):
        return None
    users = assignments["user_id"].astype(str).tolist()
    recent = model.recent_index([list(hist.get(u, [])) for u in users])
    with torch.inference_mode():
        parts = model.predictor.recent_part(recent).float().cpu()
    cid = torch.as_tensor(assignments["cluster_id"].to_numpy(), dtype=torch.long)
    sums = torch.zeros(k, parts.shape[1]).index_add_(0, cid, parts)
    counts = torch.bincount(cid, minlength=k).clamp(min=1)[:, None].float()
    return (sums / counts).numpy()


def score_pairs(model, user_emb: np.ndarray, item_emb: np.ndarray, *, batch_size: int = 256,
                progress: bool = True, user_id_part: np.ndarray | None = None,
                item_index=None) -> np.ndarray:
    """HLLMCreator.score over all (cluster, ad) pairs in batches of clusters -> [n_ads, K].
    ``user_id_part`` [K, d] / ``item_index`` [n_ads]: the hybrid predictor's ID parts (or None)."""
    import torch
    from tqdm.auto import tqdm

    it = torch.from_numpy(np.ascontiguousarray(item_emb, dtype=np.float32))
    parts = []
    with torch.inference_mode():
        for s in tqdm(range(0, len(user_emb), batch_size), desc="score (cluster, ad) pairs",
                      unit="batch", disable=not progress):
            u = torch.from_numpy(np.ascontiguousarray(user_emb[s:s + batch_size], dtype=np.float32))
            idp = None if user_id_part is None else torch.from_numpy(
                np.ascontiguousarray(user_id_part[s:s + batch_size], dtype=np.float32))
            parts.append(model.score(u, it, user_id_part=idp, item_index=item_index).float().cpu().numpy())
    return np.concatenate(parts).T  # [n_ads, K]


def match(model, items: pd.DataFrame, ad_ids: list[str], user_slot: np.ndarray, sizes: np.ndarray,
          cfg: MatchConfig, *, cache=None, progress: bool = True,
          user_id_part: np.ndarray | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Embed the ads, score all (ad, cluster) pairs, select. Returns (matches, coverage).
    ``user_id_part``: the clusters' ID parts (``member_id_parts``; hybrid predictor), or None."""
    cache = cache if cache is not None else ItemCache(model.model_hash, cfg.item_cache)
    texts = item_texts(items[items["item_id"].isin(set(ad_ids))])
    item_emb = cache.get([texts[a] for a in ad_ids], _encoder(model, 32), progress=progress, desc="ads")
    scores = score_pairs(model, user_slot, item_emb, batch_size=cfg.batch_size, progress=progress,
                         user_id_part=user_id_part, item_index=model.item_index(ad_ids)
                         if getattr(model, "predictor_items", None) else None)
    m = select(scores, ad_ids, cfg.top_k, cfg.threshold)
    return m, coverage(m, sizes)


def run(cfg: MatchConfig, out: str | Path, *, progress: bool = True, model=None) -> dict:
    """The step: load model, data and clusters; match; write matches.parquet + match_meta.json."""
    t0 = time.time()
    ds = load_dataset(cfg.data_dir)
    _, user_slot, asg, cmeta = cl.load(cfg.clusters_dir)
    sizes = np.bincount(asg["cluster_id"].to_numpy(), minlength=len(user_slot))
    if cfg.ads_from:  # an advertiser's feed: ads outside the click catalog are scored by their text alone
        ads = check_ads(feed_ads(cfg.ads_from), ds.items)
    else:
        ads = check_ads(cfg.ads, ds.items) if cfg.ads else default_ads(ds.items, ds.interactions, cfg.n_ads)
    model = model if model is not None else load_model(cfg.model_dir)
    if user_slot.shape[1] != model.user_hidden_size:
        raise DataError(f"cluster centroids have dim {user_slot.shape[1]}, the model's user embedding "
                        f"{model.user_hidden_size}: clusters from another model?", file=str(cfg.clusters_dir))
    id_parts = None
    if getattr(model, "predictor_items", None):  # the hybrid predictor: each cluster's ID part too
        id_parts = member_id_parts(model, asg, histories(ds.interactions, cmeta.get("history") or "no-test"),
                                   len(user_slot))
    with tracking.step_run("match", cfg):
        m, cov = match(model, ds.items, ads, user_slot, sizes, cfg, progress=progress, user_id_part=id_parts)
        out = Path(out)
        write_parquet(m, out / MATCHES)
        if id_parts is not None:  # serving scores a cluster as this step did
            with atomic_path(out / MEMBER_ID_PARTS) as tmp, open(tmp, "wb") as f:
                np.save(f, id_parts.astype(np.float32))
        sel = m[m["selected"]]
        chosen = "feed" if cfg.ads_from else "given" if cfg.ads else f"{cfg.n_ads} most-clicked items"
        meta = {"ads": ads, "ads_chosen_by": chosen,
                "k": int(len(user_slot)), "users": int(sizes.sum()), "top_k": cfg.top_k,
                "threshold": cfg.threshold, "pairs_scored": int(len(m)), "pairs_selected": int(len(sel)),
                "mean_coverage": float(cov["coverage"].mean()), "min_coverage": float(cov["coverage"].min()),
                "coverage": cov.to_dict("records"), "score_mean": float(m["score"].mean()),
                "selected_score_mean": float(sel["score"].mean()) if len(sel) else float("nan"),
                "model_hash": model.model_hash, "cluster_metric": cmeta.get("metric"),
                "seconds": round(time.time() - t0, 2)}
        if id_parts is not None:  # the hybrid predictor scored the clusters with their members' ID parts too
            meta["predictor_id_parts"] = MEMBER_ID_PARTS
        write_json(meta, out / MATCH_META)
        tracking.log_metrics({k: meta[k] for k in ("pairs_scored", "pairs_selected", "mean_coverage",
                                                   "min_coverage", "score_mean", "selected_score_mean",
                                                   "seconds")})
        tracking.log_table(cov, "coverage")
        tracking.log_json(meta, MATCH_META)
    return meta
