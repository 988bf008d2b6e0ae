"""Deterministic leave-last-out split per user.

Clicks only (label 1), ordered by (ts, original row order). For each user with at least 3 clicks:
last click = test target, second last = valid target, everything before = train history.
Users with fewer than 3 clicks are counted and returned separately (not silently dropped).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass
class Split:
    users: pd.DataFrame  # user_id, history (list[str], oldest first), valid_target, test_target
    too_short: list[str]  # users with < 3 clicks


def user_sequences(interactions: pd.DataFrame) -> pd.Series:
    """user_id -> list of clicked item_ids, oldest first (stable on ties)."""
    clicks = interactions[interactions["label"] == 1].copy()
    clicks["_row"] = range(len(clicks))
    clicks = clicks.sort_values(["user_id", "ts", "_row"], kind="stable")
    return clicks.groupby("user_id", sort=True)["item_id"].agg(list)


def leave_last_out(interactions: pd.DataFrame) -> Split:
    seqs = user_sequences(interactions)
    rows, short = [], []
    for uid, seq in seqs.items():
        if len(seq) < 3:
            short.append(uid)
            continue
        rows.append({"user_id": uid, "history": seq[:-2], "valid_target": seq[-2], "test_target": seq[-1]})
    return Split(users=pd.DataFrame(rows, columns=["user_id", "history", "valid_target", "test_target"]),
                 too_short=short)
