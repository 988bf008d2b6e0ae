"""match with a real tiny HLLMCreator: scores equal the predictor's, outputs, coverage, CLI, errors."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import tiny_embed_and_cluster
from typer.testing import CliRunner

from hllm_creator.data import load_dataset
from hllm_creator.data.schema import DataError
from hllm_creator.infer import cluster as cl
from hllm_creator.infer import embed as E
from hllm_creator.infer import match as M


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


@pytest.fixture(scope="module")
def hybrid(setup):
    """The tiny model with random ID vectors over the dataset's catalog (a hybrid predictor)."""
    import copy

    data, _, _, model = setup
    m = copy.deepcopy(model)
    m.enable_item_ids(load_dataset(data).items["item_id"].astype(str).tolist(), recent=3)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        m.predictor.id_in.weight[:-1].normal_(generator=g)
        m.predictor.id_out.weight[:-1].normal_(generator=g)
    return m


def test_hybrid_predictor_scores_clusters_with_their_members_id_parts(setup, hybrid, tmp_path):
    data, mdir, root, model = setup
    ds, m = load_dataset(data), hybrid
    cfg = M.MatchConfig(model_dir=str(mdir), data_dir=str(data), clusters_dir=str(root / "clusters"), n_ads=5,
                        top_k=2, item_cache=str(root / "c.parquet"))
    meta = M.run(cfg, tmp_path / "m", progress=False, model=m)
    assert meta["predictor_id_parts"] == M.MEMBER_ID_PARTS
    parts = np.load(tmp_path / "m" / M.MEMBER_ID_PARTS)
    # independently: each member's last 3 clicks -> recent_part, averaged per cluster
    _, means, asg, _ = cl.load(root / "clusters")
    hist = E.histories(ds.interactions, "no-test")
    ref_parts = np.zeros_like(parts)
    for c in range(len(means)):
        users = asg.loc[asg["cluster_id"] == c, "user_id"].astype(str)
        with torch.no_grad():
            ref_parts[c] = m.predictor.recent_part(m.recent_index([list(hist[u]) for u in users])).mean(0).numpy()
    assert np.allclose(parts, ref_parts, atol=1e-5)
    ad_emb = m.encode_items([E.item_texts(ds.items)[a] for a in meta["ads"]])
    ref = m.score(torch.from_numpy(means), ad_emb, user_id_part=torch.from_numpy(ref_parts),
                  item_index=m.item_index(meta["ads"])).numpy().T
    text_only = model.score(torch.from_numpy(means), ad_emb).numpy().T
    got = pd.read_parquet(tmp_path / "m" / "matches.parquet")
    for r in got.itertuples():
        assert r.score == pytest.approx(ref[meta["ads"].index(r.item_id), r.cluster_id], abs=1e-5)
    assert not np.allclose(ref, text_only, atol=1e-3)  # the ID parts are in the scores
    # serving loads the parts beside the clusters (a bundle's artifacts/), and refuses a wrong shape
    import shutil

    from hllm_creator.serving.loading import load_assets

    m.save(tmp_path / "hyb")
    art = tmp_path / "art"
    shutil.copytree(root / "clusters", art)
    shutil.copy(tmp_path / "m" / M.MEMBER_ID_PARTS, art / M.MEMBER_ID_PARTS)
    a = load_assets(tmp_path / "hyb", art)
    assert np.allclose(a.score_id_parts, parts)
    np.save(art / M.MEMBER_ID_PARTS, parts[:, :3])
    with pytest.raises(ValueError, match="member_id_parts.npy: shape"):
        load_assets(tmp_path / "hyb", art)


def test_serving_predictor_scores_like_match_with_the_hybrid_parts(setup, hybrid, tmp_path):
    """The KServe predictor's run_batch (in process): a 'cluster' request is scored with the cluster's
    member mean + its members' ID part (what match wrote), a 'user' request with the user's own."""
    from hllm_creator.serving.loading import ServingAssets
    from hllm_creator.serving.predictor import Predictor
    from hllm_creator.serving.schemas import PredictorInstance

    data, mdir, root, model = setup
    ds, m = load_dataset(data), hybrid
    cents, means, asg, cmeta = cl.load(root / "clusters")
    parts = np.random.default_rng(0).normal(size=(len(means), m.predictor.d)).astype(np.float32)
    items = {str(r["item_id"]): r for r in ds.items.to_dict("records")}
    a = ServingAssets(model=m, model_dir=mdir, centroids=cents, slot=means, score_slot=means,
                      score_id_parts=parts, cluster_meta=cmeta, items=items)
    a.item_cache = type("NoCache", (), {"get": lambda self, texts, enc, **kw: enc(texts)})()
    p = Predictor("predictor", model_dir=str(mdir))
    p.assets = a
    hist = list(E.histories(ds.interactions, "no-test").iloc[0])
    ads = [hist[0], "not-in-catalog"]
    out = p.run_batch([PredictorInstance(user_history=hist, candidate_ad_ids=ads, score_with=w)
                       for w in ("cluster", "user")])
    u, _ = a.user_embeddings([hist])
    cid = int(a.assign(u)[0])
    ad_emb = torch.from_numpy(a.item_embeddings([a.item_text_of(hist[0])]))
    want_cluster = m.score(torch.from_numpy(means[[cid]]), ad_emb, user_id_part=torch.from_numpy(parts[[cid]]),
                           item_index=m.item_index([hist[0]]))
    want_user = m.score(torch.from_numpy(u), ad_emb, recent=m.recent_index([hist]), item_index=m.item_index([hist[0]]))
    assert out[0]["ads"][0]["score"] == pytest.approx(float(want_cluster[0, 0]), abs=1e-5)
    assert out[1]["ads"][0]["score"] == pytest.approx(float(want_user[0, 0]), abs=1e-5)
    assert out[0]["ads"][1]["score"] is None  # an unknown ad is still answered, unscored
