"""Which fact should each audience see? Rules for dealing an ad's compositions (core + one fact) to
its top-3 clusters, compared by audience fit and its permutation test. An ANALYSIS with the
evaluation's ruler (MiniLM-L6): nothing here is served, trained on or selected for serving; the
``oracle`` rule picks with the ruler itself (on the members' HISTORY clicks, never the test click)
and is an upper bound of what a history signal can reach, not a rule anyone may serve.

Every rule gives a score matrix [3 clusters x n compositions] and deals distinct titles by it (the
Hungarian assignment; an ad with fewer than 3 compositions repeats them). Rules:
- ``random0..2``: random deals (what the permutation test's null is made of);
- ``vote``: the teacher's own rule, the members' mean interest-word fit (``creative.interests.fit``)
  of each fact (300 members per cluster);
- ``slot``: the Creative LLM's slot-fact pointer on the cluster's medoid (what ``generate --select
  slot`` serves);
- ``item_llm``: the Item LLM's cosine of each composition to the mean of the members' last clicks;
- ``tfidf``: TF-IDF cosine of each composition to the members' last clicked titles;
- ``lm_pmi`` (``--lm``): the embedded SmolLM2's log-probability of the fact after "A shopper recently
  looked at: <the cluster's most clicked recent titles>", minus the same after "various products";
- ``oracle``: the ruler's cosine of each composition to the mean of the members' last clicks.

Compare rules on development ads (``--ads 20:60``), report on ads 0:20 only what was chosen before.

    python -m benchmarks.quality.audience_rules --model M --data D --clusters C --ads 20:60 [--facts 4] [--lm]
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

LAST = 5  # last history clicks per member that describe a cluster


def _deal(scores, n: int) -> list[int]:
    """Distinct compositions for the 3 clusters that maximize the summed score."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    reps = int(np.ceil(len(scores) / n))
    r, c = linear_sum_assignment(-np.tile(scores, (1, reps)))
    pick = dict(zip(r.tolist(), (c % n).tolist()))
    return [pick[i] for i in range(len(scores))]


