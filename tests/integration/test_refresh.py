"""Issue 26 end to end on real parts: a published tiny bundle (item embeddings precomputed with its model
hash) -> a predictor that encodes nothing at load -> ``hllm-creator refresh`` with a feed of ads outside
the click catalog (CLI subprocess, no training) -> a new registered bundle version with old + new ads,
MLflow runs nested as the main pipeline's -> a real KServe predictor on 127.0.0.1 answering the new
ads -> the same refresh as a KFP local run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.integration

FEED = [
    {"ad_id": "FEED-1", "title": "Adjustable Lab Stand with Rod Clamp and Base Plate",
     "description": "Steel base plate with a 24 inch rod. Holds flasks and burettes.",
     "selling_points": ["Steel base plate", "24 inch rod", "Holds flasks and burettes"], "brand": "LabPro",
     "categories": ["Industrial & Scientific", "Lab Supplies", "Stands"]},
    {"ad_id": "FEED-2", "title": "Digital Pocket Scale 500g x 0.01g with Tare",
     "description": "Backlit display. Includes two AAA batteries.", "brand": "WeighMax",
     "categories": ["Industrial & Scientific", "Scales"]},
    {"ad_id": "FEED-3", "title": "Heat Shrink Tubing Assortment, 560 Pieces, 2:1 Ratio",
     "selling_points": ["Eight sizes", "Five colors", "Flame retardant polyolefin"],
     "categories": ["Industrial & Scientific", "Electrical"]},
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from helpers import module_store

    with module_store(tmp_path_factory.mktemp("refresh_store")) as root:
        yield root


@pytest.fixture(autouse=True)
def _shared_store(_isolated_tracking, store, monkeypatch):
    from helpers import use_store

    use_store(monkeypatch, store)


@pytest.fixture(scope="module")
def base(store, infer_workflow):
    """A tiny pipeline's outputs (embed, cluster, match 4 ads, generate) published as a bundle under a
    parent run, the library's way (``publish.publish``)."""
    from helpers import tiny_embed_and_cluster

    from hllm_creator import tracking
    from hllm_creator.data.schema import dataset_fingerprint
    from hllm_creator.infer import generate as G
    from hllm_creator.infer import match as M
    from hllm_creator.publish.bundle import BundleInputs
    from hllm_creator.publish.publish import publish

    data, mdir = infer_workflow
    root = store / "base"
    with tracking.parent_run("pipeline-tiny", tags={"dataset_hash": dataset_fingerprint(data)[1]}) as parent:
        model = tiny_embed_and_cluster(root, data, mdir, k=3)
        M.run(M.MatchConfig(model_dir=str(mdir), data_dir=str(data), clusters_dir=str(root / "clusters"), n_ads=4,
                            top_k=2, item_cache=str(root / "c.parquet")), root / "match", progress=False, model=model)
        G.run(G.GenerateConfig(model_dir=str(mdir), data_dir=str(data), matches=str(root / "match"),
                               clusters_dir=str(root / "clusters"), max_new_tokens=6), root / "gen", progress=False,
              model=model)
    res = publish(BundleInputs(model=mdir, clusters=root / "clusters", matches=root / "match",
                               creatives=root / "gen", data_dir=data, mlflow_run_id=parent.info.run_id),
                  root / "bundle", check_creative=False)
    feed = store / "feed.jsonl"
    feed.write_text("".join(json.dumps(r) + "\n" for r in FEED))
    return {"data": data, "model_dir": mdir, "bundle": root / "bundle", "res": res, "feed": feed,
            "model_hash": model.model_hash}


def _cli(*args, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hllm_creator.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())


def test_bundle_carries_item_embeddings_and_serving_encodes_nothing(base):
    from hllm_creator.data import load_dataset
    from hllm_creator.serving.bundle import read_table
    from hllm_creator.serving.loading import load_assets
    from hllm_creator.serving.predictor import Predictor
    from hllm_creator.serving.schemas import PredictorInstance

    man = base["res"]["manifest"]
    em = man["item_embeddings"]
    n_items = len(load_dataset(base["data"]).items)
    assert em["model_hash"] == base["model_hash"] and em["count"] == n_items
    assert man["interactions_sha256"] and "artifacts/item_embeddings.npy" in man["files"]
    b = base["bundle"]
    t = read_table(b / "artifacts")
    assert len(t) == n_items and t.matrix.shape[1] == em["dim"]
    a = load_assets(b / "model", b / "artifacts", b / "artifacts" / "items.parquet",
                    require=Predictor.required_artifacts)
    assert a.emb_table is not None and a.item_cache.misses == 0  # nothing encoded at load
    # the precomputed row is the Item LLM's vector of that item's text (what match scored with)
    some = next(iter(a.items))
    enc = a._encode([a.item_text_of(some)])[0]
    np.testing.assert_allclose(a.catalog_embeddings([some])[0], enc, rtol=1e-4, atol=1e-5)
    pred = Predictor("predictor", model_dir=str(b / "model"))
    pred.assets = a
    ad = next(iter(a.creatives))[0]
    hist = [i for i in list(a.items)[:4] if i != ad]
    # an ad of the catalog without a precomputed row: never encoded on the request path
    a.emb_table.row.pop(hist[-1])
    out = pred.run_batch([PredictorInstance(user_history=hist[:2], candidate_ad_ids=[ad, hist[-1], "NOPE-9"])])[0]
    by = {x["ad_id"]: x for x in out["ads"]}
    assert by[ad]["score"] is not None
    assert by[hist[-1]]["title"] == str(a.items[hist[-1]]["title"]) and by[hist[-1]]["score"] is None
    assert "not among this bundle's embedded ads" in by[hist[-1]]["reasons"][0]
    assert by["NOPE-9"]["title"] is None and "unknown ad id" in by["NOPE-9"]["reasons"][0]


