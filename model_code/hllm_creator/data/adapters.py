"""Adapters: turn a source format into the (items, interactions) frames of the dataset contract.

- ``amazon_json``: the bundled Amazon pair ``<name>.inter.json`` + ``<name>.item.json`` (plain or .gz).
- ``reference_parquet``: the HLLM-Creator reference training parquet (one row per user).
- ``generic``: CSV or parquet files with a column mapping (command line or YAML).
"""

from __future__ import annotations

import gzip
import hashlib
import html
import json
from pathlib import Path
from typing import Any

import pandas as pd

from hllm_creator.data.schema import DataError, _is_missing


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def _load_json(path: Path) -> Any:
    try:
        with _open_text(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError("file not found", file=str(path)) from None
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON: {e.msg} at line {e.lineno} col {e.colno}", file=str(path)) from None


def _text(v) -> str:
    return "" if _is_missing(v) else html.unescape(str(v)).strip()


def _split_categories(v, sep: str = ",") -> list[str]:
    if _is_missing(v):
        return []
    if isinstance(v, (list, tuple)) or hasattr(v, "tolist"):
        vals = list(v.tolist() if hasattr(v, "tolist") else v)
    else:
        vals = str(v).split(sep)
    return [c for c in (_text(x) for x in vals) if c]


def amazon_json(inter_path: str | Path, item_path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Amazon pair: inter = {user: [item, ...] oldest first}; item = {item: {title, description, brand, categories}}."""
    inter_path, item_path = Path(inter_path), Path(item_path)
    raw_items = _load_json(item_path)
    raw_inter = _load_json(inter_path)
    if not isinstance(raw_items, dict):
        raise DataError("expected a JSON object {item_id: {...}}", file=str(item_path))
    if not isinstance(raw_inter, dict):
        raise DataError("expected a JSON object {user_id: [item_id, ...]}", file=str(inter_path))
    rows = []
    for row, (iid, rec) in enumerate(raw_items.items()):
        if not isinstance(rec, dict):
            raise DataError(f"item {iid!r}: expected an object, got {type(rec).__name__}",
                            file=str(item_path), row=row)
        rows.append({
            "item_id": str(iid),
            "title": _text(rec.get("title")),
            "description": _text(rec.get("description")),
            "brand": _text(rec.get("brand")) or None,
            "categories": _split_categories(rec.get("categories")),
        })
    items = pd.DataFrame(rows)
    urows = []
    for row, (uid, seq) in enumerate(raw_inter.items()):
        if not isinstance(seq, list):
            raise DataError(f"user {uid!r}: expected a list of item ids", file=str(inter_path), row=row)
        for pos, iid in enumerate(seq):
            urows.append((str(uid), str(iid), pos, 1))
    inter = pd.DataFrame(urows, columns=["user_id", "item_id", "ts", "label"])
    return items, inter


REFERENCE_COLUMNS = ["user_profile", "original_title", "original_description", "prompt1", "prompt2",
                     "response", "title_list", "item_id_list"]


def _stable_id(text: str) -> str:
    return "t_" + hashlib.sha1(text.encode()).hexdigest()[:12]


def reference_parquet(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The reference training parquet: history = item_id_list/title_list, target = original_title.

    The target ad has no id in that schema: it gets a stable id from its title (``t_<sha1>``).
    Each row is one user (``ref_<row>``); its history comes first (ts 0..n-1), the target last.
    """
    path = Path(path)
    try:
        df = pd.read_parquet(path)
    except FileNotFoundError:
        raise DataError("file not found", file=str(path)) from None
    missing = [c for c in REFERENCE_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"missing column(s) {missing} of the reference schema", file=str(path),
                        column=missing[0])
    items: dict[str, dict] = {}
    inter = []
    for row, rec in enumerate(df.to_dict("records")):
        ids = list(rec["item_id_list"]) if rec["item_id_list"] is not None else []
        titles = list(rec["title_list"]) if rec["title_list"] is not None else []
        if len(ids) != len(titles):
            raise DataError(f"item_id_list has {len(ids)} ids but title_list has {len(titles)} titles",
                            file=str(path), column="title_list", row=row)
        uid = f"ref_{row}"
        for pos, (iid, title) in enumerate(zip(ids, titles)):
            iid = str(iid)
            items.setdefault(iid, {"item_id": iid, "title": _text(title), "description": "",
                                   "brand": None, "categories": []})
            inter.append((uid, iid, pos, 1))
        title = _text(rec["original_title"])
        if not title:
            raise DataError("empty string", file=str(path), column="original_title", row=row)
        tid = _stable_id(title)
        items.setdefault(tid, {"item_id": tid, "title": title,
                               "description": _text(rec["original_description"]),
                               "brand": None, "categories": []})
        inter.append((uid, tid, len(ids), 1))
    return pd.DataFrame(list(items.values())), pd.DataFrame(inter, columns=["user_id", "item_id", "ts", "label"])


# ---- generic CSV / parquet with a column mapping ------------------------------------------------

ITEM_FIELDS = {"item_id": True, "title": True, "description": False, "brand": False,
               "categories": False, "selling_points": False}
INTER_FIELDS = {"user_id": True, "item_id": True, "ts": False, "label": False}


def _read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise DataError("file not found", file=str(path))
    suf = "".join(path.suffixes).lower()
    if suf.endswith(".parquet"):
        return pd.read_parquet(path)
    if suf.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz")):
        sep = "\t" if ".tsv" in suf else ","
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""])
    raise DataError("unsupported file type (use .csv, .tsv or .parquet)", file=str(path))


