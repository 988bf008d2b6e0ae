"""embed: a real tiny HLLMCreator, the item cache, shards + merge, history modes, CLI, errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hllm_creator.data import load_dataset
from hllm_creator.data.schema import DataError
from hllm_creator.data.split import user_sequences
from hllm_creator.infer import embed as E
from hllm_creator.infer.common import read_embeddings
from hllm_creator.infer.item_cache import ItemCache


@pytest.fixture(scope="module")
def model(infer_workflow):
    return E.load_model(infer_workflow[1])


@pytest.fixture(scope="module")
def ds(infer_workflow):
    return load_dataset(infer_workflow[0])


def test_histories_modes(ds):
    seqs = user_sequences(ds.interactions)
    h = E.histories(ds.interactions, "no-test")
    a = E.histories(ds.interactions, "all")
    for u, s in seqs.items():
        assert a[u] == s
        assert h[u] == (s[:-1] if len(s) >= 3 else s)
    with pytest.raises(DataError, match="history mode"):
        E.histories(ds.interactions, "everything")


def test_cached_equals_naive_and_each_item_encoded_once(model, ds, tmp_path):
    hist = E.histories(ds.interactions).iloc[:25]
    cache = ItemCache(model.model_hash, tmp_path / "cache.parquet")
    calls = []
    orig = model.encode_items

    def counting(texts, **kw):  # wraps the real encoder only to count what it is asked
        calls.extend(texts)
        return orig(texts, **kw)

    model.encode_items = counting
    try:
        users, emb = E.embed_users(model, ds.items, hist, batch_size=8, cache=cache, progress=False)
    finally:
        del model.encode_items
    texts = E.item_texts(ds.items)
    distinct = {texts[i] for s in hist for i in s}  # two items may share a text: encoded once
    assert len(calls) == len(set(calls)) == len(distinct)  # every item text once
    users_n, emb_n = E.embed_users_naive(model, ds.items, hist, progress=False)
    assert users == users_n == sorted(hist.index)
    np.testing.assert_allclose(emb, emb_n, atol=2e-4, rtol=1e-3)
    assert emb.shape == (25, model.user_hidden_size) and np.isfinite(emb).all()
    # persisted: a fresh cache object encodes nothing the second time and gives the same vectors
    cache2 = ItemCache(model.model_hash, tmp_path / "cache.parquet")
    assert len(cache2) == len(distinct)
    _, emb2 = E.embed_users(model, ds.items, hist, cache=cache2, progress=False)
    assert cache2.misses == 0 and cache2.hits == len(distinct)
    np.testing.assert_allclose(emb, emb2, atol=1e-5)  # other user batch size: float noise only
    # another model hash never reads these entries
    other = ItemCache("another-model", tmp_path / "cache.parquet")
    other.get(sorted(distinct)[:3], lambda t: np.ones((len(t), 64), np.float32), progress=False)
    assert other.misses == 3


def test_shards_partition_users_and_merge_equals_full(infer_workflow, model, tmp_path):
    data, mdir = infer_workflow
    cache = str(tmp_path / "cache.parquet")
    full = E.run(E.EmbedConfig(model_dir=str(mdir), data_dir=str(data), item_cache=cache), tmp_path / "full",
                 progress=False, model=model)
    assert full["users"] == 60 and full["items_encoded"] > 0
    metas = [E.run(E.EmbedConfig(model_dir=str(mdir), data_dir=str(data), shard_index=i, shard_count=3,
                                 item_cache=cache), tmp_path / f"s{i}", progress=False, model=model)
             for i in range(3)]
    assert sum(m["users"] for m in metas) == 60 and all(m["users"] > 5 for m in metas)
    assert all(m["items_encoded"] == 0 for m in metas)  # the full run filled the on-disk cache
    ids = [set(read_embeddings(tmp_path / f"s{i}")[0]) for i in range(3)]
    assert not (ids[0] & ids[1]) and not (ids[1] & ids[2]) and not (ids[0] & ids[2])
    merged = E.merge_shards([tmp_path / f"s{i}" for i in (2, 0, 1)], tmp_path / "merged")
    assert merged["users"] == 60
    u_full, e_full = read_embeddings(tmp_path / "full")
    u_m, e_m = read_embeddings(tmp_path / "merged")
    assert u_full == u_m
    np.testing.assert_allclose(e_full, e_m, atol=1e-5)
    df = pd.read_parquet(tmp_path / "full" / "user_embeddings.parquet")
    assert list(df.columns) == ["user_id", "embedding"]
    # a missing shard or a shard given twice is refused
    with pytest.raises(DataError, match="expected shards 0..2"):
        E.merge_shards([tmp_path / "s0", tmp_path / "s1"], tmp_path / "bad")
    with pytest.raises(DataError, match="expected shards"):
        E.merge_shards([tmp_path / "s0", tmp_path / "s0", tmp_path / "s1"], tmp_path / "bad")
    with pytest.raises(DataError, match="disagree"):
        E.merge_shards([tmp_path / "full", tmp_path / "s0"], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_shard_assignment_is_stable():
    ids = [f"user{i}" for i in range(2000)]
    a = [E.shard_of(u, 4) for u in ids]
    assert a == [E.shard_of(u, 4) for u in reversed(ids)][::-1]
    counts = np.bincount(a, minlength=4)
    assert counts.min() > 400  # balanced
    assert E.parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "x/2", "1", "-1/3"):
        with pytest.raises(DataError, match="shard"):
            E.parse_shard(bad)


def test_cli_embed_help_and_run(infer_workflow, tmp_path):
    from hllm_creator.cli import app

    data, mdir = infer_workflow
    r = CliRunner().invoke(app, ["embed", "--help"])
    assert r.exit_code == 0 and "--shard" in r.output and "item" in r.output.lower()
    r = CliRunner().invoke(app, ["embed", "--model", str(mdir), "--data", str(data), "--out", str(tmp_path / "o"),
                                 "--shard", "1/2", "--item-cache", str(tmp_path / "c.parquet"), "--quiet",
                                 "--max-users", "7", "--bf16"])
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "o" / "embed_meta.json").read_text())
    assert meta["shard_index"] == 1 and meta["shard_count"] == 2 and meta["users"] == 7 and meta["bf16"]
    ids, emb = read_embeddings(tmp_path / "o")
    assert all(E.shard_of(u, 2) == 1 for u in ids) and np.isfinite(emb).all()
    import mlflow

    runs = mlflow.search_runs(search_all_experiments=True)
    assert runs["tags.step"].tolist() == ["embed"] and runs["params.shard_count"].iloc[0] == "2"


def test_bad_inputs_name_what_and_where(infer_workflow, tmp_path):
    data, mdir = infer_workflow
    with pytest.raises(DataError, match="model dir"):
        E.run(E.EmbedConfig(model_dir=str(tmp_path / "nope"), data_dir=str(data)), tmp_path / "o", progress=False)
    with pytest.raises(ValueError, match="shard index"):
        E.EmbedConfig(model_dir="m", data_dir="d", shard_index=3, shard_count=3)
    (tmp_path / "c.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="item cache"):
        ItemCache("h", tmp_path / "c.parquet")
    bad = pd.DataFrame({"user_id": ["a", "a"], "embedding": [np.zeros(3, np.float32)] * 2})
    bad.to_parquet(tmp_path / "dup.parquet")
    with pytest.raises(DataError, match=r"duplicate user_id 'a'.*row 1"):
        read_embeddings(tmp_path / "dup.parquet")
