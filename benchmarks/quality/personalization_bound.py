"""How much audience fit can a fact choice carry at all? An ANALYSIS with the evaluation's ruler
(MiniLM-L6): nothing here is served, trained on or selected for serving.

The teacher's own rule (``creative.interests``: the fact that carries most of a history's interest
words) is applied with no model at two granularities, and measured like the personalization step's
``fit_other`` on held-out users (``creative.holdout.is_heldout``; their last click is the next click):

- user level: each held-out user x each ad with >= 2 facts: cos(core - the user's fact, next click)
  minus the mean cos of the ad's other facts' titles (the ceiling of a per-user title);
- cluster level: for the selected (ad, cluster) pairs of a match run, the fact the cluster's members'
  histories (targets excluded, up to 300 members) fit best; each held-out member's next click against
  the ad's other selected clusters' facts.

    python -m benchmarks.quality.personalization_bound --data D --clusters O/cluster --matches O/match
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd


def boot(d: np.ndarray, rng, n: int = 1000) -> dict:
    bs = [rng.choice(d, len(d)).mean() for _ in range(n)] if len(d) else [np.nan]
    return {"mean": float(d.mean()) if len(d) else float("nan"), "ci_low": float(np.quantile(bs, 0.025)),
            "ci_high": float(np.quantile(bs, 0.975)), "n": int(len(d))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="dataset dir")
    ap.add_argument("--clusters", required=True, help="output dir of `hllm-creator cluster`")
    ap.add_argument("--matches", required=True, help="output dir of `hllm-creator match`")
    ap.add_argument("--members", type=int, default=300, help="members per cluster whose histories vote")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    from hllm_creator.creative.facts import compose, core_title, fact_phrases
    from hllm_creator.creative.holdout import is_heldout
    from hllm_creator.creative.interests import Vocabulary, fit, interests
    from hllm_creator.data import load_dataset
    from hllm_creator.data.split import user_sequences
    from hllm_creator.evaluate.ruler import Ruler

    ds = load_dataset(a.data)
    byid = {r["item_id"]: r for r in ds.items.to_dict("records")}
    vocab = Vocabulary(list(byid.values()))
    mt = pd.read_parquet(Path(a.matches) / "matches.parquet")
    pairs = mt[mt["selected"]][["item_id", "cluster_id"]]
    seqs = {str(u): s for u, s in user_sequences(ds.interactions).items()}
    rng = np.random.default_rng(a.seed)
    facts = {ad: fact_phrases(byid[ad], 4) for ad in pairs["item_id"].unique()}
    facts = {ad: f for ad, f in facts.items() if len(f) >= 2}
    titles = {ad: [compose(core_title(byid[ad]["title"]), f) for f in fs] for ad, fs in facts.items()}
    ruler = Ruler()
    allt = sorted({t for ts in titles.values() for t in ts})
    te = dict(zip(allt, ruler.encode(allt)))
    users = [u for u, s in seqs.items() if is_heldout(u) and len(s) >= 3]
    ne = dict(zip(users, ruler.encode([byid[seqs[u][-1]]["title"] for u in users])))
    cache: dict[str, object] = {}

    def interests_of(u: str):
        if u not in cache:
            cache[u] = interests([byid[i] for i in seqs.get(u, [])[:-1]], vocab)
        return cache[u]

    def cos(ad: str, u: str) -> list[float]:
        return [float(te[t] @ ne[u]) for t in titles[ad]]

    user = []
    for u in users:
        it = interests_of(u)
        for ad, fs in facts.items():
            sc = [fit(f, it) for f in fs]
            if max(sc) > 0:
                c, k = cos(ad, u), int(np.argmax(sc))
                user.append(c[k] - np.mean([x for j, x in enumerate(c) if j != k]))
    asg = pd.read_parquet(Path(a.clusters) / "assignments.parquet")
    members = asg.assign(user_id=asg["user_id"].astype(str)).groupby("cluster_id")["user_id"].apply(list).to_dict()
    choice = {}
    for ad, c in zip(pairs["item_id"], pairs["cluster_id"]):
        if ad in facts:
            ms = members[c]
            ms = [ms[i] for i in rng.choice(len(ms), min(a.members, len(ms)), replace=False)]
            choice[(ad, c)] = int(np.argmax(np.sum([[fit(f, interests_of(u)) for f in facts[ad]] for u in ms], 0)))
    clus = []
    for ad, g in pairs.groupby("item_id"):
        if ad not in facts:
            continue
        cs = g["cluster_id"].tolist()
        for c in cs:
            others = [choice[(ad, x)] for x in cs if x != c]
            for u in members[c]:
                if u in ne and others:
                    cc = cos(ad, u)
                    clus.append(cc[choice[(ad, c)]] - np.mean([cc[o] for o in others]))
    distinct = [len({choice[(ad, c)] for c in g["cluster_id"]}) for ad, g in pairs.groupby("item_id") if ad in facts]
    res = {"user_level": boot(np.array(user), rng), "cluster_level": boot(np.array(clus), rng),
           "clusters": int(asg["cluster_id"].nunique()), "ads_with_2_facts": len(facts),
           "distinct_facts_per_ad_cluster_rule": float(np.mean(distinct)) if distinct else None}
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
