"""Cold start: who is the audience of an ad nobody has clicked? (issue 27)

Split (:func:`pick_holdout`, seeded): ``--share`` (10%) of the catalog's items, drawn among the items
with at least ``--min-clicks`` (5) clicks and a usable ad title, are held out with EVERY click on them
(``feed_holdout.write_holdout``): the training dataset is the rest, and the held-out items become an
ad feed (``FEED-<id>``, their own text), scored the way the product scores a new ad
(``hllm-creator refresh``): the refresh dataset (``data.feed.refresh_dataset``: the training catalog
+ the feed's ads without clicks), the ads embedded by the model's Item LLM through the item cache
(``infer.match``), no ID vector (the predictor's item side falls back to its LLM tower). A teacher
parquet (``--teacher``) built from the full catalog is filtered: rows whose ad or history names a
held-out item are dropped.

Users: every user with at least one remaining click; input = all their clicks without the held-out
ones (``infer.embed.histories(..., "all")``, the production profile). Target of a held-out item = its
real clickers (held-out clicks of users outside that population are counted and left out).

Per held-out item each ranker scores ALL users:

- ``random``: seeded uniform scores;
- ``most_active``: the users' click counts;
- ``tfidf_user``: TF-IDF (sklearn, fitted on the training catalog's item texts) of the ad's text
  against each user's clicked titles (one document per user), cosine;
- ``item_knn``: the ad's ``--knn`` nearest training items by TF-IDF cosine; a user scores the sum of
  the similarities of the neighbours they clicked (the clickers of the ad's nearest clicked items);
- ``hllm``: the Item-User predictor (``HLLMCreator.score``'s logits) of a model trained WITHOUT the
  held-out items (``--model DIR``, or trained here with ``--train-preset cpu``); the user side with
  its ID part (the user's last clicks), as the product scores; ``hllm_no_user_ids`` (analysis row):
  the LLM towers alone on both sides; ``hllm_id_knn`` (analysis row): the ad's missing ID vector
  imputed from its 10 nearest training items in the Item LLM's space (``id_knn_logits``);
  ``*_norm`` (analysis rows): the logit minus the user's log-sum-exp over the training catalog
  (``user_lse``: log p(ad | user) under the fit's softmax); the analysis rows pick clusters by the
  mean member score.

Fused rankers (``cross_fit_fusion``: z-scored sums, the weight cross-fitted over two seeded folds of
the ads, so no ad's score uses a weight picked on that ad): ``content_fusion`` = item_knn + w x
tfidf_user (a content baseline: the strongest one when it leads); ``hllm_hybrid`` = content_fusion + w x
hllm (does the predictor know anything about a new ad's audience that the text neighbours do not?).

Ties everywhere are broken by a seeded random order (the same for every ranker).
Metrics per item (means over items, bootstrap 95% CI over items, ``stats.bootstrap_ci``):
audience Recall@100 = clickers in the top 100 / min(clickers, 100), NDCG@100 (binary gains), and the
lift of the top-3 clusters: the users are clustered by the product's cluster step (faiss k-means, K =
``--k``, on the model's user embeddings: needs a model); each ranker picks 3 clusters per item (the
HLLM: the product's match step, member-mean embedding + member ID parts; the other rankers: the
clusters of the highest mean member score) and lift = (share of the item's clickers in those clusters)
/ (share of all users in them). The paired bootstrap CI of HLLM (and of ``hllm_hybrid``) minus the best
content baseline (``tfidf_user``, ``item_knn`` or ``content_fusion``, by mean Recall@100). Seconds per
ranker.

    .venv/bin/python benchmarks/cold_start.py [--data DIR] [--work DIR] [--model DIR | --train-preset cpu]
        [--teacher T/train.parquet] [--out benchmarks/results/cold_start.json]

``make bench`` runs it without a model (``HLLM_COLD_MODEL`` names one): the baselines only, no lift,
into ``benchmarks/results/cold_start_baselines.json``.
``--prepare-only`` writes the split (WORK/train_data, WORK/feed.jsonl, WORK/teacher.parquet) and stops:
train on it with ``hllm-creator train --data WORK/train_data --train-parquet WORK/teacher.parquet``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from benchmarks._common import ROOT

K_USERS = 100
PROTOCOL = ("held-out items (and all their clicks) never trained on; each scored as a new ad (refresh path: text "
            "only, no ID vector) against ALL users with >= 1 remaining click (input: their clicks without the "
            "held-out ones); target = the item's real clickers; Recall@100 = hits / min(clickers, 100), NDCG@100 "
            "binary gains; lift of the top-3 clusters; means over items, bootstrap 95% CI over items")
CONTENT = ("tfidf_user", "item_knn", "content_fusion")
FUSION_GRID = (0.1, 0.25, 0.5, 1.0, 2.0)


# ----------------------------------------------------------------------------- split
def pick_holdout(items, interactions, *, share: float = 0.1, min_clicks: int = 5, seed: int = 0) -> list[str]:
    """Seeded: ``round(share * n_items)`` item ids among the items with >= ``min_clicks`` clicks
    (label 1) and a usable ad title (``infer.match.usable_ad``), sorted. Raises when too few qualify."""
    from hllm_creator.infer.match import usable_ad

    clicks = interactions.loc[interactions["label"] == 1, "item_id"].astype(str).value_counts()
    ids = items["item_id"].astype(str).tolist()
    titles = dict(zip(ids, items["title"]))
    cand = sorted(i for i in ids if clicks.get(i, 0) >= min_clicks and usable_ad(titles[i]))
    n = int(round(share * len(ids)))
    if n < 1 or n > len(cand):
        raise ValueError(f"hold out {n} items ({share:.0%} of {len(ids)}): {len(cand)} items have >= {min_clicks} "
                         "clicks and a usable title")
    rng = np.random.default_rng([seed, 27])
    return sorted(cand[i] for i in rng.choice(len(cand), size=n, replace=False))


def filter_teacher(path: str | Path, held: set[str], out: str | Path) -> dict:
    """The teacher parquet without the rows whose ad (``target_item_id``) or history
    (``item_id_list``) names a held-out item -> ``out``. Returns counts."""
    import pandas as pd

    from hllm_creator.io import write_parquet

    df = pd.read_parquet(path)
    hit = df["item_id_list"].map(lambda v: any(str(x) in held for x in v))
    if "target_item_id" in df:
        hit |= df["target_item_id"].astype(str).isin(held)
    write_parquet(df[~hit].reset_index(drop=True), Path(out))
    return {"teacher_rows": int(len(df)), "teacher_rows_dropped": int(hit.sum()), "teacher": str(out)}


def prepare_split(data: str | Path, work: Path, *, share: float, min_clicks: int, seed: int,
                  teacher: str | None) -> dict:
    """WORK/train_data (dataset without the held-out items and their clicks), WORK/feed.jsonl (the
    held-out items as new ads), WORK/teacher.parquet (filtered), WORK/split.json. Idempotent: an
    existing split of the same parameters is reused."""
    from benchmarks.quality.feed_holdout import write_holdout
    from hllm_creator.data import load_dataset
    from hllm_creator.data.schema import dataset_fingerprint
    from hllm_creator.io import write_json

    f = work / "split.json"
    params = {"data": str(data), "data_hash": dataset_fingerprint(data)[1], "share": share,
              "min_clicks": min_clicks, "seed": seed, "teacher": teacher}
    if f.exists():
        old = json.loads(f.read_text())
        if old.get("params") == params and (work / "train_data" / "manifest.json").exists():
            return old
    ds = load_dataset(data)
    held = pick_holdout(ds.items, ds.interactions, share=share, min_clicks=min_clicks, seed=seed)
    info = write_holdout(ds, set(held), work / "train_data", work / "feed.jsonl",
                         name=f"{ds.name}-cold{seed}", why=f"benchmarks/cold_start.py, seed {seed}")
    if teacher:
        info.update(filter_teacher(teacher, set(held), work / "teacher.parquet"))
    res = {"params": params, "held_out": held, **info}
    write_json(res, f)
    return res



# ----------------------------------------------------------------------------- metrics
def top_users(scores: np.ndarray, tiebreak: np.ndarray, k: int) -> np.ndarray:
    """scores [n_ads, n_users] -> [n_ads, k] column indices of each row's k best (score desc, then
    ``tiebreak`` desc: a seeded random order shared by every ranker)."""
    k = min(k, scores.shape[1])
    out = np.empty((len(scores), k), dtype=np.int64)
    for a, s in enumerate(scores):
        out[a] = np.lexsort((-tiebreak, -s))[:k]
    return out


def audience_metrics(top: np.ndarray, targets: list[np.ndarray], k: int = K_USERS) -> dict[str, np.ndarray]:
    """``top`` [n_ads, >=k] ranked user columns, ``targets`` each ad's clicker columns -> per ad
    Recall@k (hits / min(clickers, k)) and NDCG@k (binary gains, ideal = every slot up to
    min(clickers, k) a clicker)."""
    disc = 1.0 / np.log2(np.arange(k) + 2.0)
    rec, ndcg = np.zeros(len(targets)), np.zeros(len(targets))
    for a, t in enumerate(targets):
        if len(t) == 0:
            raise ValueError(f"ad {a} has no clicker among the ranked users")
        hit = np.isin(top[a, :k], t)
        m = min(len(t), k)
        rec[a] = hit.sum() / m
        ndcg[a] = (disc[:len(hit)] * hit).sum() / disc[:m].sum()
    return {f"recall@{k}": rec, f"ndcg@{k}": ndcg}


def pick_clusters(cluster_scores: np.ndarray, top_k: int) -> np.ndarray:
    """[n_ads, K] cluster scores -> [n_ads, top_k] chosen cluster ids (score desc, ties: smaller id;
    the order of ``infer.match.select``)."""
    k = cluster_scores.shape[1]
    return np.stack([np.lexsort((np.arange(k), -row))[:top_k] for row in np.asarray(cluster_scores, float)])


def mean_by_cluster(scores: np.ndarray, assign: np.ndarray, k: int) -> np.ndarray:
    """[n_ads, n_users] user scores -> [n_ads, k] mean score of each cluster's members."""
    sizes = np.bincount(assign, minlength=k).astype(np.float64)
    onehot = np.zeros((len(assign), k))
    onehot[np.arange(len(assign)), assign] = 1.0
    return (scores @ onehot) / np.maximum(sizes, 1.0)


