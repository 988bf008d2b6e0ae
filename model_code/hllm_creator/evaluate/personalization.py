"""Measure personalization directly, on held-out users (DESIGN section 8; issue 11, deliverable 1).

GSB against the original title cannot tell a personalized title from a generically better one, so
this step measures what personalization means, on the users of the evaluation hold-out
(:func:`hllm_creator.creative.holdout.is_heldout`: their last click, the leave-last-out test target,
is seen neither by the teacher nor by training). Every figure comes with a bootstrap 95% interval.

- **copy rate**: share of SERVED titles (creatives.parquet ``title``) equal to the ad's original
  title after normalization (NFKC, casefold, punctuation and whitespace folded). CI: resampling ads.
- **distinct titles per ad**: distinct normalized served titles across the ad's selected clusters
  (the original counts as one title). Mean over ads, CI resampling ads.
- **slot sensitivity, greedy**: for each selected (ad, cluster c) pair, a greedy title with c's own
  slot (as generate fills it: the medoid by default, or the member mean) and one with another
  selected cluster's slot for the same ad (a random other cluster when the ad has one): share of
  pairs whose cleaned title changes. CI resampling ads.
- **slot sensitivity, NLL**: on held-out teacher rows (train.parquet ``split == "heldout"``, else
  rows of held-out users), the response's mean per-token NLL with the row's own user embedding
  (its ``item_id_list`` through the Item and User LLMs) and with a shuffled user's (a derangement
  among those rows): the paired difference shuffled - own (> 0: the slot carries the user).
  CI resampling rows.
- **audience fit**: for each selected (ad, c) and each held-out member m of c (at most
  ``members_per_cluster``, seeded; default all): ``cos(title_c, next_m) - mean_c' cos(title_c', next_m)`` over the
  ad's other served titles (``fit_other``) and ``cos(title_c, next_m) - cos(original, next_m)``
  (``fit_original``), next_m = the title of m's held-out next click, cos = the ruler (MiniLM-L6,
  never trained on or selected with). CI resampling members (units clustered by member).
  That CI takes the assignment of titles to clusters as given, so it cannot tell an assignment
  that fits its audiences from a lucky one; the **permutation test** can (``fit_other_permutation``):
  the same served titles dealt to the ad's clusters at random (a permutation per ad,
  ``permutations`` times) give the null distribution of the mean ``fit_other``; the p-value is the
  share of deals at least as good as the served one (one-sided, add-one).
- **cross-cluster GSB** (with a judge endpoint): for a held-out member of c, the judge compares c's
  served title (a) with another cluster's served title for the same ad (b), both orders (a flip is
  Same); identical titles are not judged (counted). Adv, CI and the judge-failure rate.

Outputs: ``personalization.json`` (figures, intervals, n's, definitions), ``per_ad.parquet`` (ad,
cluster, the cluster's top interests, served title, source, copy flag), ``audience_fit.parquet``,
``slot_swap.parquet``, plots; MLflow: a nested step run ``personalization`` with ``pers_*`` metrics.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from typing import Literal

from pydantic import Field

from hllm_creator.config import StepConfig
from hllm_creator.creative.copy import is_copy, normalize_title
from hllm_creator.creative.holdout import HELDOUT_SHARE, is_heldout
from hllm_creator.data.schema import DataError
from hllm_creator.llm.client import LLMConfig

log = logging.getLogger(__name__)

REPORT = "personalization.json"
PER_AD = "per_ad.parquet"

DEFINITIONS = {
    "copy_rate": "share of served titles (creatives.title) equal to the original after NFKC + casefold + "
                 "punctuation/whitespace folding; CI resampling ads",
    "distinct_per_ad": "distinct normalized served titles per ad across its selected clusters (the original "
                       "counts as one); mean over ads, CI resampling ads",
    "swap_changed": "greedy title with the cluster's own slot vs another selected cluster's slot for the same "
                    "ad: share of pairs whose cleaned title changes; CI resampling ads",
    "nll_diff": "held-out teacher rows: mean per-token response NLL with a shuffled user's embedding minus "
                "with the own user's (> 0: the slot carries the user); CI resampling rows",
    "fit_other": "ruler cos(title_c, next click of held-out member m of c) minus the mean cos of the ad's other "
                 "served titles to the same next click; CI resampling members",
    "fit_original": "ruler cos(title_c, next_m) minus cos(original title, next_m); CI resampling members",
    "fit_other_permutation": "fit_other of the served assignment against the same titles dealt to each ad's clusters "
                             "at random: p = share of random deals with a mean fit_other at least as high (one-sided, "
                             "add-one); null mean and 95% range",
    "xgsb": "judge: c's served title (a) vs another cluster's served title (b) for a held-out member of c, "
            "both orders, flip = Same; Adv = (G - B) / n, CI resampling samples",
}


class PersonalizationConfig(StepConfig):
    """Config of ``hllm-creator personalization``."""

    model_dir: str
    data_dir: str
    clusters_dir: str = Field(..., description="cluster step dir: assignments.parquet, member_means.npy")
    matches: str = Field(..., description="matches.parquet or the match step dir")
    creatives: str = Field(..., description="creatives.parquet or the generate step dir")
    train_set: str | None = Field(None, description="construct's train.parquet (or its dir): held-out rows "
                                                    "for the NLL test; none = NLL not measured")
    max_ads: int | None = Field(20, ge=1, description="the first N ads of creatives.parquet")
    members_per_cluster: int | None = Field(None, ge=1, description="held-out members per cluster (seeded sample); "
                                            "none = every held-out member")
    permutations: int = Field(2000, ge=0, description="random deals of each ad's served titles to its clusters "
                              "for the audience fit's permutation test (0 = no test)")
    heldout_share: float = Field(HELDOUT_SHARE, gt=0.0, le=1.0,
                                 description="the hold-out share (must match the teacher's)")
    swap_pairs: int | None = Field(None, ge=1, description="at most N (ad, cluster) pairs for the greedy swap")
    nll_rows: int = Field(128, ge=2, description="at most N held-out teacher rows for the NLL test")
    max_new_tokens: int = Field(32, ge=1, description="greedy swap titles")
    batch_size: int = Field(8, ge=1)
    bf16: bool = Field(False, description="bf16 autocast for the greedy swap titles (the NLL test stays float32)")
    slot: Literal["medoid", "mean"] = Field("medoid", description="the cluster's slot, as generate uses it: the "
                                            "member nearest the centroid (medoid) or the mean member embedding")
    bootstrap: int = Field(2000, ge=100)
    seed: int = 0
    interests_top: int = Field(3, ge=1, description="top interests shown per cluster")
    judge_samples: int = Field(0, ge=0, description="cross-cluster GSB samples (0 = no judge)")
    judge_max_tokens: int = 64
    history_len: int = 10
    llm: LLMConfig = Field(default_factory=LLMConfig)


# ---------------------------------------------------------------------------------- statistics
def boot_mean(values, groups=None, *, bootstrap: int = 2000, seed: int = 0, ci: float = 0.95) -> dict:
    """Mean of ``values`` and a bootstrap ``ci`` interval that resamples ``groups`` (default: each
    value its own group) with replacement: a clustered bootstrap of a ratio mean."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0, "groups": 0}
    g = np.arange(len(v)) if groups is None else np.asarray(groups)
    _, inv = np.unique(g, return_inverse=True)
    sums = np.bincount(inv, weights=v)
    cnt = np.bincount(inv).astype(np.float64)
    G = len(sums)
    rng = np.random.default_rng(seed)
    means = []
    for s in range(0, bootstrap, 250):
        idx = rng.integers(0, G, size=(min(250, bootstrap - s), G))
        means.append(sums[idx].sum(1) / cnt[idx].sum(1))
    means = np.concatenate(means)
    lo, hi = np.quantile(means, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    # minimum detectable effect at 5% two-sided and 80% power: (1.96 + 0.84) standard errors, the
    # standard error read off the bootstrap distribution
    return {"mean": float(v.mean()), "ci_low": float(lo), "ci_high": float(hi), "n": int(len(v)), "groups": int(G),
            "mde": float(2.8 * means.std(ddof=1)) if len(means) > 1 else None}


def derangement(groups: list, rng: np.random.Generator, tries: int = 200) -> np.ndarray:
    """A permutation p with ``groups[p[i]] != groups[i]`` for every i (a user is never paired with
    itself); falls back to the best of ``tries`` random permutations, then to a sorted shift."""
    n = len(groups)
    if n < 2:
        raise ValueError("a derangement needs at least 2 rows")
    g = np.asarray([str(x) for x in groups], dtype=object)
    best, best_bad = None, n + 1
    for _ in range(tries):
        p = rng.permutation(n)
        bad = int((g[p] == g).sum())
        if bad == 0:
            return p
        if bad < best_bad:
            best, best_bad = p, bad
    order = np.argsort(g, kind="stable")  # shift by the largest group size: no row meets its own group
    shift = max(Counter(g.tolist()).values())
    p = np.empty(n, dtype=np.int64)
    p[order] = order[(np.arange(n) + shift) % n]
    return p if int((g[p] == g).sum()) <= best_bad else best


# ---------------------------------------------------------------------------------- text
def _clean_title(text: str) -> str:
    try:
        from hllm_creator.creative.titles import clean_title
    except ImportError:
        from hllm_creator.infer.generate import clean_title
    return clean_title(text)


# ---------------------------------------------------------------------------------- inputs
def _read(path: str | Path, name: str, cols: tuple[str, ...]) -> tuple[pd.DataFrame, str]:
    from hllm_creator.infer.common import resolve_file

    f = resolve_file(path, name)
    try:
        df = pd.read_parquet(f)
    except Exception as e:
        raise DataError(f"cannot read parquet: {e}", file=str(f)) from None
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}; found {list(df.columns)}", file=str(f), column=missing[0])
    return df, str(f)


