"""Evaluation of the representation on held-out targets (leave-last-out).

Each evaluated user's history + valid target (what training saw) -> user embedding; the test target
(never trained on) is ranked among all catalog items the user has not clicked (the usual
full-ranking protocol; the bundled data has no repeat clicks, so a seen item is never the answer)
by the Item-User predictor's score.
Metrics: Recall@10, NDCG@10, AUC (the target against every other item, averaged over users), for
the model, a popularity baseline (training clicks) and a random baseline.
"""

from __future__ import annotations

import numpy as np


def ranks(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
    """scores [n, m] (higher = better), target [n] column index -> 0-based rank of each target
    (ties split evenly)."""
    n = scores.shape[0]
    t = scores[np.arange(n), target][:, None]
    higher = (scores > t).sum(1)
    ties = (scores == t).sum(1) - 1
    return higher + ties / 2.0


def per_user_metrics(rank: np.ndarray, k: int = 10) -> dict[str, np.ndarray]:
    """0-based ranks -> per-user hit@k, NDCG@k and reciprocal rank (what ``stats.bootstrap_ci`` resamples)."""
    hit = rank < k
    return {f"recall@{k}": hit.astype(np.float64), f"ndcg@{k}": np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0),
            "mrr": 1.0 / (rank + 1.0)}


def rank_metrics(scores: np.ndarray, target: np.ndarray, k: int = 10) -> dict:
    """scores [n, m] (higher = better), target [n] column index -> Recall@k, NDCG@k, AUC, MRR."""
    n, m = scores.shape
    rank = ranks(scores, target)
    pu = per_user_metrics(rank, k)
    excluded = np.isneginf(scores).sum(1)  # seen items (not candidates) do not count for AUC
    auc = 1.0 - rank / np.maximum(m - 1 - excluded, 1)
    return {f"recall@{k}": float(pu[f"recall@{k}"].mean()), f"ndcg@{k}": float(pu[f"ndcg@{k}"].mean()),
            "auc": float(auc.mean()), "mrr": float(pu["mrr"].mean()), "n_users": int(n), "n_items": int(m)}


def seen_pairs(users, index: dict) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of every item each user clicked before the test target (whole history + valid)."""
    r, c = [], []
    for n, (h, v) in enumerate(zip(users["history"], users["valid_target"])):
        cols = {index[x] for x in list(h) + [v]}
        r += [n] * len(cols)
        c += sorted(cols)
    return np.asarray(r, dtype=np.int64), np.asarray(c, dtype=np.int64)


def evaluate(model, item_emb, td, split_users, *, eval_users: int | None = None, seed: int = 0,
             progress: bool = True, bf16: bool = False) -> dict:
    """Model vs popularity vs random on the test targets of (a seeded sample of) users."""
    import torch

    index = {x: i for i, x in enumerate(td.item_ids)}
    users = split_users
    if eval_users is not None and eval_users < len(users):
        users = users.sample(n=eval_users, random_state=seed + 1)
    hist = [[index[x] for x in list(h) + [v]][-model.cfg.max_history:]
            for h, v in zip(users["history"], users["valid_target"])]
    target = np.array([index[x] for x in users["test_target"]])
    item_emb = item_emb.float()
    with torch.no_grad():
        ue = model.encode_users([item_emb[h] for h in hist], autocast_bf16=bf16, progress=progress,
                                desc="eval users")
        # the hybrid predictor's ID parts (None without ID embeddings): each user's last clicks, every item
        recent = model.recent_index([[td.item_ids[i] for i in h] for h in hist])
        ids = model.item_index(td.item_ids)
        scores = torch.cat([model.predictor(ue[s:s + 256].to(model.device), item_emb.to(model.device),
                                            recent=None if recent is None else recent[s:s + 256],
                                            item_ids=ids).float().cpu()
                            for s in range(0, len(ue), 256)]).numpy()
    pop = np.log1p(td.popularity.astype(np.float64))
    pop_scores = np.repeat((pop + np.arange(len(pop)) * 1e-9)[None, :], len(scores), 0)  # deterministic ties
    rnd = np.random.default_rng(seed).random(scores.shape)
    # a pointwise AUC of the predictor's scores: test targets vs 100 random items per user
    neg = np.random.default_rng(seed + 2).integers(0, scores.shape[1], size=(len(target), 100))
    pos_s, neg_s = scores[np.arange(len(target)), target], scores[np.arange(len(target))[:, None], neg]
    # full-ranking protocol: items the user already clicked are not candidates (for every ranker alike)
    seen_r, seen_c = seen_pairs(users, index)
    for s_ in (scores, pop_scores, rnd):
        s_[seen_r, seen_c] = -np.inf
    out = {"model": rank_metrics(scores, target), "popularity": rank_metrics(pop_scores, target),
           "random": rank_metrics(rnd, target)}
    out["random"]["expected_recall@10"] = 10.0 / scores.shape[1]
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(len(pos_s)), np.zeros(neg_s.size)]
    out["model"]["pointwise_auc"] = float(roc_auc_score(y, np.r_[pos_s, neg_s.ravel()]))
    out["beats_popularity_recall@10"] = out["model"]["recall@10"] > out["popularity"]["recall@10"]
    out["protocol"] = ("leave-last-out: history + valid target -> user embedding; the test target ranked "
                       "among all catalog items the user has not clicked (full ranking, seen items "
                       "excluded for every ranker); popularity = clicks in training data")
    return out
