"""run_local(docker=DockerSettings(...)): what KFP's DockerRunner is given, and the clear errors for what
would fail inside the containers. No engine here (the run itself: tests/containers/test_pipeline_in_containers.py)."""

from __future__ import annotations

import os

import pytest


def test_runner_mounts_env_and_security(tmp_path, monkeypatch):
    import kfp.local

    from hllm_creator_kfp.pipelines.local_runner import DockerSettings

    data, state = tmp_path / "data", tmp_path / "state"
    data.mkdir()
    state.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("HLLM_PARENT_RUN_ID", "abc")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:18239/openai/v1")
    monkeypatch.setenv("HLLM_WORKDIR", str(tmp_path / "w"))  # the image's own, not passed
    runner = DockerSettings(image="img:1", state_dir=state, env={"OMP_NUM_THREADS": "1"}).runner(data, "/work")
    assert isinstance(runner, kfp.local.DockerRunner)
    a = runner.container_run_args
    env = a["environment"]
    assert env["HLLM_PARENT_RUN_ID"] == "abc" and env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
    assert env["OPENAI_BASE_URL"].endswith("/openai/v1") and env["OMP_NUM_THREADS"] == "1"
    assert env["HLLM_STATE_DIR"] == "/work/state" and "HLLM_WORKDIR" not in env and "HLLM_CACHE" not in env
    mounts = {m["Target"]: m for m in a["mounts"]}
    assert mounts[str(data)]["ReadOnly"] is True and mounts[str(data)]["Source"] == str(data)
    assert mounts["/work/state"]["Source"] == str(state) and not mounts["/work/state"]["ReadOnly"]
    assert a["user"] == "10001:10001" and a["network_mode"] == "host" and a["cap_drop"] == ["ALL"]
    assert a["security_opt"] == ["no-new-privileges"] and "/tmp" in a["tmpfs"]
    assert a["entrypoint"] == [""]  # the component's command replaces the image's entrypoint, as on Kubernetes


def test_check_names_what_the_containers_cannot_reach(tmp_path):
    from hllm_creator_kfp.pipelines.local_runner import DockerSettings

    root = tmp_path / "root"
    root.mkdir(mode=0o755)
    s = DockerSettings(image="img:1")
    with pytest.raises(ValueError, match="MLflow server"):
        s.check(root, f"sqlite:///{tmp_path}/mlflow.db")
    if os.geteuid() != 10001:
        with pytest.raises(ValueError, match=r"pipeline root .* not writable by the containers' user 10001"):
            s.check(root, "http://127.0.0.1:5000")
    root.chmod(0o1777)
    s.check(root, "http://127.0.0.1:5000")
    with pytest.raises(ValueError, match="image"):
        DockerSettings(image="").check(root, "http://127.0.0.1:5000")


def test_cli_run_docker_options_fail_early_and_clearly(tmp_path):
    from typer.testing import CliRunner

    from hllm_creator.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["run", "--preset", "tiny", "--docker-state-dir", str(tmp_path)])
    assert r.exit_code == 2 and "--docker-state-dir goes with --docker-image" in r.output
    # the conftest's tracking store is a sqlite file: not reachable from a container; refused before
    # the dataset is prepared or a server started
    r = runner.invoke(app, ["run", "--preset", "tiny", "--docker-image", "img:1", "--pipeline-root",
                            str(tmp_path / "root")])
    assert r.exit_code == 2 and "needs an MLflow server" in r.output, r.output
    assert not (tmp_path / "root" / "logs").exists()
