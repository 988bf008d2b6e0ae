"""The personalization step's inputs: the served (ad, cluster) pairs, the held-out members of each
cluster and what they click, the held-out teacher rows."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from hllm_creator.creative.copy import is_copy
from hllm_creator.creative.holdout import is_heldout
from hllm_creator.data.schema import DataError
from hllm_creator.infer.common import resolve_file


def read_table(path: str | Path, name: str, cols: tuple[str, ...]) -> tuple[pd.DataFrame, str]:
    """A step's parquet (the file, or the step dir holding ``name``) with its ``cols`` checked."""
    f = resolve_file(path, name)
    try:
        df = pd.read_parquet(f)
    except Exception as e:  # noqa: BLE001  (pyarrow raises several kinds for a file that is not parquet)
        raise DataError(f"cannot read parquet: {e}", file=str(f)) from None
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}; found {list(df.columns)}", file=str(f), column=missing[0])
    return df, str(f)


def served_pairs(creatives: pd.DataFrame, file: str = "creatives.parquet") -> pd.DataFrame:
    """creatives -> item_id, cluster_id, original_title, title (SERVED), source, copy.

    The served title is the ``title`` column; older files without it serve ``llm_output`` where
    ``grounded`` and the original otherwise. ``source`` is kept when present, else derived."""
    df = creatives.reset_index(drop=True).copy()
    if "title" not in df.columns:
        if "llm_output" not in df.columns:
            raise DataError("creatives need a served `title` column (or llm_output + grounded)", file=file,
                            column="title")
        ok = df["grounded"].astype(bool) if "grounded" in df.columns else pd.Series(True, index=df.index)
        out = df["llm_output"].fillna("").astype(str)
        df["title"] = np.where(ok & (out.str.strip() != ""), out, df["original_title"])
    for i, t in enumerate(df["title"]):
        if not isinstance(t, str) or not t.strip():
            raise DataError("empty served title", file=file, column="title", row=i)
    df["copy"] = [is_copy(t, o) for t, o in zip(df["title"], df["original_title"])]
    if "source" not in df.columns:
        df["source"] = np.where(df["copy"], "original", "generated")
    if "candidate_title" not in df.columns:  # creatives from before the do-no-harm check
        df["candidate_title"] = df["title"]
    df["candidate_title"] = df["candidate_title"].fillna(df["title"])
    for col in ("harm_gain", "content_gain"):  # creatives from before the check / before its content estimate
        if col not in df.columns:
            df[col] = np.nan
    return df[["item_id", "cluster_id", "original_title", "title", "source", "copy", "candidate_title",
               "harm_gain", "content_gain"]].astype({"cluster_id": "int64", "copy": bool, "harm_gain": "float64",
                                                     "content_gain": "float64"})


def heldout_members(asg: pd.DataFrame, split_users: pd.DataFrame, share: float) -> pd.DataFrame:
    """Held-out users with a test target: user_id, cluster_id, test_target, history (oldest first)."""
    tgt = split_users[split_users["user_id"].map(lambda u: is_heldout(u, share))]
    m = asg[["user_id", "cluster_id"]].astype({"user_id": str}).merge(
        tgt[["user_id", "test_target", "history", "valid_target"]], on="user_id", how="inner")
    return m.sort_values(["cluster_id", "user_id"]).reset_index(drop=True)


def sample_members(members: pd.DataFrame, clusters, k: int | None, seed: int) -> dict[int, pd.DataFrame]:
    """At most ``k`` (None: all) held-out members per cluster, seeded per cluster (the same members
    for every ad)."""
    out = {}
    for c in sorted({int(x) for x in clusters}):
        mc = members[members["cluster_id"] == c]
        if k is not None and len(mc) > k:
            mc = mc.iloc[np.sort(np.random.default_rng(seed + 7919 * c).choice(len(mc), size=k, replace=False))]
        out[c] = mc.reset_index(drop=True)
    return out


def cluster_interests(asg: pd.DataFrame, hist: pd.Series, items: pd.DataFrame, clusters, top: int = 3) -> dict:
    """cluster -> its members' most common leaf categories and brands (from their click histories)."""
    by_id = items.set_index("item_id")
    leaf = {i: (list(c)[-1] if c is not None and len(c) else None) for i, c in by_id["categories"].items()}
    brand = by_id["brand"].to_dict() if "brand" in by_id.columns else {}
    want = {int(c) for c in clusters}
    cnt: dict[int, Counter] = {c: Counter() for c in want}
    for u, c in zip(asg["user_id"].astype(str), asg["cluster_id"].astype(int)):
        if c not in want or u not in hist.index:
            continue
        for i in hist[u]:
            if leaf.get(i):
                cnt[c][leaf[i]] += 1
            b = brand.get(i)
            if isinstance(b, str) and b.strip():
                cnt[c][b.strip()] += 1
    return {c: [k for k, _ in cnt[c].most_common(top)] for c in sorted(want)}


def heldout_rows(train: pd.DataFrame, share: float, file: str) -> tuple[pd.DataFrame, str]:
    """The teacher rows the NLL test uses: ``split == "heldout"``, else the rows of held-out users."""
    for c in ("response", "item_id_list", "user_id"):
        if c not in train.columns:
            raise DataError(f"missing column {c!r}", file=file, column=c)
    if "split" in train.columns and (train["split"] == "heldout").any():
        return train[train["split"] == "heldout"].reset_index(drop=True), "split == heldout"
    return (train[train["user_id"].astype(str).map(lambda u: is_heldout(u, share))].reset_index(drop=True),
            "rows of held-out users (no split column with heldout rows)")
