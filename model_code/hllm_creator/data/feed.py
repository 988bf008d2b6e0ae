"""The advertiser's ad feed: ads that need not be items with clicks.

Contract (one row per ad; CSV, TSV, JSONL or parquet)::

    ad_id           str, required, unique in the feed
    title           str, required, non-empty
    description     str, optional ("" when absent)
    selling_points  list[str], optional: the advertiser's own selling points; when given they are
                    what the creative side composes titles from (``creative.facts``); when absent
                    they are derived from the ad's own text as ``data prepare`` does
    brand           str, optional
    categories      list[str], optional (the last one is the leaf category the Item LLM reads)

In CSV/TSV a list cell is split on ``|``; in JSONL a list is a JSON array (a string is split on
``|``). Strict: an unknown column, a missing or empty ad_id or title, a list that is not a list of
non-empty strings, a duplicate ad_id, and an ad_id that names a catalog item whose text differs
(the title, or any other field the feed gives) are errors: one line
naming the file, the row (0-based, of that file's data rows) and the field. An ad_id equal to a
catalog item with the same text is that item (not added twice).

:func:`refresh_dataset` writes a dataset dir = the training dataset's items + the feed's new ads
(no clicks) and the same interactions: every step downstream (match, generate, gsb, personalization,
publish) reads feed ads as items, so an ad outside the click catalog needs no special path.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from hllm_creator.data import load_dataset
from hllm_creator.data.prepare import prepare
from hllm_creator.data.schema import DataError, _is_missing
from hllm_creator.data.selling_points import derive_selling_points

FEED_FIELDS = {"ad_id": True, "title": True, "description": False, "selling_points": False, "brand": False,
               "categories": False}
LIST_FIELDS = ("selling_points", "categories")
LIST_SEP = "|"
FEED_FILE = "feed.parquet"  # a checked feed (``refresh-prepare``'s output)


def _read(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise DataError("ad feed not found", file=str(path))
    suf = "".join(path.suffixes).lower()
    try:
        if suf.endswith(".parquet"):
            return pd.read_parquet(path)
        if suf.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz")):
            sep = "\t" if ".tsv" in suf else ","
            return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""])
        if suf.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
            rows = []
            import gzip

            opener = gzip.open if suf.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8") as f:
                for _i, line in enumerate(f):
                    if not line.strip():
                        continue
                    try:
                        r = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DataError(f"not a JSON object ({e.msg})", file=str(path), row=len(rows)) from None
                    if not isinstance(r, dict):
                        raise DataError(f"expected a JSON object, got {type(r).__name__}", file=str(path),
                                        row=len(rows))
                    rows.append(r)
            return pd.DataFrame(rows)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - an unreadable file: say which
        raise DataError(f"cannot read the ad feed ({type(e).__name__}: {e})", file=str(path)) from None
    raise DataError("unsupported ad feed type (use .csv, .tsv, .jsonl or .parquet)", file=str(path))


def _str_field(v, f: str, col: str, row: int, *, required: bool) -> str | None:
    if _is_missing(v) or (isinstance(v, str) and not v.strip()):
        if required:
            raise DataError(f"missing {col}", file=f, column=col, row=row)
        return None
    if not isinstance(v, str):
        if isinstance(v, (int,)) and not isinstance(v, bool) and col == "ad_id":
            return str(v)
        raise DataError(f"expected a string, got {type(v).__name__} {v!r:.60}", file=f, column=col, row=row)
    return " ".join(v.split())


def _list_field(v, f: str, col: str, row: int) -> list[str]:
    if v is None or (isinstance(v, float) and _is_missing(v)):
        return []
    if isinstance(v, str):
        v = [p for p in v.split(LIST_SEP)] if v.strip() else []
    elif hasattr(v, "tolist"):
        v = v.tolist()
    if not isinstance(v, list):
        raise DataError(f"expected a list of strings (or a '{LIST_SEP}'-separated string), got {v!r:.60}",
                        file=f, column=col, row=row)
    out = []
    for x in v:
        if not isinstance(x, str) or not x.strip():
            raise DataError(f"expected non-empty strings in the list, got {x!r:.60}", file=f, column=col, row=row)
        out.append(" ".join(x.split()))
    return out


def _same(a, b) -> bool:
    if isinstance(a, list) or isinstance(b, list) or hasattr(a, "tolist") or hasattr(b, "tolist"):
        return [str(x) for x in (list(a) if a is not None else [])] == \
            [str(x) for x in (list(b) if b is not None else [])]
    return " ".join(str(a or "").split()) == " ".join(str(b or "").split())


def load_feed(path: str | Path, catalog: pd.DataFrame | None = None) -> pd.DataFrame:
    """Read and check an ad feed -> DataFrame (ad_id, title, description, selling_points, brand,
    categories, in_catalog, advertiser_selling_points); ``catalog``: the dataset's items, for the
    collision check. Raises DataError (file, row, field) on the first problem."""

    p = Path(path)
    f = str(p)
    raw = _read(p)
    unknown = [c for c in raw.columns if c not in FEED_FIELDS]
    if unknown:
        raise DataError(f"unknown column {unknown[0]!r}; a feed has {list(FEED_FIELDS)}", file=f, column=unknown[0])
    for col, required in FEED_FIELDS.items():
        if required and col not in raw.columns:
            raise DataError(f"missing column {col!r}; found {list(raw.columns)}", file=f, column=col)
    if len(raw) == 0:
        raise DataError("the ad feed has no rows", file=f)
    cat = {}
    if catalog is not None:
        cat = {str(r["item_id"]): r for r in catalog.to_dict("records")}
    rows, seen = [], {}
    for i, r in enumerate(raw.to_dict("records")):
        ad_id = _str_field(r.get("ad_id"), f, "ad_id", i, required=True)
        if ad_id in seen:
            raise DataError(f"duplicate ad_id {ad_id!r} (first at row {seen[ad_id]})", file=f, column="ad_id", row=i)
        seen[ad_id] = i
        title = _str_field(r.get("title"), f, "title", i, required=True)
        desc = _str_field(r.get("description"), f, "description", i, required=False) or ""
        brand = _str_field(r.get("brand"), f, "brand", i, required=False)
        cats = _list_field(r.get("categories"), f, "categories", i)
        sp = _list_field(r.get("selling_points"), f, "selling_points", i)
        given_sp = bool(sp)
        rec = {"ad_id": ad_id, "title": title, "description": desc, "brand": brand, "categories": cats}
        old = cat.get(ad_id)
        if old is not None:
            for col in ("title", "description", "brand", "categories", "selling_points"):
                mine = sp if col == "selling_points" else rec[col]
                if col != "title" and not mine:
                    continue  # a field the feed leaves empty: the catalog's record is used
                if not _same(mine, old.get(col)):
                    raise DataError(f"ad_id {ad_id!r} is a catalog item with a different {col} "
                                    f"(catalog: {str(old.get(col))!r:.80}, feed: {str(mine)!r:.80}); "
                                    f"give a new ad its own id", file=f, column=col, row=i)
            sp = list(old.get("selling_points") if old.get("selling_points") is not None else [])
        elif not sp:
            sp = derive_selling_points(title, desc, brand, cats)
        rows.append({**rec, "selling_points": sp, "in_catalog": old is not None,
                     "advertiser_selling_points": given_sp})
    return pd.DataFrame(rows, columns=["ad_id", "title", "description", "selling_points", "brand", "categories",
                                       "in_catalog", "advertiser_selling_points"])


def feed_hash(feed: pd.DataFrame) -> str:
    blob = json.dumps(feed[["ad_id", "title", "description", "selling_points", "brand", "categories"]]
                      .to_dict("records"), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def feed_items(feed: pd.DataFrame) -> pd.DataFrame:
    """The feed's ads NOT in the catalog, shaped as ``items.parquet`` rows (item_id = ad_id)."""
    new = feed[~feed["in_catalog"]]
    return pd.DataFrame({"item_id": new["ad_id"].astype(str), "title": new["title"],
                         "description": new["description"], "brand": new["brand"],
                         "categories": new["categories"], "selling_points": new["selling_points"]}
                        ).reset_index(drop=True)


def refresh_dataset(data_dir: str | Path, feed_path: str | Path, out: str | Path):
    """The training dataset + the feed's new ads as items (no clicks), written atomically to ``out``
    (the dataset-dir contract). Returns (Dataset, feed DataFrame)."""

    ds = load_dataset(data_dir)
    feed = load_feed(feed_path, ds.items)
    items = pd.concat([ds.items, feed_items(feed)], ignore_index=True)
    out_ds = prepare(items, ds.interactions, out, name=f"{ds.name}+feed-{feed_hash(feed)}",
                     source=f"{ds.manifest.get('source', ds.name)} + ad feed {Path(feed_path).name} "
                            f"({int((~feed['in_catalog']).sum())} new ads)",
                     license=str(ds.manifest.get("license", "unknown")), items_file=str(feed_path))
    return out_ds, feed


def feed_ads(path: str | Path) -> list[str]:
    """The ad ids of a checked feed (``feed.parquet`` or a dir holding it), in feed order."""
    p = Path(path)
    p = p / FEED_FILE if p.is_dir() else p
    if not p.exists():
        raise DataError("checked feed not found (refresh-prepare writes it)", file=str(p))
    return pd.read_parquet(p, columns=["ad_id"])["ad_id"].astype(str).tolist()