def cluster_lift(chosen: np.ndarray, assign: np.ndarray, targets: list[np.ndarray]) -> np.ndarray:
    """Per ad: (share of its clickers in the chosen clusters) / (share of all users in them)."""
    n = len(assign)
    out = np.zeros(len(targets))
    for a, t in enumerate(targets):
        inside = np.isin(assign, chosen[a])
        out[a] = inside[t].mean() / (inside.sum() / n)
    return out


def zscore_rows(s: np.ndarray) -> np.ndarray:
    """Each ad's user scores standardized (mean 0, sd 1 over the users): rankers on one scale."""
    return (s - s.mean(1, keepdims=True)) / (s.std(1, keepdims=True) + 1e-12)


def cross_fit_fusion(base: np.ndarray, extra: np.ndarray, targets: list[np.ndarray], tiebreak: np.ndarray,
                     seed: int, grid=FUSION_GRID) -> tuple[np.ndarray, list[float]]:
    """``zscore(base) + w * zscore(extra)`` with ``w`` cross-fitted: the ads are split in two seeded
    folds, and each fold's ads use the ``w`` of ``grid`` that has the best mean Recall@100 on the OTHER
    fold, so no ad's score uses a weight chosen on that ad. Returns (scores, [w of fold 0, w of fold 1])."""
    zb, ze = zscore_rows(base), zscore_rows(extra)
    fold = np.random.default_rng([seed, 11]).permutation(len(base)) % 2
    out, ws = np.empty_like(zb), []
    for f in (0, 1):
        other = np.where(fold != f)[0]
        rec = [audience_metrics(top_users(zb[other] + w * ze[other], tiebreak, K_USERS),
                                [targets[i] for i in other])[f"recall@{K_USERS}"].mean() for w in grid]
        w = float(grid[int(np.argmax(rec))])
        ws.append(w)
        mine = fold == f
        out[mine] = zb[mine] + w * ze[mine]
    return out, ws