def served_pairs(creatives: pd.DataFrame, file: str = "creatives.parquet") -> pd.DataFrame:
    """creatives -> item_id, cluster_id, original_title, title (SERVED), source, copy.

    The served title is the ``title`` column; older files without it serve ``llm_output`` where
    ``grounded`` and the original otherwise. ``source`` is kept when present, else derived."""
    df = creatives.reset_index(drop=True).copy()
    if "title" not in df.columns:
        if "llm_output" not in df.columns:
            raise DataError("creatives need a served `title` column (or llm_output + grounded)", file=file,
                            column="title")
        ok = df["grounded"].astype(bool) if "grounded" in df.columns else pd.Series(True, index=df.index)
        out = df["llm_output"].fillna("").astype(str)
        df["title"] = np.where(ok & (out.str.strip() != ""), out, df["original_title"])
    for i, t in enumerate(df["title"]):
        if not isinstance(t, str) or not t.strip():
            raise DataError("empty served title", file=file, column="title", row=i)
    df["copy"] = [is_copy(t, o) for t, o in zip(df["title"], df["original_title"])]
    if "source" not in df.columns:
        df["source"] = np.where(df["copy"], "original", "generated")
    if "candidate_title" not in df.columns:  # creatives from before the do-no-harm check
        df["candidate_title"] = df["title"]
    df["candidate_title"] = df["candidate_title"].fillna(df["title"])
    for col in ("harm_gain", "content_gain"):  # creatives from before the check / before its content estimate
        if col not in df.columns:
            df[col] = np.nan
    return df[["item_id", "cluster_id", "original_title", "title", "source", "copy", "candidate_title",
               "harm_gain", "content_gain"]].astype({"cluster_id": "int64", "copy": bool, "harm_gain": "float64",
                                                     "content_gain": "float64"})


def copy_stats(pairs: pd.DataFrame, *, bootstrap: int = 2000, seed: int = 0) -> dict:
    """Copy rate over served pairs and distinct served titles per ad (see module docstring)."""
    copy = boot_mean(pairs["copy"].astype(float), pairs["item_id"], bootstrap=bootstrap, seed=seed)
    per_ad = pairs.assign(_n=pairs["title"].map(normalize_title)).groupby("item_id", sort=False)
    distinct = per_ad["_n"].nunique()
    dist = boot_mean(distinct.to_numpy(dtype=float), bootstrap=bootstrap, seed=seed)
    return {"copy_rate": copy, "distinct_per_ad": dist,
            "clusters_per_ad": float(per_ad.size().mean()) if len(pairs) else None,
            "ads": int(pairs["item_id"].nunique()), "pairs": int(len(pairs))}


def heldout_members(asg: pd.DataFrame, split_users: pd.DataFrame, share: float) -> pd.DataFrame:
    """Held-out users with a test target: user_id, cluster_id, test_target, history (oldest first)."""
    tgt = split_users[split_users["user_id"].map(lambda u: is_heldout(u, share))]
    m = asg[["user_id", "cluster_id"]].astype({"user_id": str}).merge(
        tgt[["user_id", "test_target", "history", "valid_target"]], on="user_id", how="inner")
    return m.sort_values(["cluster_id", "user_id"]).reset_index(drop=True)


