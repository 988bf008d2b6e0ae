"""personalization_eval component: python_func on a tiny workflow (library-made upstream dirs)."""

import json

import numpy as np
import pandas as pd
import pytest
from helpers import tiny_clusters_and_matches
from kfp import dsl

from hllm_creator_kfp.components.personalization_eval.component import personalization_eval


def test_python_func(tmp_path):
    data, mdir, ds, m = tiny_clusters_and_matches(tmp_path, k=2, n_ads=2)
    sel = m[m["selected"]].reset_index(drop=True)
    titles = dict(zip(ds.items["item_id"], ds.items["title"]))
    (tmp_path / "gen").mkdir()
    pd.DataFrame({"item_id": sel["item_id"], "cluster_id": sel["cluster_id"],
                  "original_title": sel["item_id"].map(titles), "title": sel["item_id"].map(titles),
                  "source": "original"}).to_parquet(tmp_path / "gen" / "creatives.parquet")
    report, metrics = dsl.Dataset(uri=str(tmp_path / "r")), dsl.Metrics(uri=str(tmp_path / "m.json"))
    personalization_eval.python_func(model=dsl.Model(uri=str(mdir)), dataset=dsl.Dataset(uri=str(data)),
                                     clusters=dsl.Dataset(uri=str(tmp_path / "clusters")),
                                     matches=dsl.Dataset(uri=str(tmp_path / "matches")),
                                     creatives=dsl.Dataset(uri=str(tmp_path / "gen")), report=report,
                                     metrics=metrics, heldout_share=0.5, bootstrap=200, max_new_tokens=4)
    rep = json.loads((tmp_path / "r" / "personalization.json").read_text())
    # every served title is the original: copy rate 1, one distinct title per ad, no fit difference
    assert metrics.metadata["pers_copy_rate"] == 1.0 and metrics.metadata["pers_distinct_per_ad"] == 1.0
    assert rep["audience_fit"]["fit_other"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert report.metadata["pairs"] == 4 == len(pd.read_parquet(tmp_path / "r" / "per_ad.parquet"))
    assert rep["nll"]["rows"] == 0 and rep["xgsb"]["n"] == 0  # no train_set, no judge: said, not invented
    assert np.isfinite(metrics.metadata["pers_swap_changed"])