# ----------------------------------------------------------------------------- rankers
def tfidf_rankers(items, ad_texts: list[str], hist: list[list[int]], knn: int) -> dict:
    """``tfidf_user`` and ``item_knn`` scores [n_ads, n_users] (+ seconds each).

    ``items``: the training catalog (row = index used in ``hist``); ``ad_texts``: the ads' item texts;
    ``hist``: each user's clicked catalog rows."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from hllm_creator.data.text import item_text

    out = {}
    t0 = time.time()
    texts = [item_text(r) for r in items.to_dict("records")]
    vec = TfidfVectorizer(sublinear_tf=True, stop_words="english", min_df=2).fit(texts)
    ads = vec.transform(ad_texts)  # l2-normalized rows
    fit_s = time.time() - t0
    t = time.time()
    titles = items["title"].astype(str).tolist()
    udocs = vec.transform([" ".join(titles[i] for i in h) for h in hist])
    out["tfidf_user"] = ((ads @ udocs.T).toarray(), fit_s + time.time() - t)
    t = time.time()
    sim = (ads @ vec.transform(texts).T).toarray()  # [n_ads, n_items]
    out["item_knn"] = (neighbour_scores(sim, click_matrix(hist, len(items)), knn), fit_s + time.time() - t)
    return out


def click_matrix(hist: list[list[int]], n_items: int):
    """[n_users, n_items] sparse 0/1: user row clicked catalog row (a repeat click counts once)."""
    import scipy.sparse as sp

    rows = np.repeat(np.arange(len(hist)), [len(h) for h in hist])
    cols = np.concatenate([np.asarray(h, dtype=np.int64) for h in hist]) if hist else np.zeros(0, np.int64)
    clicked = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(hist), n_items))
    clicked.data[:] = 1.0
    return clicked


def neighbour_scores(sim: np.ndarray, clicked, knn: int, power: float = 1.0) -> np.ndarray:
    """The clickers of each ad's ``knn`` nearest items: ``sim`` [n_ads, n_items] -> [n_ads, n_users],
    a user's score = the summed max(similarity, 0) ** ``power`` of the neighbours they clicked."""
    import scipy.sparse as sp

    keep = np.argsort(-sim, axis=1)[:, :knn]
    nb = np.zeros(sim.shape, dtype=np.float64)
    np.put_along_axis(nb, keep, np.clip(np.take_along_axis(sim, keep, 1), 0, None) ** power, 1)
    return np.asarray((clicked @ sp.csr_matrix(nb).T).T.todense())


