"""``hllm-creator data prepare``: any adapter -> validated dataset dir, written atomically."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from hllm_creator.data.adapters import amazon_json
from hllm_creator.data.schema import SCHEMA_VERSION, Dataset, _check_columns, validate_interactions, validate_items
from hllm_creator.data.selling_points import derive_selling_points
from hllm_creator.data.split import leave_last_out
from hllm_creator.io import atomic_dir, sha256_file, write_json
from hllm_creator.paths import BUNDLED_DATA


def finalize_items(items: pd.DataFrame, source_file: str = "items") -> pd.DataFrame:
    """Fill optional columns, derive selling_points where absent or empty, then validate."""

    _check_columns(items, ["item_id", "title"], source_file)
    items = items.copy()
    n = len(items)
    if "description" not in items:
        items["description"] = [""] * n
    if "brand" not in items:
        items["brand"] = [None] * n
    if "categories" not in items:
        items["categories"] = [[] for _ in range(n)]
    has_sp = "selling_points" in items
    sps = []
    for _i, rec in enumerate(items.to_dict("records")):
        sp = rec.get("selling_points") if has_sp else None
        sp = list(sp) if sp is not None and not isinstance(sp, float) else []
        if not sp and isinstance(rec["title"], str):
            sp = derive_selling_points(rec["title"], rec["description"] or "", rec["brand"],
                                       list(rec["categories"]))
        sps.append(sp)
    items["selling_points"] = sps
    items = items[["item_id", "title", "description", "brand", "categories", "selling_points"]]
    return validate_items(items, source_file)


def prepare(items: pd.DataFrame, interactions: pd.DataFrame, out_dir: str | Path, *, name: str,
            source: str, license: str, items_file: str = "items", interactions_file: str = "interactions",
            invalid_rows: dict | None = None) -> Dataset:
    """Validate, derive, and write ``out_dir`` with items/interactions parquet and manifest.json.

    ``invalid_rows``: what ``--on-invalid skip`` dropped (``adapters.drop_invalid_rows``), kept in
    the manifest under that key."""

    items = finalize_items(items, items_file)
    interactions = interactions[["user_id", "item_id", "ts", "label"]].copy()
    validate_interactions(interactions, items, interactions_file)
    interactions["ts"] = interactions["ts"].astype("int64")
    interactions["label"] = interactions["label"].astype("int8")
    split = leave_last_out(interactions)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        items.to_parquet(tmp / "items.parquet", index=False)
        interactions.to_parquet(tmp / "interactions.parquet", index=False)
        manifest = {
            "name": name,
            "source": source,
            "license": license,
            "schema_version": SCHEMA_VERSION,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "counts": {
                "users": int(interactions["user_id"].nunique()),
                "items": int(len(items)),
                "interactions": int(len(interactions)),
                "clicks": int((interactions["label"] == 1).sum()),
                "users_with_split": int(len(split.users)),
                "users_too_short_for_split": len(split.too_short),
            },
            "sha256": {f: sha256_file(tmp / f) for f in ("items.parquet", "interactions.parquet")},
        }
        if invalid_rows is not None:
            manifest["invalid_rows"] = invalid_rows
        write_json(manifest, tmp / "manifest.json")
    return Dataset(items=items, interactions=interactions, manifest=manifest, path=out_dir)


def prepare_bundled(out_dir: str | Path) -> Dataset:
    """The vendored Amazon Industrial & Scientific data -> dataset dir."""

    inter = BUNDLED_DATA / "Scientific.inter.json.gz"
    item = BUNDLED_DATA / "Scientific.item.json.gz"
    items, interactions = amazon_json(inter, item)
    return prepare(items, interactions, out_dir, name="amazon_scientific",
                   source="Amazon Review Data 2018 (Ni, Li, McAuley 2019), Industrial_and_Scientific "
                          "5-core; see data/amazon_scientific/SOURCE.md",
                   license="research data, no formal license (cite the paper); repo code MIT",
                   items_file=str(item), interactions_file=str(inter))