def sample_members(members: pd.DataFrame, clusters, k: int | None, seed: int) -> dict[int, pd.DataFrame]:
    """At most ``k`` (None: all) held-out members per cluster, seeded per cluster (the same members
    for every ad)."""
    out = {}
    for c in sorted({int(x) for x in clusters}):
        mc = members[members["cluster_id"] == c]
        if k is not None and len(mc) > k:
            mc = mc.iloc[np.sort(np.random.default_rng(seed + 7919 * c).choice(len(mc), size=k, replace=False))]
        out[c] = mc.reset_index(drop=True)
    return out


def cluster_interests(asg: pd.DataFrame, hist: pd.Series, items: pd.DataFrame, clusters, top: int = 3) -> dict:
    """cluster -> its members' most common leaf categories and brands (from their click histories)."""
    by_id = items.set_index("item_id")
    leaf = {i: (list(c)[-1] if c is not None and len(c) else None) for i, c in by_id["categories"].items()}
    brand = by_id["brand"].to_dict() if "brand" in by_id.columns else {}
    want = {int(c) for c in clusters}
    cnt: dict[int, Counter] = {c: Counter() for c in want}
    for u, c in zip(asg["user_id"].astype(str), asg["cluster_id"].astype(int)):
        if c not in want or u not in hist.index:
            continue
        for i in hist[u]:
            if leaf.get(i):
                cnt[c][leaf[i]] += 1
            b = brand.get(i)
            if isinstance(b, str) and b.strip():
                cnt[c][b.strip()] += 1
    return {c: [k for k, _ in cnt[c].most_common(top)] for c in sorted(want)}


# ---------------------------------------------------------------------------------- the ruler
def fit_permutation(cos: list[tuple[np.ndarray, np.ndarray]], observed: float, *, permutations: int = 2000,
                    seed: int = 0) -> dict:
    """Permutation test of the mean ``fit_other``: per ad, ``cos[a] = (own, C)`` with ``C[u, j]`` the
    ruler cosine of unit u's next click with the title of the ad's j-th cluster and ``own[u]`` the
    position of u's own cluster. A deal is a random permutation p of each ad's titles over its
    clusters; unit u then scores ``C[u, p[own]] - mean_{j != own} C[u, p[j]]``. Returns the null
    mean, its 95% range and the one-sided add-one p-value of ``observed``."""
    cos = [(o, c) for o, c in cos if c.shape[1] > 1 and len(o)]
    n_units = sum(len(o) for o, _ in cos)
    if not permutations or not n_units:
        return {"p_value": None, "null_mean": None, "null_low": None, "null_high": None, "permutations": 0,
                "observed": observed}
    rng = np.random.default_rng(seed)
    total = np.zeros(permutations)
    for own, C in cos:
        n = C.shape[1]
        # fit = own_cos - (row_sum - own_cos) / (n - 1): a deal only moves the own title's cosine
        row = C.sum(1)
        perms = np.argsort(rng.random((permutations, n)), axis=1)           # [P, n]
        own_cos = C[np.arange(len(own))[None, :], perms[:, own]]            # [P, U]
        total += (own_cos * n / (n - 1) - row[None, :] / (n - 1)).sum(1)
    null = total / n_units
    return {"p_value": float((1 + np.sum(null >= observed - 1e-12)) / (1 + permutations)),
            "null_mean": float(null.mean()), "null_low": float(np.quantile(null, 0.025)),
            "null_high": float(np.quantile(null, 0.975)), "permutations": int(permutations), "observed": observed}


def audience_fit(pairs: pd.DataFrame, members: dict[int, pd.DataFrame], next_title: dict[str, str], ruler, *,
                 bootstrap: int = 2000, seed: int = 0, permutations: int = 0) -> tuple[dict, pd.DataFrame]:
    """(summary, units): one unit per (held-out member m of c, selected pair (ad, c)).

    ``members[c]`` holds ``user_id`` (+ ``test_target``); ``next_title[user_id]`` is the title of the
    member's held-out next click; ``ruler.encode(texts)`` gives unit vectors."""
    units = []
    for ad, grp in pairs.groupby("item_id", sort=False):
        titles = dict(zip(grp["cluster_id"].astype(int), grp["title"]))
        orig = grp["original_title"].iloc[0]
        for c, t in titles.items():
            others = [titles[o] for o in titles if o != c]
            for u in members.get(c, pd.DataFrame(columns=["user_id"]))["user_id"]:
                units.append({"user_id": u, "item_id": ad, "cluster_id": c, "title": t, "original_title": orig,
                              "next_click": next_title[u], "others": others})
    if not units:
        empty = boot_mean([], bootstrap=bootstrap, seed=seed)
        return {"fit_other": empty, "fit_original": empty, "members": 0}, pd.DataFrame()
    cand = dict(zip(zip(pairs["item_id"], pairs["cluster_id"].astype(int)), pairs["candidate_title"])) \
        if "candidate_title" in pairs.columns else {}
    gain = dict(zip(zip(pairs["item_id"], pairs["cluster_id"].astype(int)), pairs["harm_gain"])) \
        if "harm_gain" in pairs.columns else {}
    cgain = dict(zip(zip(pairs["item_id"], pairs["cluster_id"].astype(int)), pairs["content_gain"])) \
        if "content_gain" in pairs.columns else {}
    for u in units:
        u["candidate_title"] = cand.get((u["item_id"], u["cluster_id"]), u["title"])
        u["harm_gain"] = gain.get((u["item_id"], u["cluster_id"]), np.nan)
        u["content_gain"] = cgain.get((u["item_id"], u["cluster_id"]), np.nan)
    texts = sorted({x for u in units for x in [u["title"], u["original_title"], u["next_click"], u["candidate_title"],
                                                *u["others"]]})
    vec = dict(zip(texts, ruler.encode(texts)))
    for u in units:
        n = vec[u["next_click"]]
        u["cos_title"] = float(vec[u["title"]] @ n)
        u["cos_original"] = float(vec[u["original_title"]] @ n)
        u["cos_others"] = float(np.mean([vec[o] @ n for o in u["others"]])) if u["others"] else np.nan
        u["fit_other"] = u["cos_title"] - u["cos_others"]
        u["fit_original"] = u["cos_title"] - u["cos_original"]
        u["fit_candidate"] = float(vec[u["candidate_title"]] @ n) - u["cos_original"]
        u["n_others"] = len(u.pop("others"))
    df = pd.DataFrame(units)
    has = df["n_others"] > 0
    fit_other = boot_mean(df.loc[has, "fit_other"], df.loc[has, "user_id"], bootstrap=bootstrap, seed=seed)
    per_ad = []
    for ad, grp in pairs.groupby("item_id", sort=False):
        cs = grp["cluster_id"].astype(int).tolist()
        tv = np.stack([vec[t] for t in grp["title"]])
        du = df[(df["item_id"] == ad) & (df["n_others"] > 0)]
        if len(du):
            nv = np.stack([vec[t] for t in du["next_click"]])
            per_ad.append((np.asarray([cs.index(int(c)) for c in du["cluster_id"]]), nv @ tv.T))
    perm = fit_permutation(per_ad, fit_other["mean"] if fit_other["mean"] is not None else float("nan"),
                           permutations=permutations, seed=seed)
    summ = {"fit_other": fit_other, "fit_other_permutation": perm,
            "fit_original": boot_mean(df["fit_original"], df["user_id"], bootstrap=bootstrap, seed=seed),
            "cos_title_mean": float(df["cos_title"].mean()), "cos_original_mean": float(df["cos_original"].mean()),
            "members": int(df["user_id"].nunique()),
            "served_personalized_share": float((~pairs["copy"]).mean()) if "copy" in pairs.columns else None,
            "harm_frontier": harm_frontier(pairs, df, bootstrap=bootstrap, seed=seed)}
    return summ, df


