"""MLflow's basic-auth app, configured as manifests/base/mlflow.yaml configures it (the same ini from
the ConfigMap, admin password and Flask secret from the environment), with the users made by
``hllm_creator.tracking.auth_setup`` (the ``mlflow-users`` Job): a real ``mlflow server`` on 127.0.0.1.

Anonymous requests are refused; the pipeline user logs runs, registers a version and moves the
alias; the serving user reads the alias and the version but can neither log nor move the alias.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import BIN, start_server, stop_server
from hllm_creator.process import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
# MLflow's basic-auth app needs Flask-WTF (the `mlflow[auth]` extra; in the `test` extra and the CPU image)
pytest.importorskip("flask_wtf", reason="Flask-WTF missing: pip install 'mlflow[auth]==3.17.2'")

REPO = Path(__file__).resolve().parents[2]
ADMIN_PW = "admin-pw-for-tests-only-0123456789"
WRITER = ("hllm-pipeline", "writer-pw-for-tests-0123456789")
READER = ("hllm-serving", "reader-pw-for-tests-0123456789")


def _ini_from_manifest(root: Path) -> Path:
    docs = yaml.safe_load_all((REPO / "manifests" / "base" / "mlflow.yaml").read_text())
    ini = next(d for d in docs if d and d["kind"] == "ConfigMap")["data"]["basic_auth.ini"]
    assert "sqlite:////data/basic_auth.db" in ini
    p = root / "basic_auth.ini"
    p.write_text(ini.replace("sqlite:////data/basic_auth.db", f"sqlite:///{root / 'basic_auth.db'}"))
    return p


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-auth")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_AUTH_CONFIG_PATH=str(_ini_from_manifest(root)),
               MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PW, MLFLOW_FLASK_SERVER_SECRET_KEY="flask-secret-for-tests")
    cmd = [str(BIN / "mlflow"), "server", "--app-name", "basic-auth",
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--serve-artifacts",
           "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    proc = start_server(cmd, f"http://127.0.0.1:{port}/health", root / "server.log", timeout=240, env=env)
    yield f"http://127.0.0.1:{port}", root
    stop_server(proc)


def _login(monkeypatch, user: tuple[str, str]) -> None:
    """MLflow's client reads the basic-auth credentials from the environment on every request."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", user[1])


def test_auth_setup_users_and_permissions(auth_server, monkeypatch, tmp_path, caplog):
    import mlflow
    from mlflow.exceptions import MlflowException

    from hllm_creator.tracking.auth_setup import setup_users

    uri, root = auth_server
    # anonymous: refused
    r = httpx.get(f"{uri}/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": "hllm-creator"})
    assert r.status_code == 401
    # what the Job runs, as the admin; twice: idempotent (passwords re-set, grants replaced)
    _login(monkeypatch, ("admin", ADMIN_PW))
    for _ in range(2):
        out = setup_users(uri, writer=WRITER, reader=READER, wait_s=30)
    assert out["writer"] == {"user": WRITER[0], "permission": "MANAGE"}
    assert WRITER[1] not in caplog.text + str(out) and READER[1] not in caplog.text + str(out)

    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    # the pipeline user: logs a run with an artifact, registers a version, moves the alias
    _login(monkeypatch, WRITER)
    run = client.create_run(out["experiment_id"])
    client.log_metric(run.info.run_id, "gsb_adv", 0.5)
    (tmp_path / "w.txt").write_text("weights")
    client.log_artifact(run.info.run_id, str(tmp_path / "w.txt"), "model_dir")
    mv = client.create_model_version("hllm-creator", f"runs:/{run.info.run_id}/model_dir", run_id=run.info.run_id)
    client.set_registered_model_alias("hllm-creator", "champion", mv.version)

    # the serving user: reads the alias and downloads the version's files, nothing more
    _login(monkeypatch, READER)
    got = client.get_model_version_by_alias("hllm-creator", "champion")
    assert got.version == mv.version
    dst = client.download_artifacts(run.info.run_id, "model_dir", str(tmp_path / "dl"))
    assert (Path(dst) / "w.txt").read_text() == "weights"
    for action in (lambda: client.set_registered_model_alias("hllm-creator", "champion", mv.version),
                   lambda: client.create_run(out["experiment_id"]),
                   lambda: client.log_metric(run.info.run_id, "gsb_adv", 1.0)):
        with pytest.raises(MlflowException) as ei:
            action()
        assert ei.value.get_http_status_code() == 403
    # a wrong password: refused
    _login(monkeypatch, (READER[0], "wrong"))
    with pytest.raises(MlflowException) as ei:
        client.get_registered_model("hllm-creator")
    assert ei.value.get_http_status_code() == 401


def test_auth_setup_refuses_bad_input(monkeypatch):
    from hllm_creator.tracking.auth_setup import setup_users

    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    with pytest.raises(ValueError, match="admin"):
        setup_users("http://127.0.0.1:9", writer=WRITER, reader=READER, wait_s=0)
    _login(monkeypatch, ("admin", "x"))
    with pytest.raises(ValueError, match="different users"):
        setup_users("http://127.0.0.1:9", writer=WRITER, reader=(WRITER[0], "p"), wait_s=0)
    with pytest.raises(ValueError, match="non-empty password"):
        setup_users("http://127.0.0.1:9", writer=WRITER, reader=(READER[0], ""), wait_s=0)