def test_refresh_cli_adds_feed_ads_without_training(base, store):
    from hllm_creator import tracking
    from hllm_creator.serving.bundle import read_manifest, read_table, verify_bundle

    out = store / "refresh-cli"
    r = _cli("refresh", "--bundle", str(base["bundle"]), "--feed", str(base["feed"]), "--data", str(base["data"]),
             "--out", str(out), "--top-k", "2", "--max-new-tokens", "6", "--heldout-share", "1.0")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    meta = json.loads((out / "refresh_meta.json").read_text())
    new = out / "bundle"
    man = read_manifest(new)
    assert verify_bundle(new) == [] and man["refreshed_from"] == base["res"]["manifest"]["bundle_id"]
    assert man["refresh_new_ads"] == 3 and meta["version"] and "train" not in meta["seconds"]
    m = pd.read_parquet(new / "artifacts" / "matches.parquet")
    c = pd.read_parquet(new / "artifacts" / "creatives.parquet")
    old_ads = set(pd.read_parquet(base["bundle"] / "artifacts" / "matches.parquet")["item_id"])
    assert set(m["item_id"]) == old_ads | {"FEED-1", "FEED-2", "FEED-3"}
    assert {"FEED-1", "FEED-2", "FEED-3"} <= set(c["item_id"])
    items = pd.read_parquet(new / "artifacts" / "items.parquet")
    sp = items.set_index("item_id").loc["FEED-1", "selling_points"]
    assert list(sp) == FEED[0]["selling_points"]  # the advertiser's selling points are the ad record's
    t = read_table(new / "artifacts")
    assert len(t) == len(items) and {"FEED-1", "FEED-2", "FEED-3"} <= set(t.ids)
    assert man["item_embeddings"]["reused_from_bundle"] == len(items) - 3  # old rows never re-encoded
    # MLflow: one refresh parent run, its steps nested under it; the version registered from it
    client = tracking.mlflow_utils._mlflow().MlflowClient()
    parent = client.get_run(meta["parent_run_id"])
    kids = client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    steps = {k.data.tags.get("step") for k in kids}
    assert {"refresh-prepare", "match", "generate", "personalization", "publish"} <= steps
    mv = client.get_model_version("hllm-creator", meta["version"])
    assert mv.tags.get("bundle_id") == man["bundle_id"]

    # the new version served by a real KServe predictor (loads the bundle; nothing encoded at load)
    from conftest import start_server, stop_server
    from hllm_creator.process import free_port

    asg = pd.read_parquet(new / "artifacts" / "assignments.parquet")
    from hllm_creator.data import load_dataset
    from hllm_creator.infer.embed import histories

    hist = histories(load_dataset(base["data"]).interactions)
    user = str(asg["user_id"].iloc[0])
    port = free_port()
    proc = start_server([sys.executable, "-m", "hllm_creator.cli", "serve", "predictor", "--model-uri",
                         f"models:/hllm-creator/{meta['version']}", "--host", "127.0.0.1", "--port", str(port)],
                        f"http://127.0.0.1:{port}/v2/health/ready", store / "pred.log", timeout=180)
    try:
        body = {"instances": [{"user_history": list(hist[user]), "candidate_ad_ids": ["FEED-1", "FEED-2", "FEED-3"]}]}
        resp = httpx.post(f"http://127.0.0.1:{port}/v1/models/predictor:predict", json=body, timeout=60)
        assert resp.status_code == 200, resp.text
        ads = resp.json()["predictions"][0]["ads"]
        for a, want in zip(ads, FEED):
            assert a["original_title"] == want["title"] and a["score"] is not None
            assert a["title"] and (a["personalized"] or a["reasons"])  # a title, or the original with a reason
    finally:
        stop_server(proc)
    assert "cache misses" not in (store / "pred.log").read_text()


def test_refresh_feed_errors_stop_before_anything_is_written(base, store):
    bad = store / "bad.csv"
    bad.write_text("ad_id,title\nFEED-7,Lab Timer\nFEED-7,Other Timer\n")
    out = store / "refresh-bad"
    r = _cli("refresh", "--bundle", str(base["bundle"]), "--feed", str(bad), "--data", str(base["data"]),
             "--out", str(out), "--no-register")
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()[-1]
    assert "duplicate ad_id 'FEED-7'" in line and str(bad) in line and "row 1" in line and "column ad_id" in line
    assert not (out / "bundle").exists()


def test_refresh_as_a_kfp_local_run(base, store):
    from hllm_creator.serving.bundle import read_manifest
    from hllm_creator_kfp.pipelines.refresh_runner import run_refresh_local

    res = run_refresh_local(bundle=base["bundle"], feed=base["feed"], data_dir=base["data"],
                            pipeline_root=store / "kfp", top_k=2, max_new_tokens=6, heldout_share=1.0, register=True)
    man = read_manifest(res["bundle"])
    assert man["refresh_new_ads"] == 3 and res["version"]
    m = pd.read_parquet(f"{res['bundle']}/artifacts/matches.parquet")
    assert {"FEED-1", "FEED-2", "FEED-3"} <= set(m["item_id"])
    assert res["personalization"] is not None
    from hllm_creator import tracking

    client = tracking.mlflow_utils._mlflow().MlflowClient()
    parent = client.get_run(res["parent_run_id"])
    kids = client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert {"refresh-prepare", "match", "generate", "personalization", "publish"} <= \
        {k.data.tags.get("step") for k in kids}