HARM_THRESHOLDS = (-np.inf, -1.0, -0.5, -0.25, -0.1, 0.0, 0.1, 0.25, 0.5, 1.0, np.inf)


def harm_frontier(pairs: pd.DataFrame, units: pd.DataFrame, *, thresholds=HARM_THRESHOLDS, bootstrap: int = 2000,
                  seed: int = 0) -> list[dict]:
    """Do no harm, over its threshold: at threshold t a pair serves its personalized title (its
    ``candidate_title``, the title before the check) when the product's estimate ``harm_gain`` >= t,
    else the original (rule ``predictor``); where the creatives carry the Item LLM's ``content_gain``,
    the same thresholds with ``content_gain`` >= 0 as well (rule ``both``, generate's default) and the
    content estimate alone (rule ``content``). Per point: the share of pairs that serve a personalized
    title and the audience fit vs the original over the units (the ruler: the evaluation, not the
    rule). Empty when the creatives carry no ``harm_gain`` (a run without the check)."""
    if units.empty or "harm_gain" not in units.columns or units["harm_gain"].isna().all():
        return []
    pers = np.array([not is_copy(c, o) for c, o in zip(pairs["candidate_title"], pairs["original_title"])])
    g_pairs = pairs["harm_gain"].to_numpy(dtype=float)
    u_pers = np.array([not is_copy(c, o) for c, o in zip(units["candidate_title"], units["original_title"])])
    g = units["harm_gain"].to_numpy(dtype=float)
    has_content = "content_gain" in units.columns and units["content_gain"].notna().any() \
        and "content_gain" in pairs.columns and pairs["content_gain"].notna().any()
    c_pairs = pairs["content_gain"].to_numpy(dtype=float) if has_content else None
    c_units = units["content_gain"].to_numpy(dtype=float) if has_content else None

    def point(rule: str, label: str, t: float, serve_u: np.ndarray, serve_p: np.ndarray) -> dict:
        fit = boot_mean(np.where(serve_u, units["fit_candidate"], 0.0), units["user_id"], bootstrap=bootstrap,
                        seed=seed)
        return {"rule": rule, "threshold": float(t), "label": label,
                "personalized_share": float(serve_p.mean()), "fit_original": fit}

    out = []
    rules = [("predictor", None)] + ([("both", 0.0)] if has_content else [])
    for rule, c0 in rules:
        for t in thresholds:
            if rule == "both" and not np.isfinite(t):
                continue  # no check and always the original are the predictor curve's ends
            label = "no check" if t == -np.inf else "always the original" if t == np.inf else f"gain >= {t:+.2f}"
            su, sp = u_pers & (g >= t), pers & (g_pairs >= t)
            if c0 is not None:
                su, sp, label = su & (c_units >= c0), sp & (c_pairs >= c0), label + ", content >= 0"
            out.append(point(rule, label, t, su, sp))
    if has_content:
        out.append(point("content", "content >= 0", -np.inf, u_pers & (c_units >= 0), pers & (c_pairs >= 0)))
    return out


# ---------------------------------------------------------------------------------- the model
def response_nll(model, user_emb, prompt1: list[str], prompt2: list[str], responses: list[str], *,
                 batch_size: int = 8):
    """Mean per-token NLL of each response (its tokens + the end marker, as in training) given
    ``prompt1 + [projector(user_emb)] + prompt2`` -> Tensor[n] (float32, no grad)."""
    import torch
    import torch.nn.functional as F

    from hllm_creator.model.collate import IGNORE

    if not (len(user_emb) == len(prompt1) == len(prompt2) == len(responses)):
        raise ValueError(f"response_nll: {len(user_emb)} embeddings, {len(prompt1)} prompt1, {len(prompt2)} "
                         f"prompt2, {len(responses)} responses")
    was = model.training
    model.eval()
    out = []
    with torch.inference_mode():
        for s in range(0, len(responses), batch_size):
            b = model.creative_batch(prompt1[s:s + batch_size], prompt2[s:s + batch_size],
                                     responses[s:s + batch_size])
            u = model.slot_embedding(torch.as_tensor(user_emb[s:s + batch_size], dtype=torch.float32)
                                     .to(model.device))
            logits = model._slot_forward(b, u, labels=False).logits.float()
            lab = b.labels.to(logits.device)[:, 1:]
            tok = F.cross_entropy(logits[:, :-1].transpose(1, 2), lab.clamp(min=0), reduction="none")
            m = (lab != IGNORE).float()
            out.append(((tok * m).sum(1) / m.sum(1).clamp(min=1)).cpu())
    model.train(was)
    return torch.cat(out) if out else torch.zeros(0)


def user_embeddings(model, items: pd.DataFrame, seqs: list[list[str]], model_dir: str | None = None) -> np.ndarray:
    """Histories (item ids, oldest first) -> user embeddings, items through the model's item cache."""
    from hllm_creator.infer import embed as E
    from hllm_creator.infer.item_cache import ItemCache

    keys = [f"{k:08d}" for k in range(len(seqs))]
    cache = ItemCache(E.cache_id(model), persist=False)
    if model_dir:
        E.seed_cache(cache, model, model_dir, items)
    users, emb = E.embed_users(model, items, pd.Series(seqs, index=keys), cache=cache, progress=False)
    pos = {u: k for k, u in enumerate(users)}
    return emb[[pos[k] for k in keys]]


