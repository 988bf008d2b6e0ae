"""publish component: python_func call and a KFP local-runner run (importers -> publish), on the
tiny real serving stack (untrained tiny-llama model + real cluster/match/generate outputs)."""

import json
from pathlib import Path

import pytest
from helpers import init_tracking_store, kfp_local
from kfp import dsl

from hllm_creator_kfp.components.publish.component import publish


@pytest.fixture
def stack(serving_stack):
    return serving_stack


def test_python_func(stack, tmp_path):
    from hllm_creator.serving.bundle import read_manifest

    art = stack["artifacts"]
    out, metrics = dsl.Model(uri=str(tmp_path / "b")), dsl.Metrics(uri=str(tmp_path / "metrics.json"))
    publish.python_func(model=dsl.Model(uri=stack["model_dir"]), dataset=dsl.Dataset(uri=str(Path(stack["items"]).parent)),
                        clusters=dsl.Dataset(uri=art), matches=dsl.Dataset(uri=art), creatives=dsl.Dataset(uri=art),
                        bundle=out, metrics=metrics, check_creative=False)
    m = read_manifest(tmp_path / "b")
    assert out.metadata["bundle_id"] == m["bundle_id"] and out.metadata["model_version"] == "1"
    assert metrics.metadata["bundle_clusters"] == 3.0 and metrics.metadata["bundle_creatives"] > 0


def test_local_runner(stack, tmp_path):
    init_tracking_store()
    kfp_local(tmp_path)

    @dsl.pipeline(name="publish-test")
    def pipe(data_uri: str, model_uri: str, art_uri: str):
        m = dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Model, reimport=False)
        ds = dsl.importer(artifact_uri=data_uri, artifact_class=dsl.Dataset, reimport=False)
        d = dsl.importer(artifact_uri=art_uri, artifact_class=dsl.Dataset, reimport=False)
        publish(model=m.output, dataset=ds.output, clusters=d.output, matches=d.output, creatives=d.output,
                register=False, check_creative=False)

    pipe(data_uri=str(Path(stack["items"]).parent), model_uri=stack["model_dir"], art_uri=stack["artifacts"])
    found = list((tmp_path / "kfp").rglob("bundle.json"))
    assert len(found) == 1
    assert json.loads(found[0].read_text())["files"]["artifacts/items.parquet"]["bytes"] > 0