def parse_mapping(pairs: list[str]) -> dict[str, str]:
    """``["item_id=asin", "title=name"]`` -> ``{"item_id": "asin", "title": "name"}``."""
    out = {}
    for p in pairs:
        if "=" not in p:
            raise DataError(f"bad mapping {p!r}: expected OUR_FIELD=THEIR_COLUMN")
        k, v = p.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def generic(items_path: str | Path, interactions_path: str | Path, *,
            item_columns: dict[str, str] | None = None, interaction_columns: dict[str, str] | None = None,
            list_sep: str = "|") -> tuple[pd.DataFrame, pd.DataFrame]:
    """CSV/parquet items + interactions; ``*_columns`` map our field -> their column name.

    Unmapped fields default to the same name when present. ``categories``/``selling_points`` in a
    CSV are split on ``list_sep``. ``ts`` defaults to the row order; ``label`` defaults to 1.
    """
    items_path, interactions_path = Path(items_path), Path(interactions_path)
    item_columns, interaction_columns = dict(item_columns or {}), dict(interaction_columns or {})
    for mapping, fields, f in ((item_columns, ITEM_FIELDS, items_path),
                               (interaction_columns, INTER_FIELDS, interactions_path)):
        unknown = set(mapping) - set(fields)
        if unknown:
            raise DataError(f"mapping names unknown field(s) {sorted(unknown)}; known: {sorted(fields)}",
                            file=str(f))
    raw_items, raw_inter = _read_table(items_path), _read_table(interactions_path)

    def take(df, mapping, fields, f):
        out = {}
        for fld, required in fields.items():
            col = mapping.get(fld, fld)
            if col in df.columns:
                out[fld] = df[col]
            elif required or fld in mapping:
                raise DataError(f"missing column {col!r} (for field {fld!r}); found {list(df.columns)}",
                                file=str(f), column=col)
        return out

    it = take(raw_items, item_columns, ITEM_FIELDS, items_path)
    n = len(raw_items)
    items = pd.DataFrame({
        "item_id": it["item_id"].map(lambda v: v if _is_missing(v) else _text(v)),
        "title": it["title"].map(lambda v: v if _is_missing(v) else _text(v)),
        "description": it["description"].map(_text) if "description" in it else [""] * n,
        "brand": it["brand"].map(lambda v: _text(v) or None) if "brand" in it else [None] * n,
        "categories": it["categories"].map(lambda v: _split_categories(v, list_sep))
        if "categories" in it else [[] for _ in range(n)],
    })
    if "selling_points" in it:
        items["selling_points"] = it["selling_points"].map(lambda v: _split_categories(v, list_sep))
    ic = take(raw_inter, interaction_columns, INTER_FIELDS, interactions_path)
    m = len(raw_inter)

    def to_int(series, col):
        vals = []
        for i, v in enumerate(series.tolist()):
            try:
                f = float(v)
                if f != int(f):
                    raise ValueError
                vals.append(int(f))
            except (TypeError, ValueError):
                raise DataError(f"expected an integer, got {v!r:.60}", file=str(interactions_path),
                                column=interaction_columns.get(col, col), row=i) from None
        return vals

    inter = pd.DataFrame({
        "user_id": ic["user_id"].map(lambda v: v if _is_missing(v) else _text(v)),
        "item_id": ic["item_id"].map(lambda v: v if _is_missing(v) else _text(v)),
        "ts": to_int(ic["ts"], "ts") if "ts" in ic else list(range(m)),
        "label": to_int(ic["label"], "label") if "label" in ic else [1] * m,
    })
    return items, inter