def hllm_rankers(model_dir: str, refresh_items, users: list[str], hist: dict, ad_ids: list[str], k: int,
                 top_k: int, seed: int, bf16: bool = True) -> dict:
    """The product's path for new ads: user embeddings (``infer.embed.embed_users``), the ads through
    the item cache (``infer.match``), no ID vector; user scores = the predictor's logits with each
    user's ID part (``HLLMCreator.score`` before its sigmoid); clusters = ``infer.cluster`` (K=k) on
    the user embeddings; the HLLM's cluster choice = ``infer.match.match`` (member-mean embedding +
    member ID parts). ``bf16``: bf16 autocast for the Item/User LLMs (``embed --bf16``; as train's eval)."""
    import pandas as pd
    import torch

    from hllm_creator.infer import cluster as cl
    from hllm_creator.infer import match as M
    from hllm_creator.infer.embed import _encoder, cache_id, embed_users, item_texts, load_model, seed_cache
    from hllm_creator.infer.item_cache import ItemCache

    t0 = time.time()
    model = load_model(model_dir)
    cache = ItemCache(cache_id(model, bf16), persist=False)
    seed_cache(cache, model, model_dir, refresh_items)
    hs = pd.Series({u: hist[u] for u in users})
    got, uemb = embed_users(model, refresh_items, hs, cache=cache, progress=True, bf16=bf16)
    if got != users:
        raise RuntimeError("embed_users returned another user order")
    t_users = time.time() - t0
    t = time.time()
    texts = item_texts(refresh_items[refresh_items["item_id"].isin(set(ad_ids))])
    aemb = cache.get([texts[a] for a in ad_ids], _encoder(model, 32, bf16), progress=True, desc="ads")
    recent = model.recent_index([hist[u] for u in users])
    with torch.inference_mode():
        logits = model.predictor(torch.from_numpy(uemb), torch.from_numpy(aemb).float(), recent=recent,
                                 item_ids=model.item_index(ad_ids)).float().numpy().T
        # analysis row: the LLM towers alone on the user side too (no ID part of the user's last clicks)
        towers = model.predictor(torch.from_numpy(uemb), torch.from_numpy(aemb).float()).float().numpy().T
        imputed = id_knn_logits(model, model_dir, uemb, aemb, recent)
        lse = user_lse(model, model_dir, uemb, recent)
    t_score = time.time() - t
    t = time.time()
    res = cl.cluster(uemb, cl.ClusterConfig(k=k, seed=seed), progress=False)
    t_cluster = time.time() - t
    t = time.time()
    asg = pd.DataFrame({"user_id": users, "cluster_id": res.cluster_ids})
    parts = M.member_id_parts(model, asg, hs, len(res.member_means))
    mcfg = M.MatchConfig(model_dir=str(model_dir), data_dir="(refresh dataset)", clusters_dir="(in memory)",
                         ads=ad_ids, top_k=top_k)
    matches, _ = M.match(model, refresh_items, ad_ids, res.member_means, res.sizes, mcfg, cache=cache,
                         progress=False, user_id_part=parts)
    sel = matches[matches["selected"]].sort_values(["item_id", "rank"])
    pos = {a: i for i, a in enumerate(ad_ids)}
    chosen = np.zeros((len(ad_ids), top_k), dtype=np.int64)
    for a, g in sel.groupby("item_id"):
        chosen[pos[a]] = g["cluster_id"].to_numpy()[:top_k]
    t_match = time.time() - t
    return {"scores": logits, "towers_scores": towers, "id_knn_scores": imputed, "lse": lse,
            "seconds": t_users + t_score, "embed_users_seconds": t_users,
            "score_seconds": t_score, "cluster_seconds": t_cluster, "match_seconds": t_match,
            "assign": res.cluster_ids.astype(np.int64), "chosen": chosen, "k": int(len(res.member_means)),
            "model_hash": model.model_hash}