def heldout_rows(train: pd.DataFrame, share: float, file: str) -> tuple[pd.DataFrame, str]:
    """The teacher rows the NLL test uses: ``split == "heldout"``, else the rows of held-out users."""
    for c in ("response", "item_id_list", "user_id"):
        if c not in train.columns:
            raise DataError(f"missing column {c!r}", file=file, column=c)
    if "split" in train.columns and (train["split"] == "heldout").any():
        return train[train["split"] == "heldout"].reset_index(drop=True), "split == heldout"
    return (train[train["user_id"].astype(str).map(lambda u: is_heldout(u, share))].reset_index(drop=True),
            "rows of held-out users (no split column with heldout rows)")


def nll_shuffle(model, rows: pd.DataFrame, items: pd.DataFrame,
                cfg: PersonalizationConfig) -> tuple[dict, pd.DataFrame]:
    """Own vs shuffled user embedding: paired NLL difference (shuffled - own) over held-out rows."""
    rows = rows[rows["item_id_list"].map(lambda x: x is not None and len(x) > 0)
                & rows["response"].map(lambda r: isinstance(r, str) and bool(r.strip()))]
    rows = rows.head(cfg.nll_rows).reset_index(drop=True)
    if len(rows) < 2 or rows["user_id"].nunique() < 2:
        return {"nll_diff": boot_mean([]), "rows": int(len(rows)),
                "note": "fewer than 2 held-out teacher rows of distinct users: NLL not measured"}, pd.DataFrame()
    by_id = {r["item_id"]: r for r in items.to_dict("records")}
    emb = user_embeddings(model, items, [list(x) for x in rows["item_id_list"]], cfg.model_dir)
    p1, p2 = [], []
    for r in rows.to_dict("records"):
        a, b = r.get("prompt1"), r.get("prompt2")
        if not (isinstance(a, str) and isinstance(b, str) and b.strip()):
            it = by_id.get(r.get("target_item_id"))
            if it is None:
                raise DataError("row has no prompt1/prompt2 and its target_item_id is not in the dataset",
                                column="target_item_id")
            sp = it.get("selling_points")
            a, b = model.build_prompts({"title": it["title"], "description": it.get("description") or "",
                                        "selling_points": list(sp) if sp is not None else []})
        p1.append(a)
        p2.append(b)
    resp = rows["response"].tolist()
    perm = derangement(rows["user_id"].tolist(), np.random.default_rng(cfg.seed))
    own = response_nll(model, emb, p1, p2, resp, batch_size=cfg.batch_size).numpy()
    shuf = response_nll(model, emb[perm], p1, p2, resp, batch_size=cfg.batch_size).numpy()
    uids = rows["user_id"].astype(str).to_numpy()
    df = pd.DataFrame({"user_id": uids, "shuffled_user": uids[perm],
                       "response": resp, "nll_own": own, "nll_shuffled": shuf, "diff": shuf - own})
    summ = {"nll_diff": boot_mean(df["diff"], bootstrap=cfg.bootstrap, seed=cfg.seed),
            "nll_own": float(own.mean()), "nll_shuffled": float(shuf.mean()), "rows": int(len(df)),
            "own_lower_share": float((df["diff"] > 0).mean())}
    return summ, df


def slot_swap(model, pairs: pd.DataFrame, items: pd.DataFrame, user_slot: np.ndarray, cfg: PersonalizationConfig,
              ) -> tuple[dict, pd.DataFrame]:
    """Greedy titles with the own vs another cluster's slot, per selected (ad, cluster) pair."""
    import torch

    rng = np.random.default_rng(cfg.seed)
    k = len(user_slot)
    rows = []
    for ad, grp in pairs.groupby("item_id", sort=False):
        cs = grp["cluster_id"].astype(int).tolist()
        for j, c in enumerate(cs):
            if len(cs) > 1:
                other = cs[(j + 1) % len(cs)]
            elif k > 1:
                other = int(rng.choice([x for x in range(k) if x != c]))
            else:
                continue
            rows.append({"item_id": ad, "cluster_id": c, "other_cluster": other})
    rows = rows[:cfg.swap_pairs] if cfg.swap_pairs else rows
    if not rows:
        return {"swap_changed": boot_mean([]), "pairs": 0, "note": "one cluster only: nothing to swap"}, pd.DataFrame()
    df = pd.DataFrame(rows)
    by_id = {r["item_id"]: r for r in items.to_dict("records")}
    prompts = {}
    for ad in df["item_id"].unique():
        it = by_id[ad]
        sp = it.get("selling_points")
        prompts[ad] = model.build_prompts({"title": it["title"], "description": it.get("description") or "",
                                           "selling_points": list(sp) if sp is not None else []})
    p1 = [prompts[a][0] for a in df["item_id"]] * 2
    p2 = [prompts[a][1] for a in df["item_id"]] * 2
    slots = np.concatenate([user_slot[df["cluster_id"].to_numpy()], user_slot[df["other_cluster"].to_numpy()]])
    import inspect

    extra = {"autocast_bf16": True} if cfg.bf16 and "autocast_bf16" in inspect.signature(model.generate).parameters \
        else {}
    with torch.inference_mode():
        outs = model.generate(torch.from_numpy(np.ascontiguousarray(slots, dtype=np.float32)), p1, p2,
                              do_sample=False, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, **extra)
    n = len(df)
    df["title_own"] = [_clean_title(t) for t in outs[:n]]
    df["title_swapped"] = [_clean_title(t) for t in outs[n:]]
    df["changed"] = [normalize_title(a) != normalize_title(b) for a, b in zip(df["title_own"], df["title_swapped"])]
    summ = {"swap_changed": boot_mean(df["changed"].astype(float), df["item_id"], bootstrap=cfg.bootstrap,
                                      seed=cfg.seed), "pairs": int(n)}
    return summ, df


