"""The dataset-dir contract and its validation.

A dataset dir holds ``items.parquet``, ``interactions.parquet`` and ``manifest.json``.
Every validation error names the file, the column and the row (0-based row of that file).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from hllm_creator.io import sha256_file

SCHEMA_VERSION = 1
ITEM_COLUMNS = ["item_id", "title", "description", "brand", "categories", "selling_points"]
INTERACTION_COLUMNS = ["user_id", "item_id", "ts", "label"]


class DataError(ValueError):
    """Bad input data: says what is wrong and where (file, column, row)."""

    def __init__(self, message: str, *, file: str | None = None, column: str | None = None,
                 row: int | None = None):
        self.file, self.column, self.row = file, column, row
        where = ", ".join(
            f"{k} {v}" for k, v in (("file", file), ("column", column), ("row", row)) if v is not None
        )
        super().__init__(f"{message} ({where})" if where else message)


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _check_columns(df: pd.DataFrame, required: list[str], file: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}; found {list(df.columns)}", file=file,
                        column=missing[0])


def _check_str(df: pd.DataFrame, col: str, file: str, *, nonempty: bool, nullable: bool = False) -> None:
    for i, v in enumerate(df[col].tolist()):
        if _is_missing(v):
            if nullable:
                continue
            raise DataError("missing value", file=file, column=col, row=i)
        if not isinstance(v, str):
            raise DataError(f"expected a string, got {type(v).__name__} {v!r:.60}", file=file,
                            column=col, row=i)
        if nonempty and not v.strip():
            raise DataError("empty string", file=file, column=col, row=i)


def _check_str_list(df: pd.DataFrame, col: str, file: str) -> None:
    for i, v in enumerate(df[col].tolist()):
        if hasattr(v, "tolist"):
            v = v.tolist()
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise DataError(f"expected a list of strings, got {v!r:.60}", file=file, column=col, row=i)


def _check_unique(df: pd.DataFrame, cols: list[str], file: str) -> None:
    dup = df.duplicated(subset=cols, keep="first")
    if dup.any():
        i = int(dup.to_numpy().nonzero()[0][0])
        key = ", ".join(f"{c}={df[c].iloc[i]!r}" for c in cols)
        raise DataError(f"duplicate id ({key})", file=file, column=cols[0], row=i)


def _check_int(df: pd.DataFrame, col: str, file: str, allowed: set[int] | None = None) -> None:
    for i, v in enumerate(df[col].tolist()):
        if isinstance(v, bool) or not isinstance(v, int | float) or _is_missing(v) or float(v) != int(v):
            raise DataError(f"expected an integer, got {v!r:.60}", file=file, column=col, row=i)
        if allowed is not None and int(v) not in allowed:
            raise DataError(f"value {v!r} not in {sorted(allowed)}", file=file, column=col, row=i)


def validate_items(items: pd.DataFrame, file: str = "items.parquet") -> pd.DataFrame:
    _check_columns(items, ITEM_COLUMNS, file)
    _check_str(items, "item_id", file, nonempty=True)
    _check_unique(items, ["item_id"], file)
    _check_str(items, "title", file, nonempty=True)
    _check_str(items, "description", file, nonempty=False)
    _check_str(items, "brand", file, nonempty=False, nullable=True)
    _check_str_list(items, "categories", file)
    _check_str_list(items, "selling_points", file)
    return items


def validate_interactions(inter: pd.DataFrame, items: pd.DataFrame,
                          file: str = "interactions.parquet") -> pd.DataFrame:
    _check_columns(inter, INTERACTION_COLUMNS, file)
    _check_str(inter, "user_id", file, nonempty=True)
    _check_str(inter, "item_id", file, nonempty=True)
    _check_int(inter, "ts", file)
    _check_int(inter, "label", file, allowed={0, 1})
    known = set(items["item_id"].tolist())
    unknown = ~inter["item_id"].isin(known)
    if unknown.any():
        i = int(unknown.to_numpy().nonzero()[0][0])
        raise DataError(f"item_id {inter['item_id'].iloc[i]!r} names an unknown item "
                        f"({int(unknown.sum())} such rows)", file=file, column="item_id", row=i)
    return inter


@dataclass
class Dataset:
    """A prepared dataset: items, interactions and the manifest, loaded from a dataset dir."""

    items: pd.DataFrame
    interactions: pd.DataFrame
    manifest: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.manifest.get("name", "unnamed")

    def item_index(self) -> dict[str, int]:
        return {iid: i for i, iid in enumerate(self.items["item_id"].tolist())}


def load_dataset(path: str | Path, *, verify: bool = True) -> Dataset:
    """Load a dataset dir written by ``hllm-creator data prepare``; checks checksums and schema."""

    path = Path(path)
    if not path.is_dir():
        raise DataError(f"dataset dir {path} does not exist or is not a directory", file=str(path))
    mpath = path / "manifest.json"
    if not mpath.exists():
        raise DataError("manifest.json missing: not a dataset dir (run `hllm-creator data prepare`)",
                        file=str(mpath))
    manifest = json.loads(mpath.read_text())
    for fname in ("items.parquet", "interactions.parquet"):
        f = path / fname
        if not f.exists():
            raise DataError("file missing from dataset dir", file=str(f))
        want = manifest.get("sha256", {}).get(fname)
        if verify and want and sha256_file(f) != want:
            raise DataError("checksum does not match manifest.json (file changed after prepare)",
                            file=str(f))
    items = pd.read_parquet(path / "items.parquet")
    inter = pd.read_parquet(path / "interactions.parquet")
    for col in ("categories", "selling_points"):
        items[col] = items[col].map(lambda v: list(v) if v is not None else [])
    if verify:
        validate_items(items, str(path / "items.parquet"))
        validate_interactions(inter, items, str(path / "interactions.parquet"))
    return Dataset(items=items, interactions=inter, manifest=manifest, path=path)


def dataset_fingerprint(data_dir: str | Path) -> tuple[str, str]:
    """(name, hash) of a prepared dataset dir: the hash of its manifest's file checksums, else of its
    parquet files. The pipeline runner tags the parent run with it (``dataset_hash``); ``publish``
    checks that a bundle's catalog is the run's dataset with it."""
    import hashlib

    data_dir = Path(data_dir)
    man = data_dir / "manifest.json"
    if man.exists():
        m = json.loads(man.read_text())
        blob = json.dumps(m.get("sha256") or m.get("files") or m, sort_keys=True, default=str)
        return str(m.get("name", data_dir.name)), hashlib.sha256(blob.encode()).hexdigest()[:16]
    h = hashlib.sha256()
    for f in sorted(data_dir.glob("*.parquet")):
        h.update(f.name.encode() + sha256_file(f).encode())
    return data_dir.name, h.hexdigest()[:16]
