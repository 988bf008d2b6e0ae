"""train component: python_func on tiny-llama, and a KFP local-runner pipeline (importer -> train)."""

import json
from pathlib import Path

import pytest
from helpers import kfp_local
from kfp import dsl

from hllm_creator_kfp.components.train.component import train


@pytest.fixture(scope="module")
def small_ds(tmp_path_factory, bundled_dataset):
    from helpers import small_dataset

    return small_dataset(tmp_path_factory.mktemp("small") / "ds", n_users=30, source=bundled_dataset.path)


def test_component_spec_documents_inputs():
    spec = train.component_spec
    assert {"dataset", "train_set", "train_preset", "max_steps"} <= set(spec.inputs)
    assert {"model", "metrics"} <= set(spec.outputs)
    assert "Args:" in train.python_func.__doc__ and "train_set" in train.python_func.__doc__


def test_python_func_writes_a_loadable_model(small_ds, tmp_path):
    from hllm_creator.model import HLLMCreator

    model = dsl.Model(uri=str(tmp_path / "model"))
    metrics = dsl.Metrics(uri=str(tmp_path / "metrics"))
    train.python_func(dataset=dsl.Dataset(uri=str(small_ds.path)), model=model, metrics=metrics,
                      train_preset="tiny", max_steps=2, register=False)
    m = HLLMCreator.load(model.path)
    assert model.metadata["model_hash"] == m.model_hash and model.metadata["standin_data"] is True
    assert 0 <= metrics.metadata["model_recall@10"] <= 1 and "popularity_recall@10" in metrics.metadata
    assert json.loads((Path(model.path) / "eval.json").read_text())["model"]["n_items"] == len(small_ds.items)


def test_local_runner_pipeline(small_ds, tmp_path):
    kfp_local(tmp_path)

    @dsl.pipeline(name="train-test")
    def pipe(data_uri: str):
        d = dsl.importer(artifact_uri=data_uri, artifact_class=dsl.Dataset, reimport=False)
        train(dataset=d.output, train_preset="tiny", max_steps=2, register=True)

    pipe(data_uri=str(small_ds.path))
    cfgs = list(Path(tmp_path / "kfp").rglob("hllm_config.json"))
    assert len(cfgs) == 1, list(Path(tmp_path / "kfp").rglob("*"))
    model_dir = cfgs[0].parent
    assert (model_dir / "model.safetensors").exists() and (model_dir / "eval.json").exists()