def id_knn_logits(model, model_dir, uemb, aemb, recent, k: int = 10):
    """Analysis row ``hllm_id_knn``: a new ad's missing ID vector imputed from its ``k`` nearest
    training items by cosine of the standardized Item LLM embeddings (weights = the cosines, clipped
    at 0, normalized) -> logits [n_ads, n_users]; None without ID embeddings or item vectors."""
    import torch

    pred = model.predictor
    cat = catalog_embeddings(model, model_dir)
    if not pred.n_ids or cat is None:
        return None
    a = torch.nn.functional.normalize(pred.std_item(torch.from_numpy(aemb).float()), dim=-1)
    c = torch.nn.functional.normalize(pred.std_item(cat), dim=-1)
    sim, idx = (a @ c.T).topk(k, dim=1)
    w = sim.clamp(min=0)
    w = w / w.sum(1, keepdim=True).clamp(min=1e-9)
    part = (w[..., None] * pred.id_out.weight[idx]).sum(1)
    it = pred.ti(torch.from_numpy(aemb).float()) + part
    ut = pred.tu(torch.from_numpy(uemb).float(), recent)
    return torch.cat([pred.pair_logits(ut[s:s + 256], it) for s in range(0, len(ut), 256)]).float().numpy().T


def catalog_embeddings(model, model_dir):
    """The training catalog's Item LLM vectors (the model dir's item_embeddings.parquet) in the order
    of the predictor's ID catalog -> [n, dI] tensor, or None."""
    import pandas as pd
    import torch

    f = Path(model_dir) / "item_embeddings.parquet"
    if not model.predictor_items or not f.exists():
        return None
    df = pd.read_parquet(f)
    pos = {x: i for i, x in enumerate(df["item_id"].astype(str))}
    return torch.tensor(np.stack(df["embedding"].to_numpy())[[pos[x] for x in model.predictor_items]]).float()


def user_lse(model, model_dir, uemb, recent):
    """Analysis rows ``*_norm``: each user's log-sum-exp of the predictor's logits over the training
    catalog (hybrid: with the items' ID vectors) -> [n_users]; ``logit - lse`` = log p(ad | user)
    under the next-item softmax the predictor was fitted with (a user who scores everything high is
    not the audience of everything). None without item vectors."""
    import torch

    cat = catalog_embeddings(model, model_dir)
    if cat is None:
        return None
    pred = model.predictor
    it = pred.ti(cat, torch.arange(len(cat)))
    ut = pred.tu(torch.from_numpy(uemb).float(), recent)
    return torch.cat([torch.logsumexp(pred.pair_logits(ut[s:s + 256], it).float(), dim=1)
                      for s in range(0, len(ut), 256)]).numpy()


# ----------------------------------------------------------------------------- the run
def train_model(preset: str, work: Path, split: dict, seed: int) -> tuple[str, list[str]]:
    out = work / f"model_{preset}_seed{seed}"
    cmd = [str(Path(sys.executable).parent / "hllm-creator"), "train", "--preset", preset,
           "--data", str(work / "train_data"), "--out", str(out), "--seed", str(seed)]
    if split.get("teacher"):
        cmd += ["--train-parquet", split["teacher"]]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return str(out), cmd


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def default_data() -> str:
    """The bundled dataset's dir (prepared on first use)."""
    data = str(ROOT / ".hllm/data/amazon_scientific")
    if not (Path(data) / "manifest.json").exists():
        from hllm_creator.data.prepare import prepare_bundled

        prepare_bundled(data)
    return data


