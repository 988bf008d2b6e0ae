"""embed + embed_merge components: python_func calls and a KFP local-runner pipeline (2 shards -> merge)."""

import json
from pathlib import Path

import numpy as np
from helpers import kfp_local, shared_tiny_workflow
from kfp import dsl

from hllm_creator.infer.common import read_embeddings
from hllm_creator_kfp.components.embed.component import embed, embed_merge


def test_python_func_shards_and_merge(tmp_path):
    data, mdir = shared_tiny_workflow()
    outs = []
    for i in range(2):
        out = dsl.Dataset(uri=str(tmp_path / f"shard{i}"))
        embed.python_func(model=dsl.Model(uri=str(mdir)), dataset=dsl.Dataset(uri=str(data)), embeddings=out, shard=f"{i}/2",
                          batch_size=16, item_cache=str(tmp_path / "cache.parquet"))
        assert out.metadata["shard_index"] == i and out.metadata["users"] > 0
        outs.append(out)
    merged = dsl.Dataset(uri=str(tmp_path / "merged"))
    embed_merge.python_func(shards=outs, embeddings=merged)
    ids, emb = read_embeddings(tmp_path / "merged")
    assert len(ids) == 60 == merged.metadata["users"] and len(set(ids)) == 60 and np.isfinite(emb).all()


def test_component_spec_documents_inputs():
    ins = embed.component_spec.inputs
    assert {"model", "dataset", "shard", "batch_size"} <= set(ins)
    assert "Args:" in embed.python_func.__doc__ and "shard" in embed.python_func.__doc__


def test_local_runner_fan_out_and_merge(tmp_path):
    data, mdir = shared_tiny_workflow()
    kfp_local(tmp_path)

    @dsl.pipeline(name="embed-test")
    def pipe(data_dir: str, model_uri: str, cache: str):
        m = dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Model, reimport=False)
        d = dsl.importer(artifact_uri=data_dir, artifact_class=dsl.Dataset, reimport=False)
        with dsl.ParallelFor(items=["0/2", "1/2"], parallelism=2) as shard:
            e = embed(model=m.output, dataset=d.output, shard=shard, batch_size=16, item_cache=cache)
        embed_merge(shards=dsl.Collected(e.outputs["embeddings"]))

    pipe(data_dir=str(data), model_uri=str(mdir), cache=str(tmp_path / "cache.parquet"))
    merged = [p for p in Path(tmp_path / "kfp").rglob("user_embeddings.parquet") if "embed-merge" in str(p)]
    assert len(merged) == 1, list(Path(tmp_path / "kfp").rglob("*.parquet"))
    ids, _ = read_embeddings(merged[0])
    assert len(ids) == 60
    meta = json.loads((merged[0].parent / "embed_meta.json").read_text())
    assert meta["merged_from"] == 2
