"""hllm_creator.tracking with the embedded default: a sqlite store under the work dir, no server."""

from __future__ import annotations

import json

import pytest


def test_default_uri_is_sqlite_under_workdir(monkeypatch, tmp_path):
    from hllm_creator import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("HLLM_WORKDIR", str(tmp_path / "wd"))
    uri = tracking.resolve_tracking_uri()
    assert uri == f"sqlite:///{(tmp_path / 'wd' / 'mlflow.db').resolve()}"


def test_embedded_store_runs_and_registry(monkeypatch, tmp_path):
    import mlflow

    from hllm_creator import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("HLLM_WORKDIR", str(tmp_path / "wd"))
    with tracking.parent_run("p") as parent:
        with tracking.step_run("match", {"top_k": 3}):
            tracking.log_metrics({"selected": 4})
            tracking.log_json({"a": 1}, "summary")
    assert (tmp_path / "wd" / "mlflow.db").exists()
    client = mlflow.MlflowClient(tracking_uri=tracking.resolve_tracking_uri())
    kids = client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(kids) == 1 and kids[0].data.params["top_k"] == "3" and kids[0].data.metrics["selected"] == 4.0
    # artifacts of the embedded store live under the work dir too
    assert list((tmp_path / "wd" / "mlartifacts").rglob("summary.json"))

    model = tmp_path / "m"
    model.mkdir()
    (model / "w.json").write_text(json.dumps([1, 2]))
    with tracking.step_run("train"):
        tracking.register_model(model)
    got = tracking.download_registered("models:/hllm-creator@candidate")
    assert json.loads((got / "w.json").read_text()) == [1, 2]


def test_bad_inputs_are_clear(tmp_path):
    from hllm_creator import tracking

    with pytest.raises(ValueError, match="does not exist or is empty"):
        tracking.register_model(tmp_path / "missing")
    with pytest.raises(ValueError, match="not a model URI"):
        tracking.download_registered("hllm-creator@champion")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        tracking.download_registered("models:/hllm-creator@champion", tmp_path / "full")
