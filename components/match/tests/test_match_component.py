"""match component: python_func call and a KFP local-runner run (importers -> match)."""

import json

import pandas as pd
import pytest
from helpers import kfp_local, shared_tiny_workflow
from kfp import dsl

from hllm_creator.data import load_dataset
from hllm_creator.infer import cluster as cl
from hllm_creator.infer import embed as E
from hllm_creator_kfp.components.match.component import match


@pytest.fixture(scope="module")
def clusters(tmp_path_factory):
    data, mdir = shared_tiny_workflow()
    root = tmp_path_factory.mktemp("mc")
    ds = load_dataset(data)
    ids, emb = E.embed_users(E.load_model(mdir), ds.items, E.histories(ds.interactions), progress=False)
    res = cl.cluster(emb, cl.ClusterConfig(k=3, min_cluster_size=2), progress=False)
    cl.write(res, ids, root / "clusters")
    return root / "clusters"


def test_python_func(clusters, tmp_path):
    data, mdir = shared_tiny_workflow()
    out, metrics = dsl.Dataset(uri=str(tmp_path / "m")), dsl.Metrics(uri=str(tmp_path / "metrics.json"))
    match.python_func(model=dsl.Model(uri=str(mdir)), dataset=dsl.Dataset(uri=str(data)), clusters=dsl.Dataset(uri=str(clusters)),
                      matches=out, metrics=metrics, n_ads=4, top_k=2)
    m = pd.read_parquet(tmp_path / "m" / "matches.parquet")
    assert len(m) == 4 * 3 and m["selected"].sum() == 8
    assert out.metadata["ads"] == 4 and metrics.metadata["pairs_selected"] == 8.0
    assert 0 < metrics.metadata["mean_coverage"] <= 1


def test_local_runner(clusters, tmp_path):
    data, mdir = shared_tiny_workflow()
    kfp_local(tmp_path)

    @dsl.pipeline(name="match-test")
    def pipe(data_dir: str, model_uri: str, clusters_uri: str):
        m = dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Model, reimport=False)
        d = dsl.importer(artifact_uri=data_dir, artifact_class=dsl.Dataset, reimport=False)
        c = dsl.importer(artifact_uri=clusters_uri, artifact_class=dsl.Dataset, reimport=False)
        match(model=m.output, dataset=d.output, clusters=c.output, n_ads=3, top_k=1, threshold=0.0)

    pipe(data_dir=str(data), model_uri=str(mdir), clusters_uri=str(clusters))
    found = list((tmp_path / "kfp").rglob("match_meta.json"))
    assert len(found) == 1
    meta = json.loads(found[0].read_text())
    assert meta["pairs_selected"] == 3 and len(meta["coverage"]) == 3