def eval_setup(data: str, work: Path, split: dict, seed: int, knn: int = 50) -> SimpleNamespace:
    """What every cold ranker is measured on: the users (every user with a remaining click; their
    histories without the held-out items), the held-out ads (``FEED-<id>`` in the product's refresh
    dataset) with their real clickers as targets (ads none of whose clickers is ranked are left out,
    and counted), the seeded tie-break, and the rankers that need no model (random, most-active and
    the two TF-IDF ones: ``scores``/``seconds``)."""
    from hllm_creator.data import load_dataset
    from hllm_creator.data.feed import refresh_dataset
    from hllm_creator.data.text import item_text
    from hllm_creator.infer.embed import histories

    # the product's refresh dataset: training catalog + the held-out items as new ads (no clicks)
    rds, _ = refresh_dataset(work / "train_data", work / "feed.jsonl", work / "refresh_data")
    ds = load_dataset(work / "train_data")
    full = load_dataset(data)
    hs = histories(ds.interactions, "all")
    users = sorted(hs.index.tolist())
    hist = {u: list(hs[u]) for u in users}
    col = {u: i for i, u in enumerate(users)}
    held = split["held_out"]
    ad_ids = [f"FEED-{h}" for h in held]
    clk = full.interactions[(full.interactions["label"] == 1) & full.interactions["item_id"].astype(str).isin(held)]
    by_item = clk.groupby(clk["item_id"].astype(str))["user_id"].agg(lambda s: sorted(set(map(str, s))))
    targets = [np.array(sorted(col[u] for u in by_item.get(h, []) if u in col), dtype=np.int64) for h in held]
    lost = sum(len(by_item.get(h, [])) for h in held) - sum(len(t) for t in targets)
    keep = np.array([len(t) > 0 for t in targets])
    clickers = {"pairs": int(sum(len(t) for t in targets)), "median_per_ad": float(np.median([len(t) for t in targets])),
                "left_out_no_history": int(lost), "ads_without_ranked_clicker": int((~keep).sum())}
    ad_ids = [x for x, k in zip(ad_ids, keep) if k]
    targets = [t for t, k in zip(targets, keep) if k]
    index = {x: i for i, x in enumerate(ds.items["item_id"].astype(str))}
    hrows = [[index[x] for x in hist[u]] for u in users]
    ad_texts = [item_text(r) for r in rds.items.set_index("item_id").loc[ad_ids].reset_index().to_dict("records")]
    tiebreak = np.random.default_rng([seed, 3]).random(len(users))

    scores, secs = {}, {}
    t = time.time()
    scores["random"] = np.random.default_rng([seed, 5]).random((len(ad_ids), len(users)))
    secs["random"] = time.time() - t
    t = time.time()
    act = np.array([len(hist[u]) for u in users], dtype=np.float64)
    scores["most_active"] = np.repeat(act[None], len(ad_ids), 0)
    secs["most_active"] = time.time() - t
    for name, (sc, sec) in tfidf_rankers(ds.items, ad_texts, hrows, knn).items():
        scores[name], secs[name] = sc, sec
    return SimpleNamespace(catalog=ds.items, refresh_items=rds.items, users=users, hist=hist, hrows=hrows,
                           ad_ids=ad_ids, ad_texts=ad_texts, targets=targets, clickers=clickers,
                           tiebreak=tiebreak, scores=scores, seconds=secs)