class _LmPmi:
    """log P(fact | the cluster's recent clicks) - log P(fact | no clicks) under the embedded SmolLM2."""

    NEUTRAL = "A shopper recently looked at: various products.\nWhat they want most in their next product:"

    def __init__(self):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from hllm_creator.llm.backbone import pull

        d = pull()
        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(d)
        self.lm = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()

    @staticmethod
    def context(titles: list[str]) -> str:
        return ("A shopper recently looked at: " + "; ".join(" ".join(str(t).split()[:10]) for t in titles)
                + ".\nWhat they want most in their next product:")

    def logp(self, ctx: str, conts: list[str]):
        import numpy as np

        torch = self.torch
        a = self.tok(ctx)["input_ids"]
        ids = [a + self.tok(" " + x)["input_ids"] for x in conts]
        L = max(map(len, ids))
        x = torch.full((len(ids), L), self.tok.pad_token_id or 0)
        m = torch.zeros((len(ids), L), dtype=torch.long)
        for k, s in enumerate(ids):
            x[k, :len(s)] = torch.tensor(s)
            m[k, :len(s)] = 1
        with torch.inference_mode():
            lp = torch.log_softmax(self.lm(input_ids=x, attention_mask=m).logits[:, :-1].float(), -1)
        return np.array([float(lp[k, len(a) - 1:len(s) - 1].gather(-1, torch.tensor(s[len(a):])[:, None]).sum())
                         for k, s in enumerate(ids)])

    def scores(self, contexts: list[str], facts: list[str]):
        import numpy as np

        base = self.logp(self.NEUTRAL, facts)
        return np.stack([self.logp(c, facts) - base for c in contexts])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="trained model dir")
    ap.add_argument("--data", required=True, help="dataset dir")
    ap.add_argument("--clusters", required=True, help="output dir of `hllm-creator cluster`")
    ap.add_argument("--ads", default="20:60", help="slice of match's default ad list (development: 20:60)")
    ap.add_argument("--facts", type=int, default=4, help="fact phrases per ad (generate uses 4)")
    ap.add_argument("--lm", action="store_true", help="also the SmolLM2 PMI rule (about 8 s per ad on 2 cores)")
    ap.add_argument("--population", choices=("heldout", "all"), default="heldout",
                    help="members measured: the hash hold-out, or every clustered user (test click unseen by all)")
    ap.add_argument("--permutations", type=int, default=2000)
    ap.add_argument("--out", help="write the figures as JSON here")
    a = ap.parse_args()

    import numpy as np
    import pandas as pd
    import torch
    from sklearn.feature_extraction.text import TfidfVectorizer
    from tqdm.auto import tqdm

    from hllm_creator.creative import interests as I
    from hllm_creator.creative.copy import is_copy
    from hllm_creator.creative.facts import compose, core_title, fact_phrases
    from hllm_creator.creative.gate import catalog_names
    from hllm_creator.creative.holdout import HELDOUT_SHARE
    from hllm_creator.data import leave_last_out, load_dataset
    from hllm_creator.data.text import item_text
    from hllm_creator.evaluate.inputs import heldout_members, sample_members
    from hllm_creator.evaluate.measures import audience_fit
    from hllm_creator.evaluate.ruler import Ruler
    from hllm_creator.infer import cluster as cl
    from hllm_creator.infer.embed import _encoder, histories, load_model
    from hllm_creator.infer.generate import ad_of, ground
    from hllm_creator.infer.match import default_ads, member_id_parts, score_pairs
    from hllm_creator.model.collate import fact_batch

    lo, hi = map(int, a.ads.split(":"))
    ds = load_dataset(a.data)
    model = load_model(a.model)
    _, _, asg, _ = cl.load(a.clusters)
    means, medoids = cl.load_slots(a.clusters, "mean"), cl.load_slots(a.clusters, "medoid")
    byid = {r["item_id"]: r for r in ds.items.to_dict("records")}
    known = catalog_names(ds.items)
    ads = default_ads(ds.items, ds.interactions, hi)[lo:hi]
    hist = histories(ds.interactions, "no-test")
    enc = _encoder(model, 32)
    S = score_pairs(model, means, enc([item_text(byid[x]) for x in ads]), progress=False,
                    user_id_part=member_id_parts(model, asg, hist, len(means)), item_index=model.item_index(ads))
    members_of = asg.assign(user_id=asg["user_id"].astype(str)).groupby("cluster_id")["user_id"].apply(list).to_dict()
    tops = [list(np.argsort(-S[i], kind="stable")[:3]) for i in range(len(ads))]
    recent = {c: [i for u in members_of[c] for i in list(hist.get(u, []))[-LAST:]] for t in tops for c in t}
    need = sorted({i for v in recent.values() for i in v})
    ruler = Ruler()
    rv = dict(zip(need, ruler.encode([byid[i]["title"] for i in need])))
    iv = dict(zip(need, enc([item_text(byid[i]) for i in need])))
    tf = TfidfVectorizer(sublinear_tf=True, min_df=2, token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z0-9]+\b").fit(
        ds.items["title"].tolist())
    vocab = I.Vocabulary(list(byid.values()))
    lm = _LmPmi() if a.lm else None
    interests: dict[str, I.Interests] = {}

    def interests_of(u):
        if u not in interests:
            interests[u] = I.interests([byid[i] for i in hist.get(u, [])], vocab)
        return interests[u]

    def unit(m):
        m = np.asarray(m, dtype=np.float64).ravel()
        return m / (np.linalg.norm(m) + 1e-12)

    def centre(c, vecs):
        return unit(np.mean([vecs[i] for i in recent[c]], 0))

    rules = ["random0", "random1", "random2", "vote", "slot", "item_llm", "tfidf", *(["lm_pmi"] if lm else []),
             "oracle"]
    dealt: dict[str, list] = {r: [] for r in rules}
    rng = np.random.default_rng(0)
    n_cands = []
    for ad, cs in tqdm(list(zip(ads, tops)), desc="ads", unit="ad"):
        item = byid[ad]
        adr, core = ad_of(item), core_title(item["title"])
        keep = [(compose(core, f), f) for f in fact_phrases(adr, a.facts)]
        keep = [(t, f) for t, f in keep if ground(t, adr, known)[0] and not is_copy(t, item["title"])]
        titles, facts = [t for t, _ in keep], [f for _, f in keep]
        if len(titles) < 2:
            t = titles[0] if titles else item["title"]
            for r in rules:
                dealt[r] += [(ad, c, item["title"], t) for c in cs]
            continue
        n = len(titles)
        n_cands.append(n)
        sc = {}
        for s in range(3):
            sc[f"random{s}"] = rng.random((3, n))
        v = np.zeros((3, n))
        for k, c in enumerate(cs):
            ms = members_of[c]
            ms = [ms[j] for j in np.random.default_rng(int(c)).choice(len(ms), min(300, len(ms)), replace=False)]
            v[k] = np.mean([[I.fit(x, interests_of(u)) for x in facts] for u in ms], 0)
        sc["vote"] = v
        fb = fact_batch(model.tokenizers["creative"], [list(facts)] * 3)
        with torch.inference_mode():
            slot = model.slot_embedding(torch.from_numpy(np.asarray(medoids[cs], dtype=np.float32)).to(model.device))
            sc["slot"] = model.fact_pointer(slot, fb.to(model.device)).cpu().numpy()
        ti = enc([item_text({**item, "title": t}) for t in titles])
        ti = ti / np.linalg.norm(ti, axis=1, keepdims=True)
        sc["item_llm"] = np.stack([ti @ centre(c, iv) for c in cs])
        tv = tf.transform(titles).toarray()
        tv = tv / (np.linalg.norm(tv, axis=1, keepdims=True) + 1e-12)
        sc["tfidf"] = np.stack([tv @ unit(tf.transform([byid[i]["title"] for i in recent[c]]).mean(0)) for c in cs])
        if lm:
            ctx = [lm.context([byid[i]["title"] for i, _ in collections.Counter(recent[c]).most_common(8)]) for c in cs]
            sc["lm_pmi"] = lm.scores(ctx, facts)
        sc["oracle"] = np.stack([ruler.encode(titles) @ centre(c, rv) for c in cs])
        for r in rules:
            pick = _deal(sc[r], n)
            dealt[r] += [(ad, c, item["title"], titles[pick[k]]) for k, c in enumerate(cs)]

    split = leave_last_out(ds.interactions)
    members_all = heldout_members(asg, split.users, HELDOUT_SHARE if a.population == "heldout" else 1.0)
    tt = dict(zip(ds.items["item_id"], ds.items["title"]))
    nxt = {u: tt[t] for u, t in zip(members_all["user_id"], members_all["test_target"])}
    print(f"ads {a.ads}: {len(n_cands)} of {len(ads)} with >= 2 compositions, "
          f"{np.mean(n_cands) if n_cands else 0:.2f} compositions per such ad; population {a.population}")
    res = []
    for r in rules:
        pairs = pd.DataFrame(dealt[r], columns=["item_id", "cluster_id", "original_title", "title"])
        mem = sample_members(members_all, pairs["cluster_id"].unique(), None, 0)
        s, _ = audience_fit(pairs, mem, nxt, ruler, bootstrap=1000, permutations=a.permutations)
        f, p = s["fit_other"], s["fit_other_permutation"]
        res.append({"rule": r, "fit_other": f, "permutation": p,
                    "distinct_per_ad": float(pairs.groupby("item_id")["title"].nunique().mean())})
        print(f"{r:9s} fit {f['mean']:+.4f} [{f['ci_low']:+.4f}, {f['ci_high']:+.4f}] n={f['n']}  "
              f"p={p['p_value']:.3f} (null 95% to {p['null_high']:+.4f})", flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps({"ads": a.ads, "facts": a.facts, "population": a.population,
                                           "compositions_per_ad": float(np.mean(n_cands)) if n_cands else 0.0,
                                           "rules": res}, indent=1))


if __name__ == "__main__":
    main()