MAPPING_KEYS = {"items": "the items table: path + columns", "interactions": "the interactions table: path + columns",
                "list_sep": "separator of list cells in CSV"}
TABLE_KEYS = ("path", "columns")


def load_mapping_yaml(path: str | Path) -> dict:
    """YAML: {items: {path, columns: {...}}, interactions: {path, columns: {...}}, list_sep: '|'}.

    Strict: an unknown key is an error that names it and says where it belongs (a field name one
    level too high, ``items: {item_id: movie}``, belongs under ``items.columns``)."""
    import yaml

    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DataError("file not found", file=str(path)) from None
    except yaml.YAMLError as e:
        raise DataError(f"invalid YAML: {e}", file=str(path)) from None
    if not isinstance(spec, dict) or "items" not in spec or "interactions" not in spec:
        raise DataError("expected keys 'items' and 'interactions'", file=str(path))
    for k in spec:
        if k not in MAPPING_KEYS:
            raise DataError(f"unknown key {k!r} at the top level; allowed: "
                            + ", ".join(f"{a} ({b})" for a, b in MAPPING_KEYS.items()), file=str(path))
    base = path.parent
    for key, fields in (("items", ITEM_FIELDS), ("interactions", INTER_FIELDS)):
        table = spec[key]
        if not isinstance(table, dict):
            raise DataError(f"'{key}' must be a mapping with keys {list(TABLE_KEYS)}", file=str(path), column=key)
        for k in table:
            if k not in TABLE_KEYS:
                hint = (f"; a column mapping belongs under '{key}.columns' ({key}: {{columns: {{{k}: ...}}}})"
                        if k in fields else "")
                raise DataError(f"unknown key '{key}.{k}'; allowed under '{key}': {list(TABLE_KEYS)}{hint}",
                                file=str(path), column=f"{key}.{k}")
        if "path" not in table:
            raise DataError(f"'{key}.path' missing", file=str(path), column=key)
        cols = table.get("columns") or {}
        if not isinstance(cols, dict) or not all(isinstance(v, str) for v in cols.values()):
            raise DataError(f"'{key}.columns' must map our field names to your column names (strings)",
                            file=str(path), column=f"{key}.columns")
        unknown = sorted(set(cols) - set(fields))
        if unknown:
            raise DataError(f"unknown field(s) {unknown} under '{key}.columns'; known: {sorted(fields)}",
                            file=str(path), column=f"{key}.columns")
        p = Path(table["path"])
        table["path"] = str(p if p.is_absolute() else base / p)
    return spec


# ---- invalid rows: strict by default, or a bounded skip that reports each dropped row ------------

ON_INVALID = ("error", "skip")
DEFAULT_MAX_INVALID = 100


def _bad_str(v, *, nonempty: bool, nullable: bool = False) -> str | None:
    if _is_missing(v):
        return None if nullable else "missing value"
    if not isinstance(v, str):
        return f"expected a string, got {type(v).__name__} {v!r:.60}"
    if nonempty and not v.strip():
        return "empty string"
    return None


def _bad_list(v) -> str | None:
    if hasattr(v, "tolist"):
        v = v.tolist()
    if _is_missing(v):
        return None  # filled with [] later
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        return f"expected a list of strings, got {v!r:.60}"
    return None