def run(a, data: str, work: Path, split: dict) -> dict:
    from hllm_creator.stats import bootstrap_ci
    from hllm_creator.train.trainer import bf16_supported

    res: dict = {"protocol": PROTOCOL, "data": str(data),
                 "work": str(work), "split": {k: v for k, v in split.items() if k != "held_out"},
                 "load_before": uptime(), "rankers": {}}
    train_cmd = None
    model_dir = a.model
    if a.train_preset:
        model_dir, train_cmd = train_model(a.train_preset, work, split, a.seed)
    ev = eval_setup(data, work, split, a.seed, knn=a.knn)
    res["n_ads"], res["n_users"], res["clickers"] = len(ev.ad_ids), len(ev.users), ev.clickers
    users, hist, ad_ids, targets, tiebreak = ev.users, ev.hist, ev.ad_ids, ev.targets, ev.tiebreak
    ritems = ev.refresh_items
    scores, secs = dict(ev.scores), dict(ev.seconds)
    hl = None
    if model_dir:
        hl = hllm_rankers(model_dir, ritems, users, hist, ad_ids, a.k, a.top_k, a.seed,
                          bf16=not a.fp32 and bf16_supported())
        scores["hllm"], secs["hllm"] = hl["scores"], hl["seconds"]
        scores["hllm_no_user_ids"], secs["hllm_no_user_ids"] = hl["towers_scores"], hl["seconds"]
        if hl["id_knn_scores"] is not None:
            scores["hllm_id_knn"], secs["hllm_id_knn"] = hl["id_knn_scores"], hl["seconds"]
        if hl["lse"] is not None:
            scores["hllm_norm"], secs["hllm_norm"] = hl["scores"] - hl["lse"][None, :], hl["seconds"]
            if hl["id_knn_scores"] is not None:
                scores["hllm_id_knn_norm"] = hl["id_knn_scores"] - hl["lse"][None, :]
                secs["hllm_id_knn_norm"] = hl["seconds"]
    # fused rankers (z-scored sums, weights cross-fitted over two folds of the ads): the content
    # baselines fused with each other (a content baseline too), and the HLLM predictor added to that
    # fusion (does the predictor know something about a new ad's audience the text neighbours do not?)
    fusion_w = {}
    scores["content_fusion"], fusion_w["content_fusion"] = cross_fit_fusion(
        scores["item_knn"], scores["tfidf_user"], targets, tiebreak, a.seed)
    secs["content_fusion"] = secs["item_knn"] + secs["tfidf_user"]
    if hl is not None:
        scores["hllm_hybrid"], fusion_w["hllm_hybrid"] = cross_fit_fusion(
            scores["content_fusion"], scores["hllm"], targets, tiebreak, a.seed)
        secs["hllm_hybrid"] = secs["content_fusion"] + secs["hllm"]
    res["fusion_weights"] = {"grid": list(FUSION_GRID), "per_fold": fusion_w,
                             "how": "zscore(first) + w * zscore(second); w of each fold picked on the other "
                                    "fold's mean Recall@100 (cross_fit_fusion)",
                             "content_fusion": "item_knn + w * tfidf_user", "hllm_hybrid": "content_fusion + w * hllm"}
    pu = {}
    for name, s in scores.items():
        pu[name] = audience_metrics(top_users(s, tiebreak, K_USERS), targets, K_USERS)
        if hl is not None:
            chosen = hl["chosen"] if name == "hllm" else pick_clusters(mean_by_cluster(s, hl["assign"], hl["k"]),
                                                                       a.top_k)
            pu[name][f"lift@top{a.top_k}"] = cluster_lift(chosen, hl["assign"], targets)
    best = max(CONTENT, key=lambda n: pu[n][f"recall@{K_USERS}"].mean())
    res["best_content"] = best
    for name, v in pu.items():
        r = res["rankers"][name] = {"seconds": round(secs[name], 2)}
        r.update(bootstrap_ci(v, baseline=pu[best] if name in ("hllm", "hllm_hybrid") else None,
                              n_boot=a.bootstrap, seed=a.seed))
        for m in r.values():
            if isinstance(m, dict) and "diff" in m:
                m["diff_vs"] = best
    if hl is not None:
        r = res["rankers"]["hllm"]
        r["model_dir"], r["model_hash"] = str(model_dir), hl["model_hash"]
        for k in ("embed_users_seconds", "score_seconds", "cluster_seconds", "match_seconds"):
            r[k] = round(hl[k], 2)
        res["clusters"] = {"k": hl["k"], "top_k": a.top_k, "sizes": np.bincount(hl["assign"]).tolist(),
                           "hllm_choice": "infer.match.match (member-mean embedding + member ID parts)",
                           "others_choice": "highest mean member score"}
        mdir = Path(model_dir)
        for f, key in (("eval.json", "warm_eval"), ("train_summary.json", "train_summary")):
            if (mdir / f).exists():
                js = json.loads((mdir / f).read_text())
                res[key] = ({k: js["model"][k] for k in ("recall@10", "ndcg@10", "mrr", "auc", "n_users")}
                            if key == "warm_eval" else {k: js.get(k) for k in ("train_seconds", "head_fit_seconds",
                                                                              "steps", "creative_rows")})
                if key == "train_summary":
                    res[key]["preset"] = js.get("config", {}).get("preset")
    res["load_after"] = uptime()
    res["commands"] = {"benchmark": " ".join([".venv/bin/python", "benchmarks/cold_start.py", *(sys.argv[1:])]),
                       **({"train": " ".join(train_cmd)} if train_cmd else
                          {"train": a.train_command} if a.train_command else {})}
    print_table(res, a.top_k)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    np.savez_compressed(Path(a.out).with_suffix(".per_ad.npz"), ads=np.array(ad_ids),
                        **{f"{n}/{k}": v for n, d in pu.items() for k, v in d.items()})
    print(f"wrote {a.out}")
    if not a.no_mlflow:
        from benchmarks.quality.rec_report import log_run

        log_run(None, res)  # the run named recommendation (rec_report: both tables in one run)
    return res


