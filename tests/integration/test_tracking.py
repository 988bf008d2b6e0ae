"""hllm_creator.tracking against a real ``mlflow server`` on 127.0.0.1 (the ``mlflow_server`` fixture).

One parent run, nested step runs with params from a StepConfig, metrics, a figure, a table, JSON
and file artifacts; model registration with aliases and ``download_registered`` by alias.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def server(mlflow_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "hllm-creator-tracking-test")
    return mlflow_server


def test_parent_and_nested_step_runs(server, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    from hllm_creator import tracking
    from hllm_creator.config import StepConfig

    class EmbedConfig(StepConfig):
        batch_size: int = 16
        backbone: str = "tiny-llama"
        shard: dict = {"index": 0, "count": 2}
        openai_api_key: str = "sk-must-not-be-logged"

    art = tmp_path / "sizes.txt"
    art.write_text("1 2 3\n")
    with tracking.parent_run("pipeline-test", tags={"kfp_run_id": "local-123", "dataset_hash": "abc"}) as parent:
        pid = parent.info.run_id
        for step in ("embed", "cluster"):
            with tracking.step_run(step, EmbedConfig()):
                tracking.log_metrics({"loss": 0.5, "n_users": 7, "skip_nan": float("nan"), "skip_str": "x"})
                tracking.log_metrics({"loss": 0.25}, step=1)
                fig, ax = plt.subplots()
                ax.bar(["a", "b"], [3, 4])
                tracking.log_figure(fig, "cluster_sizes")
                tracking.log_table(pd.DataFrame({"original": ["t1"], "personalized": ["p1"]}), "samples")
                tracking.log_json({"k": 1}, "summary")
                tracking.log_artifact(art, "files")

    client = mlflow.MlflowClient(tracking_uri=server)
    parent_run = client.get_run(pid)
    assert parent_run.info.status == "FINISHED"
    assert parent_run.data.tags["kfp_run_id"] == "local-123"
    assert parent_run.data.tags["git_sha"]
    children = client.search_runs([parent_run.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{pid}'")
    assert sorted(r.data.tags["step"] for r in children) == ["cluster", "embed"]
    child = children[0]
    assert child.data.params["batch_size"] == "16"
    assert child.data.params["shard.count"] == "2"  # nested config flattened
    assert "openai_api_key" not in child.data.params  # secrets never reach MLflow
    assert child.data.tags["config_hash"] == EmbedConfig().config_hash()
    assert child.data.metrics["loss"] == 0.25 and child.data.metrics["n_users"] == 7.0
    assert "skip_nan" not in child.data.metrics and "skip_str" not in child.data.metrics
    hist = client.get_metric_history(child.info.run_id, "loss")
    assert [m.value for m in sorted(hist, key=lambda m: m.step)] == [0.5, 0.25]
    paths = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"cluster_sizes.png", "samples.json", "summary.json", "files"} <= paths
    local = client.download_artifacts(child.info.run_id, "samples.json", str(tmp_path / "dl"))
    table = json.loads(open(local).read())
    assert table["columns"] == ["original", "personalized"] and table["data"] == [["t1", "p1"]]


def test_step_run_nests_under_env_parent(server, monkeypatch):
    """The pipeline passes the parent id through HLLM_PARENT_RUN_ID to each component process."""
    import mlflow

    from hllm_creator import tracking

    with tracking.parent_run("pipeline-env") as parent:
        pid = parent.info.run_id
    monkeypatch.setenv("HLLM_PARENT_RUN_ID", pid)
    with tracking.step_run("train", {"lr": 0.001}) as run:
        rid = run.info.run_id
    r = mlflow.MlflowClient(tracking_uri=server).get_run(rid)
    assert r.data.tags["mlflow.parentRunId"] == pid and r.data.params["lr"] == "0.001"


def test_register_alias_and_download(server, tmp_path):
    import mlflow

    from hllm_creator import tracking

    model_dir = tmp_path / "trained-model"  # any basename: download_registered reads MLmodel
    model_dir.mkdir()
    (model_dir / "hllm_config.json").write_text(json.dumps({"version": 1}))
    (model_dir / "weights.bin").write_bytes(b"\x00" * 1024)
    with tracking.step_run("train") as _:
        info = tracking.register_model(model_dir, aliases=("candidate",))
    client = mlflow.MlflowClient(tracking_uri=server)
    v1 = client.get_model_version_by_alias(tracking.MODEL_NAME, "candidate")
    assert str(v1.version) == str(info.registered_model_version)

    got = tracking.download_registered(f"models:/{tracking.MODEL_NAME}@candidate", tmp_path / "dl")
    assert got.is_dir()
    assert json.loads((got / "hllm_config.json").read_text()) == {"version": 1}
    assert (got / "weights.bin").stat().st_size == 1024
    # the model's environment: pinned packages, never the bare (unpublished) project name (issue 16)
    reqs = [ln.strip() for ln in (got.parent.parent / "requirements.txt").read_text().splitlines() if ln.strip()]
    assert f"mlflow=={mlflow.__version__}" in reqs and "hllm-creator" not in reqs
    assert all("==" in r or " @ " in r for r in reqs), reqs

    tracking.set_alias("champion", v1.version)
    assert client.get_model_version_by_alias(tracking.MODEL_NAME, "champion").version == v1.version
    got2 = tracking.download_registered(f"models:/{tracking.MODEL_NAME}@champion")
    assert (got2 / "hllm_config.json").exists()
    with pytest.raises(Exception):
        tracking.download_registered(f"models:/{tracking.MODEL_NAME}@no-such-alias", tmp_path / "x")


def _pipeline_with_model(tmp_path, adv: float, tag: str) -> str:
    """A parent run whose train step registers a model (alias candidate) and whose gsb-eval logs Adv."""
    from hllm_creator import tracking

    model_dir = tmp_path / f"model-{tag}"
    model_dir.mkdir()
    (model_dir / "hllm_config.json").write_text(json.dumps({"tag": tag}))
    with tracking.parent_run(f"pipeline-{tag}") as parent:
        with tracking.step_run("train", tags={"standin_data": "false"}):
            tracking.register_model(model_dir)
        with tracking.step_run("gsb-eval"):  # the CI lower bound is what promote compares
            tracking.log_metrics({"gsb_adv": adv, "gsb_ci_low": adv, "gsb_judge_failure_rate": 0.0})
    return parent.info.run_id


def test_promote_moves_champion_only_when_gsb_improves(server, tmp_path):
    import mlflow

    from hllm_creator import tracking

    name = tracking.MODEL_NAME
    client = mlflow.MlflowClient(tracking_uri=server)
    # the registry persists across tests on the session server: start from a clean slate
    try:
        client.delete_registered_model(name)
    except Exception:  # noqa: BLE001  (not registered yet)
        pass
    _pipeline_with_model(tmp_path, 0.10, "a")
    r1 = tracking.promote()
    assert r1["promoted"] and r1["reason"].startswith("no champion yet") and r1["candidate_score"] == pytest.approx(0.10)
    _pipeline_with_model(tmp_path, 0.05, "b")  # worse: stays candidate only
    r2 = tracking.promote()
    assert not r2["promoted"] and r2["champion_version"] == r1["candidate_version"]
    assert client.get_model_version_by_alias(name, "champion").version == r1["candidate_version"]
    _pipeline_with_model(tmp_path, 0.40, "c")  # better: becomes champion
    r3 = tracking.promote()
    assert r3["promoted"] and r3["candidate_score"] == pytest.approx(0.40)
    champ = client.get_model_version_by_alias(name, "champion")
    assert champ.version == r3["candidate_version"]
    assert json.loads((tracking.download_registered(f"models:/{name}@champion") / "hllm_config.json").read_text()) == {"tag": "c"}
    assert champ.tags.get("pipeline_run_id")
