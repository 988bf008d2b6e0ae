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
    # without a target: one copy per version under the work dir, reused (a restarted server), never a
    # new temp dir per call; nothing half-written beside it
    reg = tmp_path / "wd" / "registry"
    assert got.is_relative_to(reg) and [p.name.startswith("hllm-creator-v1-") for p in reg.iterdir()] == [True]
    # the second call reads the copy on disk: a file only that copy has is still there, and no second
    # copy appears (a fresh download would land in a new dir without it)
    (got / "only-in-the-copy").write_text("x")
    again = tracking.download_registered("models:/hllm-creator/1")
    assert again == got and (again / "only-in-the-copy").exists()
    assert len(list(reg.iterdir())) == 1


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


def _pipeline_run(name: str, lr: float, adv: float) -> str:
    from hllm_creator import tracking

    with tracking.parent_run(name, tags={"config_hash": f"h{lr}"}) as p:
        with tracking.step_run("train", {"lr": lr, "epochs": 1}):
            tracking.log_metrics({"loss": 1.0 / (1 + lr)})
        for shard in range(2):  # two embed shards: compare lists them as embed and embed#2
            with tracking.step_run("embed", {"shard": f"{shard}/2"}):
                tracking.log_metrics({"users": 10 + shard})
        with tracking.step_run("gsb-eval"):
            tracking.log_metrics({"gsb_adv": adv})
    return p.info.run_id


def test_compare_runs_side_by_side_through_the_cli():
    from typer.testing import CliRunner

    from hllm_creator.cli import app
    from hllm_creator.tracking import compare_runs

    a = _pipeline_run("run-a", 0.1, 0.2)
    b = _pipeline_run("run-b", 0.3, 0.5)
    df = compare_runs(a, b)
    row = df[(df.scope == "gsb-eval") & (df.key == "gsb_adv")].iloc[0]
    assert row.a == 0.2 and row.b == 0.5 and abs(row["diff"] - 0.3) < 1e-9
    assert set(df[df.kind == "param"].scope) >= {"train", "embed", "embed#2"}
    lr = df[(df.scope == "train") & (df.key == "lr")].iloc[0]
    assert (lr.a, lr.b) == ("0.1", "0.3")
    same = compare_runs(a, b, only_diff=True)
    assert "epochs" not in set(same.key)

    r = CliRunner().invoke(app, ["compare", a, "run-b", "--json"])  # by id and by run name
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert any(x["scope"] == "gsb-eval" and x["key"] == "gsb_adv" and x["b"] == 0.5 for x in rows)
    r = CliRunner().invoke(app, ["compare", a, b])
    assert r.exit_code == 0 and "gsb_adv" in r.output and "train" in r.output
    r = CliRunner().invoke(app, ["compare", a, "no-such-run"])
    assert r.exit_code != 0 and "no MLflow run" in r.output


def test_promote_cli(tmp_path):
    from typer.testing import CliRunner

    from hllm_creator import tracking
    from hllm_creator.cli import app

    model = tmp_path / "m"
    model.mkdir()
    (model / "w.json").write_text("1")
    with tracking.parent_run("p") as p:
        with tracking.step_run("train", tags={"standin_data": "false"}):
            tracking.register_model(model)
        with tracking.step_run("gsb-eval"):
            tracking.log_metrics({"gsb_adv": 0.3, "gsb_ci_low": 0.1, "gsb_judge_failure_rate": 0.0})
    r = CliRunner().invoke(app, ["promote", "--run", p.info.run_id])
    assert r.exit_code == 0, r.output
    assert "promoted: no champion yet" in r.output
    r = CliRunner().invoke(app, ["promote"])
    assert r.exit_code == 0 and "already champion" in r.output
    r = CliRunner().invoke(app, ["promote", "--run", "nope"])
    assert r.exit_code != 0 and "no version" in r.output