# ---------------------------------------------------------------------------------- the judge
def cross_cluster_gsb(pairs: pd.DataFrame, members: dict[int, pd.DataFrame], items: pd.DataFrame,
                      cfg: PersonalizationConfig, client=None) -> tuple[dict, pd.DataFrame]:
    """For a held-out member of c: c's served title (a) vs another cluster's (b), both orders."""
    from hllm_creator.teacher.gsb import GSBConfig, final_verdict, gsb_stats, judge_request, judge_verdict

    titles = dict(zip(items["item_id"], items["title"]))
    desc = dict(zip(items["item_id"], items["description"].fillna("")))
    samples, identical = [], 0
    for ad, grp in pairs.groupby("item_id", sort=False):
        recs = grp.to_dict("records")
        for j, r in enumerate(recs):
            if len(recs) < 2:
                break
            o = recs[(j + 1) % len(recs)]
            if normalize_title(r["title"]) == normalize_title(o["title"]):
                identical += 1
                continue
            mc = members.get(int(r["cluster_id"]))
            if mc is None:
                continue
            for u, h in zip(mc["user_id"], mc["history"]):
                samples.append({"sample": f"{ad}:{r['cluster_id']}:{u}", "user_id": u, "item_id": ad,
                                "cluster_id": int(r["cluster_id"]), "other_cluster": int(o["cluster_id"]),
                                "title_list": [titles[i] for i in list(h)][-cfg.history_len:], "user_profile": "",
                                "original_title": titles[ad], "original_description": desc.get(ad, ""),
                                "title_a": r["title"], "title_b": o["title"]})
    samples = samples[:cfg.judge_samples]
    if not samples:
        return {"identical_pairs": identical, "n": 0, "note": "nothing to judge (identical titles or no members)"}, \
            pd.DataFrame()
    gcfg = GSBConfig(judge_max_tokens=cfg.judge_max_tokens, history_len=cfg.history_len, bootstrap=cfg.bootstrap,
                     seed=cfg.seed, llm=cfg.llm)
    if client is None:
        from hllm_creator.llm.client import LLMClient, default_cache_path

        llm = cfg.llm if cfg.llm.cache_path else cfg.llm.model_copy(update={"cache_path": default_cache_path()})
        client = LLMClient(llm)
    reqs = []
    for i, s in enumerate(samples):
        reqs.append(judge_request(s, s["title_a"], s["title_b"], gcfg, (i, "ab")))
        reqs.append(judge_request(s, s["title_b"], s["title_a"], gcfg, (i, "ba")))
    got = {r.tag: judge_verdict(r)[0] for r in client.map(reqs, desc="cross-cluster judge")}
    for i, s in enumerate(samples):
        s["verdict_ab"], s["verdict_ba"] = got[(i, "ab")], got[(i, "ba")]
        s["final"] = final_verdict(s["verdict_ab"], s["verdict_ba"])
        s["judge_failed"] = s["verdict_ab"] is None or s["verdict_ba"] is None
    df = pd.DataFrame(samples).drop(columns=["title_list", "original_description"])
    c = df["final"].value_counts()
    st = gsb_stats(int(c.get("G", 0)), int(c.get("S", 0)), int(c.get("B", 0)), bootstrap=cfg.bootstrap, seed=cfg.seed)
    st.update({"identical_pairs": identical, "judge_failures": int(df["judge_failed"].sum()),
               "judge_failure_rate": float(df["judge_failed"].mean()), "judge_model": getattr(client, "model", None)})
    return st, df


# ---------------------------------------------------------------------------------- the step
def run(cfg: PersonalizationConfig, out: str | Path | None = None, *, model=None, ruler=None, client=None,
        progress: bool = True, log_mlflow: bool = True) -> dict:
    """The step: every figure of the module docstring; writes the outputs to ``out`` and logs them."""
    from hllm_creator import tracking
    from hllm_creator.data import leave_last_out, load_dataset
    from hllm_creator.infer import cluster as cl
    from hllm_creator.infer.common import CREATIVES, MATCHES
    from hllm_creator.infer.embed import histories, load_model

    t0 = time.time()
    ds = load_dataset(cfg.data_dir)
    _, _, asg, _ = cl.load(cfg.clusters_dir)
    user_slot = cl.load_slots(cfg.clusters_dir, cfg.slot)
    cr, cr_file = _read(cfg.creatives, CREATIVES, ("item_id", "cluster_id", "original_title"))
    m, m_file = _read(cfg.matches, MATCHES, ("item_id", "cluster_id", "score", "rank", "selected"))
    known = set(ds.items["item_id"])
    for i, (iid, c) in enumerate(zip(cr["item_id"], cr["cluster_id"])):
        if iid not in known:
            raise DataError(f"item_id {iid!r} is not an item of the dataset", file=cr_file, column="item_id", row=i)
        if not 0 <= int(c) < len(user_slot):
            raise DataError(f"cluster_id {c} outside 0..{len(user_slot) - 1} of the cluster dir", file=cr_file,
                            column="cluster_id", row=i)
    pairs = served_pairs(cr, cr_file)
    ads = pairs["item_id"].drop_duplicates().tolist()[:cfg.max_ads] if cfg.max_ads else None
    if ads is not None:
        pairs = pairs[pairs["item_id"].isin(set(ads))].reset_index(drop=True)
    pairs = pairs.merge(m[["item_id", "cluster_id", "score", "rank"]], on=["item_id", "cluster_id"], how="left")
    if pairs.empty:
        raise DataError("no served (ad, cluster) pairs to measure", file=cr_file)
    split = leave_last_out(ds.interactions)
    members_all = heldout_members(asg, split.users, cfg.heldout_share)
    members = sample_members(members_all, pairs["cluster_id"].unique(), cfg.members_per_cluster, cfg.seed)
    titles = dict(zip(ds.items["item_id"], ds.items["title"]))
    next_title = {u: titles[t] for u, t in zip(members_all["user_id"], members_all["test_target"])}
    interests = cluster_interests(asg, histories(ds.interactions, "no-test"), ds.items, pairs["cluster_id"].unique(),
                                  cfg.interests_top)
    res: dict = {"definitions": DEFINITIONS, "heldout_share": cfg.heldout_share,
                 "heldout_users_clustered": int(len(members_all)),
                 "heldout_members_used": int(sum(len(v) for v in members.values()))}
    res["copy"] = copy_stats(pairs, bootstrap=cfg.bootstrap, seed=cfg.seed)
    if ruler is None:
        from hllm_creator.evaluate.ruler import Ruler

        ruler = Ruler()
    from hllm_creator.evaluate.ruler import RULER_NAME

    res["ruler"] = RULER_NAME
    res["audience_fit"], fit_df = audience_fit(pairs, members, next_title, ruler, bootstrap=cfg.bootstrap,
                                               seed=cfg.seed, permutations=cfg.permutations)
    model = model if model is not None else load_model(cfg.model_dir)
    res["slot_swap"], swap_df = slot_swap(model, pairs, ds.items, user_slot, cfg)
    nll_df = pd.DataFrame()
    if cfg.train_set:
        train, tf = _read(cfg.train_set, "train.parquet", ())
        rows, how = heldout_rows(train, cfg.heldout_share, tf)
        res["nll"], nll_df = nll_shuffle(model, rows, ds.items, cfg)
        res["nll"]["rows_from"] = how
    else:
        res["nll"] = {"nll_diff": boot_mean([]), "rows": 0, "note": "no train_set given: NLL not measured"}
    xg_df = pd.DataFrame()
    if cfg.judge_samples:
        res["xgsb"], xg_df = cross_cluster_gsb(pairs, members, ds.items, cfg, client)
    else:
        res["xgsb"] = {"n": 0, "note": "no judge (judge_samples = 0)"}
    per_ad = pairs.assign(interests=pairs["cluster_id"].map(lambda c: interests.get(int(c), [])),
                          heldout_members=pairs["cluster_id"].map(lambda c: len(members.get(int(c), []))))
    per_ad = per_ad[["item_id", "cluster_id", "interests", "original_title", "title", "source", "copy", "score",
                     "rank", "heldout_members"]]
    res["seconds"] = round(time.time() - t0, 2)
    res["metrics"] = metrics_of(res)
    res["headline"] = headline(res)
    if out is not None:
        write_outputs(res, per_ad, out, fit_df=fit_df, swap_df=swap_df, nll_df=nll_df, xgsb_df=xg_df)
    if log_mlflow:
        with tracking.step_run("personalization", cfg):
            log_personalization(res, per_ad, out)
    res["per_ad"] = per_ad
    return res