def metric_keys(res: dict) -> list[str]:
    return [k for k in next(iter(res["rankers"].values())) if k != "seconds"]


def print_table(res: dict, top_k: int) -> None:
    keys = metric_keys(res)
    print(f"\n{'ranker':<13}" + "".join(f"{k:>26}" for k in keys) + f"{'seconds':>10}")
    for name, r in res["rankers"].items():
        print(f"{name:<13}" + "".join(f"{r[k]['mean']:.4f} [{r[k]['ci'][0]:.4f},{r[k]['ci'][1]:.4f}]".rjust(26)
                                      for k in keys) + f"{r['seconds']:>10.1f}")
        if "diff" in r[keys[0]]:
            print(f"{'  - ' + res['best_content']:<13}" + "".join(
                f"{r[k]['diff']:+.4f} [{r[k]['diff_ci'][0]:+.4f},{r[k]['diff_ci'][1]:+.4f}]".rjust(26) for k in keys))


def add_split_args(ap: argparse.ArgumentParser) -> None:
    """The split's arguments, shared with the benchmarks that read this split (cold_item_space)."""
    ap.add_argument("--data", default=None, help="dataset dir (default: the bundled one under .hllm/data)")
    ap.add_argument("--work", default=None, help="work dir of the split (default .hllm/cold_start/seed<seed>)")
    ap.add_argument("--share", type=float, default=0.1, help="share of the catalog's items held out as new ads")
    ap.add_argument("--min-clicks", type=int, default=5, help="a held-out ad has at least this many clicks")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the CIs")
    ap.add_argument("--seed", type=int, default=0, help="the split's and the bootstrap's seed")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_split_args(ap)
    ap.add_argument("--model", default=os.environ.get("HLLM_COLD_MODEL"),
                    help="a model dir trained on WORK/train_data")
    ap.add_argument("--train-preset", default=None, help="train the HLLM here (hllm-creator train --preset P)")
    ap.add_argument("--teacher", default=None, help="teacher parquet (filtered of the held-out items)")
    ap.add_argument("--knn", type=int, default=50, help="item_knn: neighbours of the ad")
    ap.add_argument("--k", type=int, default=32, help="clusters (the product's cluster step)")
    ap.add_argument("--top-k", type=int, default=3, help="clusters picked per ad")
    ap.add_argument("--fp32", action="store_true", help="HLLM: no bf16 autocast (default: bf16 where the CPU has it)")
    ap.add_argument("--train-command", default=None, help="with --model: how it was trained (recorded in the JSON)")
    ap.add_argument("--prepare-only", action="store_true")
    ap.add_argument("--no-mlflow", action="store_true")
    ap.add_argument("--out", default=None, help="default benchmarks/results/cold_start.json with a model, "
                    "cold_start_baselines.json without (make bench does not overwrite the full table)")
    a = ap.parse_args(argv)
    data = a.data or default_data()
    work = Path(a.work or ROOT / f".hllm/cold_start/seed{a.seed}")
    a.out = a.out or str(ROOT / "benchmarks/results" / ("cold_start.json" if a.model or a.train_preset
                                                        else "cold_start_baselines.json"))
    split = prepare_split(data, work, share=a.share, min_clicks=a.min_clicks, seed=a.seed, teacher=a.teacher)
    print(json.dumps({k: v for k, v in split.items() if k != "held_out"}), flush=True)
    if a.prepare_only:
        return split
    return run(a, data, work, split)


if __name__ == "__main__":
    main()
