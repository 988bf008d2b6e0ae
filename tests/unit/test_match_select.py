"""match: selection of the top-k clusters per ad, threshold, coverage, default ads (plain arrays)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hllm_creator.data.schema import DataError
from hllm_creator.infer.match import check_ads, coverage, default_ads, select


def test_select_top_k_with_ties_and_threshold():
    scores = np.array([[0.1, 0.9, 0.5, 0.9],
                       [0.3, 0.2, 0.1, 0.05]])
    m = select(scores, ["a", "b"], top_k=2)
    a = m[m.item_id == "a"].sort_values("rank")
    assert a["cluster_id"].tolist() == [1, 3, 2, 0]  # tie 0.9: smaller cluster id first
    assert a["selected"].tolist() == [True, True, False, False]
    assert list(m.columns) == ["item_id", "cluster_id", "score", "rank", "selected"]
    m = select(scores, ["a", "b"], top_k=2, threshold=0.25)
    assert m[m.selected].groupby("item_id")["cluster_id"].apply(list).to_dict() == {"a": [1, 3], "b": [0]}


def test_coverage_counts_users_of_selected_clusters():
    m = select(np.array([[0.9, 0.1, 0.8], [0.1, 0.2, 0.3]]), ["a", "b"], top_k=1)
    cov = coverage(m, np.array([50, 30, 20])).set_index("item_id")
    assert cov.loc["a", "users_covered"] == 50 and cov.loc["a", "coverage"] == pytest.approx(0.5)
    assert cov.loc["b", "users_covered"] == 20 and cov.loc["b", "coverage"] == pytest.approx(0.2)


@settings(max_examples=60, deadline=None)
@given(n_ads=st.integers(1, 5), k=st.integers(1, 12), top_k=st.integers(1, 15),
       thr=st.one_of(st.none(), st.floats(0, 1)), seed=st.integers(0, 10_000))
def test_select_properties(n_ads, k, top_k, thr, seed):
    rng = np.random.default_rng(seed)
    scores = rng.random((n_ads, k)).round(2)  # rounding makes ties common
    m = select(scores, [f"ad{i}" for i in range(n_ads)], top_k, thr)
    assert len(m) == n_ads * k
    for _, g in m.groupby("item_id"):
        g = g.sort_values("rank")
        assert g["rank"].tolist() == list(range(1, k + 1))
        assert (np.diff(g["score"].to_numpy()) <= 1e-9).all()
        sel = g[g.selected]
        assert len(sel) <= min(top_k, k)
        if thr is not None:
            assert (sel["score"] >= np.float32(thr) - 1e-6).all()
        else:
            assert len(sel) == min(top_k, k)
        # every selected cluster scores at least as high as every unselected one ranked after it
        if len(sel):
            assert sel["rank"].max() == len(sel)


def test_select_rejects_bad_scores():
    with pytest.raises(ValueError, match="shape"):
        select(np.zeros((2, 3)), ["a"], 1)
    with pytest.raises(ValueError, match="NaN"):
        select(np.array([[np.nan, 1.0]]), ["a"], 1)


def test_default_ads_most_clicked_deterministic():
    items = pd.DataFrame({"item_id": ["i1", "i2", "i3", "i4", "i5", "i6"],
                          "title": ["Red Glass Beaker", "Blue Nitrile Gloves", "Steel Wood Screws", "Brass Hex Nut",
                                    "Blue Nitrile Gloves", "Industrial & Scientific />"]})
    inter = pd.DataFrame({"user_id": list("uuuvvvwwxxx"),
                          "item_id": ["i2", "i3", "i1", "i3", "i2", "i4", "i4", "i5", "i5", "i6", "i6"],
                          "label": [1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1]})
    assert default_ads(items, inter, 2) == ["i2", "i3"]  # 2 clicks each, tie by id; i4 only exposures
    # i5 repeats i2's title and i6's title is markup: neither runs as an ad
    assert default_ads(items, inter.sample(frac=1, random_state=1), 4) == ["i2", "i3", "i1"]


def test_check_ads_names_the_bad_id():
    items = pd.DataFrame({"item_id": ["i1", "i2"]})
    assert check_ads(["i2"], items) == ["i2"]
    with pytest.raises(DataError, match=r"'nope' \(position 1"):
        check_ads(["i1", "nope"], items)
    with pytest.raises(DataError, match="twice"):
        check_ads(["i1", "i1"], items)
