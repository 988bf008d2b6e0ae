"""dataset_construct component: python_func and KFP local runner against the real embedded SmolLM2 server
(one ad, small replies: SmolLM2 on 2 shared CPU cores decodes slowly)."""

from pathlib import Path

import pandas as pd
import pytest
from helpers import kfp_local
from kfp import dsl

from hllm_creator_kfp.components.dataset_construct.component import dataset_construct

pytestmark = pytest.mark.integration


def test_python_func(tmp_path, bundled_dataset, llm_server):
    base_url, model = llm_server
    out, metrics = dsl.Dataset(uri=str(tmp_path / "t")), dsl.Metrics(uri=str(tmp_path / "m.json"))
    dataset_construct.python_func(dataset=dsl.Dataset(uri=str(bundled_dataset.path)), training_set=out,
                                  metrics=metrics, base_url=base_url, model=model, ads=1, users_per_fact=1,
                                  candidate_users=100, history_len=3, cache_path=str(tmp_path / "cache.sqlite"))
    kept = pd.read_parquet(tmp_path / "t" / "train.parquet")
    rej = pd.read_parquet(tmp_path / "t" / "rejected.parquet")
    assert len(kept) + len(rej) >= 1 and out.metadata["rows"] == len(kept)
    assert "acceptance_overall" in metrics.metadata


def test_local_runner(tmp_path, bundled_dataset, llm_server):
    base_url, model = llm_server
    kfp_local(tmp_path)

    @dsl.pipeline(name="construct-test")
    def pipe(uri: str, base_url: str, model: str, cache: str):
        d = dsl.importer(artifact_uri=uri, artifact_class=dsl.Dataset, reimport=False)
        dataset_construct(dataset=d.output, base_url=base_url, model=model, ads=1, users_per_fact=1,
                          candidate_users=100, history_len=3, cache_path=cache)

    pipe(uri=str(bundled_dataset.path), base_url=base_url, model=model, cache=str(tmp_path / "cache.sqlite"))
    train = list(Path(tmp_path / "kfp").rglob("train.parquet"))
    assert len(train) == 1 and (train[0].parent / "rejected.parquet").exists()
