"""The serving bundle's assembly (atomic, complete or absent; errors name the file), its manifest
checks, and the serving readiness rule (no ready server without clusters/matches/creatives) without
loading a model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hllm_creator.publish.bundle import assemble_bundle, inputs_from_run_dir
from hllm_creator.serving.bundle import BundleError, bundle_paths, read_manifest, verify_bundle
from hllm_creator.serving.loading import check_required


def _run(tmp_path):
    """A KFP-shaped run dir with small stand-in files (the format is not read here, only copied)."""
    rd = tmp_path / "hllm-creator-2026-01-01-00-00-00-000000"
    (rd / "train" / "model").mkdir(parents=True)
    (rd / "train" / "model" / "hllm_config.json").write_text("{}")
    (rd / "train" / "model" / "model_hash.json").write_text(json.dumps({"model_hash": "abc"}))
    (rd / "train" / "executor_output.json").write_text(json.dumps({"artifacts": {"model": {"artifacts": [
        {"metadata": {"mlflow_run_id": "r1", "standin_data": False}}]}}}))
    (rd / "cluster" / "clusters").mkdir(parents=True)
    np.save(rd / "cluster" / "clusters" / "centroids.npy", np.zeros((2, 4), np.float32))
    (rd / "cluster" / "clusters" / "cluster_meta.json").write_text("{}")
    (rd / "match" / "matches").mkdir(parents=True)
    pd.DataFrame({"item_id": ["1"]}).to_parquet(rd / "match" / "matches" / "matches.parquet")
    (rd / "generate" / "creatives").mkdir(parents=True)
    pd.DataFrame({"item_id": ["1"]}).to_parquet(rd / "generate" / "creatives" / "creatives.parquet")
    (rd / "gsb-eval" / "report").mkdir(parents=True)
    (rd / "gsb-eval" / "report" / "gsb_summary.json").write_text(json.dumps({"adv": 0.1, "n": 12, "label": "x"}))
    data = tmp_path / "data"
    data.mkdir()
    pd.DataFrame({"item_id": ["1"], "title": ["t"]}).to_parquet(data / "items.parquet")
    (data / "manifest.json").write_text(json.dumps({"name": "d", "sha256": {"items.parquet": "x"}}))
    return rd, data


def test_assemble_from_a_run_dir(tmp_path):
    rd, data = _run(tmp_path)
    inp = inputs_from_run_dir(rd, data)
    assert inp.train_run_id == "r1" and inp.gsb is not None and inp.personalization is None
    m = assemble_bundle(inp, tmp_path / "b", run_info={"config_hash": "c1"})
    assert read_manifest(tmp_path / "b") == json.loads((tmp_path / "b" / "bundle.json").read_text()) == m
    assert m["model_hash"] == "abc" and m["config_hash"] == "c1" and m["dataset"] == "d"
    assert m["figures"]["gsb"] == {"adv": 0.1, "n": 12}
    assert set(m["files"]) == {"model/hllm_config.json", "model/model_hash.json", "artifacts/centroids.npy",
                               "artifacts/cluster_meta.json", "artifacts/matches.parquet",
                               "artifacts/creatives.parquet", "artifacts/items.parquet"}
    model, art, items = bundle_paths(tmp_path / "b")
    assert model.name == "model" and items.parent == art
    assert verify_bundle(tmp_path / "b") == []
    (art / "matches.parquet").write_bytes(b"changed")
    assert verify_bundle(tmp_path / "b") == ["artifacts/matches.parquet: content differs from the manifest"]
    check_required(art, ("clusters", "matches", "creatives"))  # a bundle's artifacts satisfy the predictor


def test_missing_outputs_name_the_files_and_leave_nothing(tmp_path):
    rd, data = _run(tmp_path)
    (rd / "generate" / "creatives" / "creatives.parquet").unlink()
    with pytest.raises(BundleError, match=r"missing .*generate/creatives/creatives\.parquet"):
        assemble_bundle(inputs_from_run_dir(rd, data), tmp_path / "b")
    assert not [p.name for p in tmp_path.iterdir() if p.name in ("b",) or p.name.startswith(".b.")]  # no temp left
    with pytest.raises(BundleError, match="lacks the step outputs: .*match"):
        import shutil

        shutil.rmtree(rd / "match")
        inputs_from_run_dir(rd, data)
    with pytest.raises(BundleError, match="not a directory"):
        inputs_from_run_dir(tmp_path / "nope")


def test_readiness_rule_names_what_is_missing_and_where(tmp_path):
    rd, _ = _run(tmp_path)
    with pytest.raises(ValueError) as e:
        check_required(rd, ("clusters", "matches", "creatives"))
    msg = str(e.value)
    assert "clusters: centroids.npy" in msg and "creatives: creatives.parquet" in msg
    assert f"looked in {rd} and {rd}/*/" in msg and "hllm-creator publish RUN_DIR" in msg
    with pytest.raises(ValueError, match="no inference outputs given: this server needs clusters"):
        check_required(None, ("clusters",))
    check_required(rd / "cluster", ("clusters",))  # one level below is found
    check_required(None, ())  # nothing required: nothing checked
