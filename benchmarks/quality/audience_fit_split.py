"""Audience fit of a generate run's served titles, split into the reporting ads (the first 20) and
development ads (the rest), on two populations, each with the permutation test. An ANALYSIS with the
evaluation's ruler (MiniLM-L6): nothing here is served, trained on or selected for serving.

Why the split: a serving rule compared on the ads that report the figure has been tuned on the
figure; compare rules on the development ads (match ``--n-ads 60``: ads 21-60), report ads 1-20.
Why two populations: ``heldout`` is the personalization step's (the hash hold-out the teacher never
writes rows for, about 10% of users); ``all`` is every clustered user with a test target: the
leave-last-out test click is read by no step before the evaluation (the teacher reads histories
only, training stops before the valid and test clicks), so it is unseen for every user; the hold-out
matters for the NLL test, where a trained row could be memorized. ``all`` has ~10x the units.
Why the permutation test: the bootstrap CI resamples members and takes the assignment of titles to
clusters as given; with many units it is narrow while a random deal of the same titles moves the
mean by more than its width (see ``null95``).

    python -m benchmarks.quality.audience_fit_split --data D --clusters C --creatives G [--report-ads 20]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="dataset dir")
    ap.add_argument("--clusters", required=True, help="output dir of `hllm-creator cluster`")
    ap.add_argument("--creatives", required=True, help="creatives.parquet or the generate output dir")
    ap.add_argument("--report-ads", type=int, default=20, help="the first N ads report; the rest are development")
    ap.add_argument("--permutations", type=int, default=2000)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", help="write the figures as JSON here")
    a = ap.parse_args()

    import pandas as pd

    from hllm_creator.creative.holdout import HELDOUT_SHARE
    from hllm_creator.data import leave_last_out, load_dataset
    from hllm_creator.evaluate.inputs import heldout_members, sample_members, served_pairs
    from hllm_creator.evaluate.measures import audience_fit, copy_stats
    from hllm_creator.evaluate.ruler import Ruler
    from hllm_creator.infer import cluster as cl
    from hllm_creator.infer.common import CREATIVES, resolve_file

    ds = load_dataset(a.data)
    _, _, asg, _ = cl.load(a.clusters)
    pairs = served_pairs(pd.read_parquet(resolve_file(a.creatives, CREATIVES)))
    ads = pairs["item_id"].drop_duplicates().tolist()
    split = leave_last_out(ds.interactions)
    titles = dict(zip(ds.items["item_id"], ds.items["title"]))
    ruler = Ruler()
    res = []
    for pop, share in (("heldout", HELDOUT_SHARE), ("all", 1.0)):
        members_all = heldout_members(asg, split.users, share)
        nxt = {u: titles[t] for u, t in zip(members_all["user_id"], members_all["test_target"])}
        for part, sl in (("report", slice(0, a.report_ads)), ("development", slice(a.report_ads, None))):
            p = pairs[pairs["item_id"].isin(set(ads[sl]))]
            if p.empty:
                continue
            mem = sample_members(members_all, p["cluster_id"].unique(), None, 0)
            s, _ = audience_fit(p, mem, nxt, ruler, bootstrap=a.bootstrap, permutations=a.permutations)
            f, pm = s["fit_other"], s["fit_other_permutation"]
            d = copy_stats(p, bootstrap=500)["distinct_per_ad"]
            row = {"population": pop, "ads": part, "n_ads": int(p["item_id"].nunique()), "fit_other": f,
                   "permutation": pm, "distinct_per_ad": d["mean"]}
            res.append(row)
            print(f"{pop:8s} {part:11s} ({row['n_ads']} ads): fit {f['mean']:+.4f} [{f['ci_low']:+.4f}, "
                  f"{f['ci_high']:+.4f}] n={f['n']}  permutation p={pm['p_value']:.3f} (null 95% "
                  f"{pm['null_low']:+.4f} .. {pm['null_high']:+.4f})  distinct/ad {d['mean']:.2f}", flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps({"creatives": a.creatives, "clusters": a.clusters, "figures": res}, indent=1))


if __name__ == "__main__":
    main()