def _bad_int(v, allowed: set[int] | None = None) -> str | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or _is_missing(v) or float(v) != int(v):
        return f"expected an integer, got {v!r:.60}"
    if allowed is not None and int(v) not in allowed:
        return f"value {v!r} not in {sorted(allowed)}"
    return None


def drop_invalid_rows(items: pd.DataFrame, interactions: pd.DataFrame, *, items_file: str,
                      interactions_file: str, max_invalid: int = DEFAULT_MAX_INVALID
                      ) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """``data prepare --on-invalid skip``: drop the rows the dataset contract would refuse, at most
    ``max_invalid`` of them (item rows + interaction rows that are themselves invalid), and report
    each one: ``{file, row, column, why, id}`` (``row``: 0-based row of that file as the adapter
    read it). An item's interactions go with it (counted in its report as ``interactions``).
    More invalid rows than ``max_invalid`` is a DataError that names the first ones: a dataset that
    bad needs a look, not a skip. Rules are those of ``schema.validate_items`` / ``validate_interactions``.
    """
    dropped: list[dict] = []
    keep_items: list[bool] = []
    seen: set[str] = set()
    has = set(items.columns)
    for row, rec in enumerate(items.to_dict("records")):
        iid = rec.get("item_id")
        checks = [("item_id", _bad_str(iid, nonempty=True))]
        if checks[0][1] is None and iid in seen:
            checks = [("item_id", f"duplicate id (item_id={iid!r}; the first row is kept)")]
        checks += [("title", _bad_str(rec.get("title"), nonempty=True))]
        if "description" in has:
            checks.append(("description", _bad_str(rec.get("description"), nonempty=False, nullable=True)))
        if "brand" in has:
            checks.append(("brand", _bad_str(rec.get("brand"), nonempty=False, nullable=True)))
        for col in ("categories", "selling_points"):
            if col in has:
                checks.append((col, _bad_list(rec.get(col))))
        bad = [(c, why) for c, why in checks if why]
        keep_items.append(not bad)
        if bad:
            dropped.append({"file": items_file, "row": row, "column": bad[0][0], "why": bad[0][1],
                            "id": None if _is_missing(iid) else str(iid)})
        elif isinstance(iid, str):
            seen.add(iid)
    kept_ids = seen
    dropped_ids = {d["id"] for d in dropped if d["id"] is not None} - kept_ids
    keep_inter: list[bool] = []
    with_dropped_item: dict[str, int] = {}
    for row, rec in enumerate(interactions.to_dict("records")):
        iid = rec.get("item_id")
        checks = [("user_id", _bad_str(rec.get("user_id"), nonempty=True)),
                  ("item_id", _bad_str(iid, nonempty=True))]
        if "ts" in rec:
            checks.append(("ts", _bad_int(rec["ts"])))
        if "label" in rec:
            checks.append(("label", _bad_int(rec["label"], {0, 1})))
        bad = [(c, why) for c, why in checks if why]
        if not bad and iid not in kept_ids:
            if iid in dropped_ids:  # goes with its dropped item: reported there
                with_dropped_item[iid] = with_dropped_item.get(iid, 0) + 1
                keep_inter.append(False)
                continue
            bad = [("item_id", f"item_id {iid!r} names an unknown item")]
        keep_inter.append(not bad)
        if bad:
            dropped.append({"file": interactions_file, "row": row, "column": bad[0][0], "why": bad[0][1],
                            "id": None if _is_missing(rec.get("user_id")) else str(rec.get("user_id"))})
    if len(dropped) > max_invalid:
        first = "; ".join(f"{d['file']} row {d['row']} column {d['column']}: {d['why']}" for d in dropped[:3])
        raise DataError(f"{len(dropped)} invalid rows, more than --max-invalid {max_invalid} (first: {first}); "
                        "fix the data or raise --max-invalid")
    for d in dropped:
        if d["file"] == items_file and d["id"] in with_dropped_item:
            d["interactions"] = with_dropped_item[d["id"]]
    items_out = items[pd.Series(keep_items, index=items.index, dtype=bool)].reset_index(drop=True)
    inter_out = interactions[pd.Series(keep_inter, index=interactions.index, dtype=bool)].reset_index(drop=True)
    return items_out, inter_out, dropped
