"""A feed of real ads outside the training catalog, for the refresh demo (issue 26).

Takes a prepared dataset, picks ``n`` real items (deterministic: usable titles, 2-20 clicks, ordered
by a hash of the id), and writes (1) the dataset WITHOUT them (their items and every click on them
removed: the model trained on it has never seen them) and (2) a feed (JSONL) of those items under
new ids ``FEED-<id>`` with their own text, no selling points (derived as `data prepare` does).

    python benchmarks/feed_holdout.py DATASET --n 50 --out-data D --out-feed F
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--out-data", type=Path, required=True)
    ap.add_argument("--out-feed", type=Path, required=True)
    a = ap.parse_args()
    from hllm_creator.data import load_dataset
    from hllm_creator.data.prepare import prepare
    from hllm_creator.infer.match import usable_ad

    ds = load_dataset(a.data)
    clicks = ds.interactions[ds.interactions["label"] == 1]["item_id"].value_counts()
    cand = [i for i in ds.items["item_id"] if 2 <= clicks.get(i, 0) <= 20]
    titles = dict(zip(ds.items["item_id"], ds.items["title"]))
    cand = [i for i in cand if usable_ad(titles[i])]
    cand.sort(key=lambda i: hashlib.sha256(f"feed:{i}".encode()).hexdigest())
    pick = set(cand[: a.n])
    items = ds.items[~ds.items["item_id"].isin(pick)].reset_index(drop=True)
    inter = ds.interactions[~ds.interactions["item_id"].isin(pick)].reset_index(drop=True)
    prepare(items, inter, a.out_data, name=f"{ds.name}-minus{a.n}",
            source=f"{ds.manifest.get('source')}; {a.n} items and their clicks removed (benchmarks/feed_holdout.py)",
            license=str(ds.manifest.get("license")))
    rows = ds.items[ds.items["item_id"].isin(pick)]
    a.out_feed.parent.mkdir(parents=True, exist_ok=True)
    with open(a.out_feed, "w") as f:
        for r in rows.to_dict("records"):
            f.write(json.dumps({"ad_id": f"FEED-{r['item_id']}", "title": r["title"],
                                "description": r["description"] or "", "brand": r["brand"],
                                "categories": list(r["categories"])}) + "\n")
    print(json.dumps({"items": len(items), "interactions": len(inter), "removed_items": len(pick),
                      "removed_clicks": int(len(ds.interactions) - len(inter)), "feed": str(a.out_feed)}))


if __name__ == "__main__":
    main()