def metrics_of(res: dict) -> dict[str, float]:
    """Flat ``pers_*`` metrics (value, ci_low, ci_high, n) of every figure that was measured."""
    out: dict[str, float] = {}

    def put(name, d):
        if d and d.get("mean") is not None:
            out[f"pers_{name}"] = d["mean"]
            out[f"pers_{name}_ci_low"] = d["ci_low"]
            out[f"pers_{name}_ci_high"] = d["ci_high"]
            out[f"pers_{name}_n"] = d["n"]

    put("copy_rate", res["copy"]["copy_rate"])
    put("distinct_per_ad", res["copy"]["distinct_per_ad"])
    put("swap_changed", res["slot_swap"].get("swap_changed"))
    put("nll_diff", res["nll"].get("nll_diff"))
    put("fit_other", res["audience_fit"].get("fit_other"))
    put("fit_original", res["audience_fit"].get("fit_original"))
    for k in ("fit_other", "fit_original"):
        d = res["audience_fit"].get(k) or {}
        if d.get("mde") is not None:
            out[f"pers_{k}_mde"] = d["mde"]
    if res["audience_fit"].get("served_personalized_share") is not None:
        out["pers_served_personalized_share"] = res["audience_fit"]["served_personalized_share"]
    pm = res["audience_fit"].get("fit_other_permutation") or {}
    if pm.get("p_value") is not None:
        out.update({"pers_fit_other_perm_p": pm["p_value"], "pers_fit_other_null_mean": pm["null_mean"],
                    "pers_fit_other_null_high": pm["null_high"]})
    x = res.get("xgsb") or {}
    if x.get("n"):
        out.update({"pers_xgsb_adv": x["adv"], "pers_xgsb_adv_ci_low": x["ci_low"],
                    "pers_xgsb_adv_ci_high": x["ci_high"], "pers_xgsb_n": x["n"],
                    "pers_xgsb_judge_failure_rate": x["judge_failure_rate"]})
    if "nll_own" in res["nll"]:
        out["pers_nll_own"], out["pers_nll_shuffled"] = res["nll"]["nll_own"], res["nll"]["nll_shuffled"]
    out["pers_ads"] = res["copy"]["ads"]
    out["pers_pairs"] = res["copy"]["pairs"]
    out["pers_heldout_members"] = res["heldout_members_used"]
    return {k: float(v) for k, v in out.items() if v is not None}


def _fmt(d: dict | None, pct: bool = False, digits: int = 3) -> str:
    if not d or d.get("mean") is None:
        return "not measured"
    f = (lambda x: f"{100 * x:.1f}%") if pct else (lambda x: f"{x:.{digits}f}")
    mde = f", MDE {f(d['mde'])}" if d.get("mde") is not None else ""
    return f"{f(d['mean'])} (95% CI {f(d['ci_low'])} .. {f(d['ci_high'])}, n={d['n']}{mde})"


def _perm(p: dict | None) -> str:
    if not p or p.get("p_value") is None:
        return ""
    return (f"; random deals of the same titles: {p['null_mean']:.4f} (95% {p['null_low']:.4f} .. "
            f"{p['null_high']:.4f}), p = {p['p_value']:.3f}")


def headline(res: dict) -> list[str]:
    """The headline figures, one line each (the demo's closing summary prints them)."""
    lines = [f"copy rate (served = original): {_fmt(res['copy']['copy_rate'], pct=True)}",
             f"distinct served titles per ad: {_fmt(res['copy']['distinct_per_ad'], digits=2)}",
             "greedy titles that change when the slot is swapped: "
             f"{_fmt(res['slot_swap'].get('swap_changed'), pct=True)}",
             f"NLL shuffled - own user (held-out rows): {_fmt(res['nll'].get('nll_diff'), digits=4)}",
             f"audience fit vs the ad's other titles: {_fmt(res['audience_fit'].get('fit_other'), digits=4)}"
             + _perm(res['audience_fit'].get('fit_other_permutation')),
             f"audience fit vs the original title: {_fmt(res['audience_fit'].get('fit_original'), digits=4)}"
             + (f"; {100 * res['audience_fit']['served_personalized_share']:.0f}% of the served titles personalized"
                if res['audience_fit'].get('served_personalized_share') is not None else "")]
    x = res.get("xgsb") or {}
    if x.get("n"):
        lines.append(f"cross-cluster GSB: G={x['G']} S={x['S']} B={x['B']} Adv {x['adv_pct']:.1f}% (95% CI "
                     f"{100 * x['ci_low']:.1f}% .. {100 * x['ci_high']:.1f}%), judge failures "
                     f"{100 * x['judge_failure_rate']:.0f}%")
    return lines


def summary_lines(res: dict, per_ad: pd.DataFrame, max_ads: int = 20) -> list[str]:
    """Per ad: the original once, then each selected cluster's top interests and its SERVED title;
    then the headline figures."""
    lines = []
    for k, (ad, grp) in enumerate(per_ad.groupby("item_id", sort=False)):
        if k >= max_ads:
            lines.append(f"... {per_ad['item_id'].nunique() - max_ads} more ads in per_ad.parquet")
            break
        lines.append(f"ad {ad}: original  {grp['original_title'].iloc[0]!r}")
        for r in grp.itertuples():
            tag = ("original" if r.source == "original" else "copy") if r.copy else r.source
            interests = ", ".join(list(r.interests)) or "-"
            lines.append(f"  cluster {r.cluster_id:>3} [{interests}]  ->  {r.title!r} ({tag})")
    lines.append("personalization (held-out users):")
    lines += [f"  {x}" for x in res["headline"]]
    return lines


