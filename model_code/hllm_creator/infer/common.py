"""Shared bits of the inference workflow: reading/writing embedding tables and step-dir checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from hllm_creator.data.schema import DataError

USER_EMBEDDINGS = "user_embeddings.parquet"
CENTROIDS = "centroids.npy"
MEMBER_MEANS = "member_means.npy"
MEDOIDS = "medoids.npy"
ASSIGNMENTS = "assignments.parquet"
CLUSTER_META = "cluster_meta.json"
MATCHES = "matches.parquet"
CREATIVES = "creatives.parquet"
LOOKUP = "lookup.parquet"


def resolve_file(path: str | Path, name: str) -> Path:
    """``path`` may be the file itself or the step dir that holds ``name``."""
    p = Path(path)
    if p.is_dir():
        p = p / name
    if not p.exists():
        raise DataError(f"{name} not found (expected the file or a dir holding it)", file=str(p))
    return p


def embeddings_frame(ids: list[str], emb: np.ndarray) -> pd.DataFrame:
    emb = np.asarray(emb, dtype=np.float32)
    return pd.DataFrame({"user_id": pd.Series(ids, dtype=str), "embedding": list(emb)})


def read_embeddings(path: str | Path, id_col: str = "user_id") -> tuple[list[str], np.ndarray]:
    """Read ``user_embeddings.parquet`` (user_id, embedding list<float32>) -> (ids, [n, d] float32).

    Raises DataError naming the file, column and row for missing columns, ragged or non-finite
    vectors and duplicate ids.
    """
    f = resolve_file(path, USER_EMBEDDINGS)
    try:
        df = pd.read_parquet(f)
    except Exception as e:  # noqa: BLE001  (not a parquet file at all: pyarrow raises several kinds)
        raise DataError(f"cannot read parquet: {e}", file=str(f)) from None
    for col in (id_col, "embedding"):
        if col not in df.columns:
            raise DataError(f"missing column {col!r}; found {list(df.columns)}", file=str(f), column=col)
    if len(df) == 0:
        raise DataError("no rows", file=str(f))
    dup = df[id_col].duplicated()
    if dup.any():
        i = int(dup.to_numpy().nonzero()[0][0])
        raise DataError(f"duplicate {id_col} {df[id_col].iloc[i]!r}", file=str(f), column=id_col, row=i)
    vecs = df["embedding"].tolist()
    d = None
    for i, v in enumerate(vecs):
        if v is None:
            raise DataError("missing embedding", file=str(f), column="embedding", row=i)
        n = len(v)
        if d is None:
            d = n
        if n != d or n == 0:
            raise DataError(f"embedding has length {n}, expected {d}", file=str(f), column="embedding", row=i)
    emb = np.asarray(np.stack([np.asarray(v, dtype=np.float32) for v in vecs]), dtype=np.float32)
    bad = ~np.isfinite(emb).all(axis=1)
    if bad.any():
        i = int(bad.nonzero()[0][0])
        raise DataError("embedding holds NaN or inf", file=str(f), column="embedding", row=i)
    return [str(x) for x in df[id_col].tolist()], np.ascontiguousarray(emb)


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read JSON: {e}", file=str(path)) from None

