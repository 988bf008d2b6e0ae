"""personalization_eval component: python_func on a tiny workflow (library-made upstream dirs)."""

import json

import numpy as np
import pandas as pd
import pytest
from kfp import dsl

from components.personalization_eval.component import personalization_eval
from helpers import isolate_tracking, shared_tiny_workflow


@pytest.fixture(autouse=True)
def _tracking(monkeypatch, tmp_path):
    isolate_tracking(monkeypatch, tmp_path)


def test_python_func(tmp_path):
    from hllm_creator.data import load_dataset
    from hllm_creator.infer import cluster as cl
    from hllm_creator.infer import embed as E
    from hllm_creator.infer import match as M

    data, mdir = shared_tiny_workflow()
    ds = load_dataset(data)
    model = E.load_model(mdir)
    ids, emb = E.embed_users(model, ds.items, E.histories(ds.interactions), progress=False)
    res = cl.cluster(emb, cl.ClusterConfig(k=2, min_cluster_size=2), progress=False)
    cl.write(res, ids, tmp_path / "clusters")
    mc = M.MatchConfig(model_dir=str(mdir), data_dir=str(data), clusters_dir=str(tmp_path / "clusters"), n_ads=2,
                       top_k=2, item_cache=str(tmp_path / "c.parquet"))
    m, _ = M.match(model, ds.items, M.default_ads(ds.items, ds.interactions, 2), res.member_means, res.sizes, mc,
                   progress=False)
    (tmp_path / "matches").mkdir()
    m.to_parquet(tmp_path / "matches" / "matches.parquet")
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
