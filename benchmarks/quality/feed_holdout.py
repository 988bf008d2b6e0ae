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


def write_holdout(ds, pick: set[str], out_data: Path, out_feed: Path, *, name: str, why: str) -> dict:
    """Write ``ds`` WITHOUT the items of ``pick`` and every click on them (``out_data``, the
    dataset-dir contract) and the feed (JSONL) of those items under new ids ``FEED-<id>``, with their
    own text and no selling points (refresh derives them as ``data prepare`` does). Returns counts."""
    from hllm_creator.data.prepare import prepare

    items = ds.items[~ds.items["item_id"].isin(pick)].reset_index(drop=True)
    inter = ds.interactions[~ds.interactions["item_id"].isin(pick)].reset_index(drop=True)
    prepare(items, inter, out_data, name=name,
            source=f"{ds.manifest.get('source')}; {len(pick)} items and their clicks removed ({why})",
            license=str(ds.manifest.get("license")))
    rows = ds.items[ds.items["item_id"].isin(pick)]
    out_feed.parent.mkdir(parents=True, exist_ok=True)
    with open(out_feed, "w") as f:
        for r in rows.to_dict("records"):
            f.write(json.dumps({"ad_id": f"FEED-{r['item_id']}", "title": r["title"],
                                "description": r["description"] or "", "brand": r["brand"],
                                "categories": list(r["categories"])}) + "\n")
    return {"items": len(items), "interactions": len(inter), "removed_items": len(pick),
            "removed_clicks": int(len(ds.interactions) - len(inter)), "feed": str(out_feed)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--out-data", type=Path, required=True)
    ap.add_argument("--out-feed", type=Path, required=True)
    a = ap.parse_args()
    from hllm_creator.data import load_dataset
    from hllm_creator.infer.match import usable_ad

    ds = load_dataset(a.data)
    clicks = ds.interactions[ds.interactions["label"] == 1]["item_id"].value_counts()
    cand = [i for i in ds.items["item_id"] if 2 <= clicks.get(i, 0) <= 20]
    titles = dict(zip(ds.items["item_id"], ds.items["title"]))
    cand = [i for i in cand if usable_ad(titles[i])]
    cand.sort(key=lambda i: hashlib.sha256(f"feed:{i}".encode()).hexdigest())
    pick = set(cand[: a.n])
    print(json.dumps(write_holdout(ds, pick, a.out_data, a.out_feed, name=f"{ds.name}-minus{a.n}",
                                   why="benchmarks/feed_holdout.py")))


if __name__ == "__main__":
    main()