# ---------------------------------------------------------------------------------- outputs
def figure(res: dict):
    """Bar chart of the figures with their 95% intervals (one panel per scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("share", [("copy rate", res["copy"]["copy_rate"]),
                         ("swap changed", res["slot_swap"].get("swap_changed"))]),
              ("difference", [("fit vs other", res["audience_fit"].get("fit_other")),
                              ("fit vs original", res["audience_fit"].get("fit_original")),
                              ("NLL shuf - own", res["nll"].get("nll_diff"))]),
              ("titles", [("distinct / ad", res["copy"]["distinct_per_ad"])])]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.4), gridspec_kw={"width_ratios": [2, 3, 1]})
    for ax, (ylabel, items) in zip(axes, panels):
        names = [n for n, _ in items]
        vals = [d["mean"] if d and d.get("mean") is not None else np.nan for _, d in items]
        lo = [v - d["ci_low"] if d and d.get("mean") is not None else 0 for v, (_, d) in zip(vals, items)]
        hi = [d["ci_high"] - v if d and d.get("mean") is not None else 0 for v, (_, d) in zip(vals, items)]
        ax.bar(names, np.nan_to_num(vals), yerr=[lo, hi], capsize=4, color="#2a9d8f")
        ax.axhline(0, color="black", lw=0.6)
        pm = res["audience_fit"].get("fit_other_permutation") or {}
        if "fit vs other" in names and pm.get("p_value") is not None:  # where random deals of the same titles land
            x = names.index("fit vs other")
            ax.fill_between([x - 0.45, x + 0.45], pm["null_low"], pm["null_high"], color="grey", alpha=0.3,
                            label=f"random deals, 95% (p = {pm['p_value']:.2f})")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_ylabel(ylabel)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle("personalization on held-out users (95% bootstrap CIs)", fontsize=10)
    fig.tight_layout()
    return fig


def frontier_figure(frontier: list[dict]):
    """Do no harm's frontier: audience fit vs the original (95% CI) against the share of pairs that
    serve a personalized title, one point per threshold of the product's estimate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colours = {"predictor": "#264653", "both": "#e76f51", "content": "#2a9d8f"}
    for rule in ("predictor", "both", "content"):
        pts = [p for p in frontier if p.get("rule", "predictor") == rule and p["fit_original"].get("mean") is not None]
        if not pts:
            continue
        x = [100 * p["personalized_share"] for p in pts]
        y = [p["fit_original"]["mean"] for p in pts]
        err = [[v - p["fit_original"]["ci_low"] for v, p in zip(y, pts)],
               [p["fit_original"]["ci_high"] - v for v, p in zip(y, pts)]]
        names = {"predictor": "predictor gain >= t", "both": "predictor >= t and content >= 0",
                 "content": "content >= 0"}
        ax.errorbar(x, y, yerr=err, fmt="o-" if len(pts) > 1 else "s", capsize=3, color=colours[rule],
                    label=names[rule])
        for xi, yi, p in zip(x, y, pts):
            if rule == "predictor":
                ax.annotate(p["label"], (xi, yi), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("served titles that are personalized (%)")
    ax.set_ylabel("audience fit vs the original (ruler)")
    ax.set_title("do no harm: the product's estimates and their thresholds", fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def table_figure(per_ad: pd.DataFrame, max_rows: int = 30):
    """The per-ad table (ad, cluster, interests, served title, source) as an image, titles wrapped
    whole (they differ at their end: the original plus one selling point)."""
    from hllm_creator.tracking.plots import table_figure as wrapped

    t = per_ad.head(max_rows)
    return wrapped(["ad", "cluster", "top interests", "served title", "source"],
                   [[r.item_id, r.cluster_id, ", ".join(list(r.interests)), r.title,
                     ("original" if r.source == "original" else "copy") if r.copy else r.source]
                    for r in t.itertuples()], [6, 7, 30, 60, 9])


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, float) and not np.isfinite(o):
        return None
    return o


def write_outputs(res: dict, per_ad: pd.DataFrame, out: str | Path, *, fit_df=None, swap_df=None, nll_df=None,
                  xgsb_df=None) -> Path:
    import matplotlib.pyplot as plt

    from hllm_creator.io import atomic_path, write_json, write_parquet

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(_jsonable({k: v for k, v in res.items() if k != "per_ad"}), out / REPORT)
    write_parquet(per_ad.reset_index(drop=True), out / PER_AD)
    for name, df in (("audience_fit", fit_df), ("slot_swap", swap_df), ("nll", nll_df), ("xgsb", xgsb_df)):
        if df is not None and len(df):
            write_parquet(df.reset_index(drop=True), out / f"{name}.parquet")
    for name, fig in (("personalization.png", figure(res)), ("per_ad.png", table_figure(per_ad))):
        with atomic_path(out / name) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
    return out


def log_personalization(res: dict, per_ad: pd.DataFrame, out: str | Path | None) -> None:
    """Into the active step run: pers_* metrics, the report, the bar chart, the per-ad table."""
    from hllm_creator import tracking

    tracking.log_metrics(res["metrics"])
    tracking.log_json(_jsonable({k: v for k, v in res.items() if k != "per_ad"}), REPORT)
    tracking.log_figure(figure(res), "personalization.png")
    tracking.log_figure(table_figure(per_ad), "per_ad.png")
    frontier = res["audience_fit"].get("harm_frontier") or []
    if frontier:
        tracking.log_figure(frontier_figure(frontier), "do_no_harm_frontier.png")
        tracking.log_table(pd.DataFrame([{"rule": p.get("rule", "predictor"), "label": p["label"],
                                          "personalized_share": p["personalized_share"],
                                          **{f"fit_original_{k}": p["fit_original"].get(k)
                                             for k in ("mean", "ci_low", "ci_high", "n")}} for p in frontier]),
                           "do_no_harm_frontier")
    tab = per_ad.assign(interests=per_ad["interests"].map(lambda x: ", ".join(list(x))))
    tracking.log_table(tab, "per_ad")
    if out is not None:
        for f in sorted(Path(out).glob("*.parquet")):
            tracking.log_artifact(f, "personalization")
