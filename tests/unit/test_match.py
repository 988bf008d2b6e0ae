"""match with a real tiny HLLMCreator: scores equal the predictor's, outputs, coverage, CLI, errors."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from hllm_creator.data import load_dataset
from hllm_creator.data.schema import DataError
from hllm_creator.infer import cluster as cl
from hllm_creator.infer import embed as E
from hllm_creator.infer import match as M
from helpers import tiny_embed_and_cluster


@pytest.fixture(scope="module")
def setup(infer_workflow, tmp_path_factory):
    data, mdir = infer_workflow
    root = tmp_path_factory.mktemp("match")
    model = tiny_embed_and_cluster(root, data, mdir, k=4)
    return data, mdir, root, model


def test_match_scores_every_pair_with_the_predictor(setup, tmp_path):
    data, mdir, root, model = setup
    cfg = M.MatchConfig(model_dir=str(mdir), data_dir=str(data), clusters_dir=str(root / "clusters"), n_ads=5,
                        top_k=2, batch_size=3, item_cache=str(root / "c.parquet"))
    meta = M.run(cfg, tmp_path / "m", progress=False, model=model)
    m = pd.read_parquet(tmp_path / "m" / "matches.parquet")
    ds = load_dataset(data)
    k = meta["k"]
    assert meta["ads"] == M.default_ads(ds.items, ds.interactions, 5)
    assert len(m) == 5 * k and m["selected"].sum() == 5 * 2
    # the scores are HLLMCreator.score of (member mean, ad embedding): recompute pair by pair
    _, means, asg, _ = cl.load(root / "clusters")
    ad_emb = model.encode_items([E.item_texts(ds.items)[a] for a in meta["ads"]])
    ref = model.score(torch.from_numpy(means), ad_emb).numpy().T
    for r in m.itertuples():
        assert r.score == pytest.approx(ref[meta["ads"].index(r.item_id), r.cluster_id], abs=1e-5)
    assert ((m["score"] >= 0) & (m["score"] <= 1)).all()
    sizes = np.bincount(asg["cluster_id"], minlength=k)
    for c in meta["coverage"]:
        sel = m[(m.item_id == c["item_id"]) & m.selected]
        assert c["users_covered"] == sizes[sel["cluster_id"]].sum()
        assert c["coverage"] == pytest.approx(c["users_covered"] / 60)
    runs = mlflow.search_runs(search_all_experiments=True)
    assert runs["tags.step"].tolist() == ["match"]
    assert runs["metrics.mean_coverage"].iloc[0] == pytest.approx(meta["mean_coverage"])


def test_threshold_and_explicit_ads_via_cli(setup, tmp_path):
    from hllm_creator.cli import app

    data, mdir, root, _ = setup
    ads = load_dataset(data).items["item_id"].tolist()[:2]
    r = CliRunner().invoke(app, ["match", "--model", str(mdir), "--data", str(data), "--clusters",
                                 str(root / "clusters"), "--out", str(tmp_path / "m"), "--ads", ",".join(ads),
                                 "--top-k", "4", "--threshold", "1.0", "--item-cache", str(root / "c.parquet"),
                                 "--quiet"])
    assert r.exit_code == 0, r.output
    m = pd.read_parquet(tmp_path / "m" / "matches.parquet")
    meta = json.loads((tmp_path / "m" / "match_meta.json").read_text())
    assert sorted(m["item_id"].unique()) == sorted(ads) and meta["ads_chosen_by"] == "given"
    assert not m.loc[m.score < 1.0, "selected"].any()  # threshold 1.0: only perfect scores pass
    # an option that does not apply is an error, not silently ignored (issue 14)
    r = CliRunner().invoke(app, ["match", "--model", str(mdir), "--data", str(data), "--clusters",
                                 str(root / "clusters"), "--out", str(tmp_path / "m2"), "--ads", ",".join(ads),
                                 "--n-ads", "5"])
    assert r.exit_code != 0 and "--n-ads" in str(r.exception) and not (tmp_path / "m2").exists()


def test_match_bad_input(setup, tmp_path):
    data, mdir, root, model = setup
    cfg = M.MatchConfig(model_dir=str(mdir), data_dir=str(data), clusters_dir=str(root / "clusters"),
                        ads=["not-an-item"], item_cache=str(root / "c.parquet"))
    with pytest.raises(DataError, match="'not-an-item'"):
        M.run(cfg, tmp_path / "m", progress=False, model=model)
    cfg = M.MatchConfig(model_dir=str(mdir), data_dir=str(data), clusters_dir=str(tmp_path / "none"))
    with pytest.raises(DataError, match="cluster dir"):
        M.run(cfg, tmp_path / "m", progress=False, model=model)
    with pytest.raises(ValueError):
        M.MatchConfig(model_dir="m", data_dir="d", clusters_dir="c", threshold=1.5)
    assert not (tmp_path / "m").exists()
