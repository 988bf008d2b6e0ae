"""The personalization measures (definitions: ``evaluate.personalization``): copy rate and distinct
titles, the audience fit with its permutation test, the NLL with own vs shuffled users, the greedy
slot swap and the cross-cluster GSB."""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd

from hllm_creator.creative.copy import normalize_title
from hllm_creator.creative.titles import clean_title
from hllm_creator.data.schema import DataError
from hllm_creator.evaluate.config import PersonalizationConfig
from hllm_creator.evaluate.frontier import harm_frontier
from hllm_creator.infer import embed as E
from hllm_creator.infer.item_cache import ItemCache
from hllm_creator.llm.client import LLMClient, default_cache_path
from hllm_creator.stats import boot_mean, derangement, permutation_summary
from hllm_creator.teacher.gsb import GSBConfig, final_verdict, gsb_stats, judge_request, judge_verdict


def copy_stats(pairs: pd.DataFrame, *, bootstrap: int = 2000, seed: int = 0) -> dict:
    """Copy rate over served pairs and distinct served titles per ad (see module docstring)."""
    copy = boot_mean(pairs["copy"].astype(float), pairs["item_id"], bootstrap=bootstrap, seed=seed)
    per_ad = pairs.assign(_n=pairs["title"].map(normalize_title)).groupby("item_id", sort=False)
    distinct = per_ad["_n"].nunique()
    dist = boot_mean(distinct.to_numpy(dtype=float), bootstrap=bootstrap, seed=seed)
    return {"copy_rate": copy, "distinct_per_ad": dist,
            "clusters_per_ad": float(per_ad.size().mean()) if len(pairs) else None,
            "ads": int(pairs["item_id"].nunique()), "pairs": int(len(pairs))}


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
    return {**permutation_summary(total / n_units, observed), "permutations": int(permutations), "observed": observed}


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


def response_nll(model, user_emb, prompt1: list[str], prompt2: list[str], responses: list[str], *,
                 batch_size: int = 8):
    """Mean per-token NLL of each response (its tokens + the end marker, as in training) given
    ``prompt1 + [projector(user_emb)] + prompt2`` -> Tensor[n] (float32, no grad)."""
    import torch
    import torch.nn.functional as F

    from hllm_creator.model.collate import IGNORE  # torch at import

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
    keys = [f"{k:08d}" for k in range(len(seqs))]
    cache = ItemCache(E.cache_id(model), persist=False)
    if model_dir:
        E.seed_cache(cache, model, model_dir, items)
    users, emb = E.embed_users(model, items, pd.Series(seqs, index=keys), cache=cache, progress=False)
    pos = {u: k for k, u in enumerate(users)}
    return emb[[pos[k] for k in keys]]


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
    extra = {"autocast_bf16": True} if cfg.bf16 and "autocast_bf16" in inspect.signature(model.generate).parameters \
        else {}
    with torch.inference_mode():
        outs = model.generate(torch.from_numpy(np.ascontiguousarray(slots, dtype=np.float32)), p1, p2,
                              do_sample=False, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, **extra)
    n = len(df)
    df["title_own"] = [clean_title(t) for t in outs[:n]]
    df["title_swapped"] = [clean_title(t) for t in outs[n:]]
    df["changed"] = [normalize_title(a) != normalize_title(b) for a, b in zip(df["title_own"], df["title_swapped"])]
    summ = {"swap_changed": boot_mean(df["changed"].astype(float), df["item_id"], bootstrap=cfg.bootstrap,
                                      seed=cfg.seed), "pairs": int(n)}
    return summ, df


def cross_cluster_gsb(pairs: pd.DataFrame, members: dict[int, pd.DataFrame], items: pd.DataFrame,
                      cfg: PersonalizationConfig, client=None) -> tuple[dict, pd.DataFrame]:
    """For a held-out member of c: c's served title (a) vs another cluster's (b), both orders."""
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
