"""generate component: python_func call and a KFP local-runner run (importers -> generate)."""

import json

import pandas as pd
import pytest
from helpers import kfp_local, shared_tiny_workflow, tiny_clusters_and_matches
from kfp import dsl

from hllm_creator.data import load_dataset
from hllm_creator_kfp.components.generate.component import generate


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """clusters + matches dirs made by the library (what the cluster and match steps write)."""
    root = tmp_path_factory.mktemp("gc")
    tiny_clusters_and_matches(root, k=3, n_ads=2)
    return root / "clusters", root / "matches"


def test_python_func(upstream, tmp_path):
    data, mdir = shared_tiny_workflow()
    clusters, matches = upstream
    out, metrics = dsl.Dataset(uri=str(tmp_path / "g")), dsl.Metrics(uri=str(tmp_path / "metrics.json"))
    generate.python_func(model=dsl.Model(uri=str(mdir)), dataset=dsl.Dataset(uri=str(data)), clusters=dsl.Dataset(uri=str(clusters)),
                         matches=dsl.Dataset(uri=str(matches)), creatives=out, metrics=metrics, max_new_tokens=6,
                         batch_size=4)
    cr = pd.read_parquet(tmp_path / "g" / "creatives.parquet")
    assert len(cr) == 4 == out.metadata["generations"]
    assert metrics.metadata["fallbacks"] == int((cr["source"] == "original").sum())
    assert metrics.metadata["copy_rate"] == float((~cr["personalized"]).mean())
    assert (tmp_path / "g" / "lookup.parquet").exists()
    # every served title: the gated generation, the slot's pick of the ad's gated compositions, or the original
    from hllm_creator.infer.generate import ad_of, candidate_titles

    items = load_dataset(data).items.set_index("item_id")
    for r in cr.itertuples():
        ad = ad_of(items.loc[r.item_id].to_dict() | {"item_id": r.item_id})
        assert (r.source == "generated" and r.grounded and r.title == r.llm_output) or \
            (r.source in ("slot", "rescored", "distinct") and r.title in candidate_titles(ad)) or \
            (r.source == "original" and r.title == r.original_title)


def test_local_runner(upstream, tmp_path):
    data, mdir = shared_tiny_workflow()
    clusters, matches = upstream
    kfp_local(tmp_path)

    @dsl.pipeline(name="generate-test")
    def pipe(data_dir: str, model_uri: str, clusters_uri: str, matches_uri: str):
        m = dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Model, reimport=False)
        d = dsl.importer(artifact_uri=data_dir, artifact_class=dsl.Dataset, reimport=False)
        c = dsl.importer(artifact_uri=clusters_uri, artifact_class=dsl.Dataset, reimport=False)
        mt = dsl.importer(artifact_uri=matches_uri, artifact_class=dsl.Dataset, reimport=False)
        generate(model=m.output, dataset=d.output, clusters=c.output, matches=mt.output, max_new_tokens=6,
                 max_pairs=2, do_sample=False)

    pipe(data_dir=str(data), model_uri=str(mdir), clusters_uri=str(clusters), matches_uri=str(matches))
    found = list((tmp_path / "kfp").rglob("generate_meta.json"))
    assert len(found) == 1
    meta = json.loads(found[0].read_text())
    assert meta["generations"] == 2 and meta["lookup_rows"] == 60 * 2
