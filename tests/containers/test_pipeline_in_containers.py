"""The tiny pipeline in its containers (``make test-containers``; tests/containers/run.sh builds the cpu
image and sets HLLM_CONTAINER_TEST=1 and DOCKER_HOST; skipped in ``make test``).

The same preset and data run twice against one real ``mlflow server`` and one LLM server (the project's,
SmolLM2, on the port the replies were recorded with):
1. KFP's local SubprocessRunner: every step a subprocess of this venv (what tests/integration does);
2. KFP's local DockerRunner: every step in a container of the cpu image built by run.sh (the image a
   parameter of the pipeline, ``build_pipeline(image=...)``, not a patched tag), as a cluster runs it:
   the component's command in place of the entrypoint, uid 10001, a tmpfs /tmp, no capabilities, the
   image's own HLLM_CACHE (root-owned, the baked SmolLM2), MLflow over HTTP (artifacts served by the
   server), the reply cache and checkpoints on a mounted state volume (HLLM_STATE_DIR).
Then every step's outputs of run 2 are compared with run 1's by the pipeline digest
(tests/pipeline_digest.py: structure, strings and ints exactly, floats within ATOL/RTOL), and run 2's
outputs are checked to be written by uid 10001. The teacher's and judge's replies of both runs come from
one reply cache (the recorded one, plus whatever run 1 asked), so only the code and where it runs
decide the outputs.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.environ.get("HLLM_CONTAINER_TEST") != "1",
                                reason="container test: `make test-containers` (tests/containers/run.sh)")

CPU_IMAGE = os.environ.get("HLLM_CT_CPU_IMAGE", "hllm-creator-cpu:ct")
UID = 10001
STEPS = {"dataset-construct", "train", "embed", "cluster", "match", "generate", "gsb-eval", "personalization",
         "publish"}


@pytest.fixture()
def mlflow_http(tmp_path):
    """A real ``mlflow server`` whose artifacts go through it (mlflow-artifacts:/), as on a cluster: the
    containers see only its URL, never a path of this machine."""
    from conftest import BIN, start_server, stop_server
    from hllm_creator.process import free_port

    root = tmp_path / "mlflow"
    root.mkdir()
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    proc = start_server(cmd, f"http://127.0.0.1:{port}/health", root / "server.log", timeout=180, env=env)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(proc)


def _own(path: Path, uid: int) -> None:
    for p in [path, *path.rglob("*")]:
        os.chown(p, uid, uid, follow_symlinks=False)


def test_tiny_pipeline_in_containers_has_the_subprocess_runs_outputs(tmp_path, bundled_dataset, mlflow_http,
                                                                     monkeypatch):
    import mlflow
    from helpers import small_dataset
    from pipeline_digest import GOLDEN, RECORDED_PORT, Deviation, compare, digest

    from hllm_creator_kfp.pipelines.local_runner import DockerSettings, llm_endpoint, run_local
    from hllm_creator_kfp.pipelines.presets import get_preset

    preset = get_preset("tiny")
    src = getattr(bundled_dataset, "path", bundled_dataset)
    data = small_dataset(tmp_path / "data", n_users=40, source=src).path  # as tests/integration
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_http)
    monkeypatch.setenv("HLLM_LLM_PORT", str(RECORDED_PORT))  # the recorded replies are keyed by the URL
    # one state dir per run (train's checkpoints are keyed by config: run 2 must not resume run 1's)
    state_sub, state_docker = tmp_path / "state-subprocess", tmp_path / "state-docker"
    (state_sub / "llm_cache").mkdir(parents=True)
    shutil.copy(GOLDEN.with_suffix(".replies.sqlite"), state_sub / "llm_cache" / "replies.sqlite")
    root_sub, root_docker = tmp_path / "root-subprocess", tmp_path / "root-docker"
    times = {}
    with llm_endpoint(preset, None, tmp_path / "logs") as (url, _model):
        # 1. subprocesses of this venv
        t = time.monotonic()
        with monkeypatch.context() as m:
            m.setenv("HLLM_STATE_DIR", str(state_sub))
            sub = run_local(preset, pipeline_root=root_sub, data_dir=data, llm_base_url=url, run_name="ct-subprocess")
        times["subprocess"] = time.monotonic() - t
        # 2. every step in the cpu image, as its non-root user
        (state_docker / "llm_cache").mkdir(parents=True)
        shutil.copy(state_sub / "llm_cache" / "replies.sqlite", state_docker / "llm_cache" / "replies.sqlite")
        root_docker.mkdir()
        _own(state_docker, UID)
        _own(root_docker, UID)
        t = time.monotonic()
        dock = run_local(preset, pipeline_root=root_docker, data_dir=data, llm_base_url=url, run_name="ct-docker",
                         docker=DockerSettings(image=CPU_IMAGE, state_dir=state_docker,
                                               env={"OMP_NUM_THREADS": "2"}))
        times["docker"] = time.monotonic() - t
    print(f"tiny pipeline: SubprocessRunner {times['subprocess']:.0f}s, DockerRunner {times['docker']:.0f}s")

    # every step ran in the image: KFP found it here (no pull), and wrote its outputs as uid 10001
    log = dock.log.read_text()
    assert f"Found image '{CPU_IMAGE}'" in log and "Pulling image" not in log
    steps_dirs = [p for p in dock.run_dir.iterdir() if p.is_dir()]
    assert {p.name for p in steps_dirs} >= {"train", "cluster", "match", "generate", "publish"}, steps_dirs
    files = [f for f in dock.run_dir.rglob("*") if f.is_file() and f.parent != dock.run_dir]
    written = {f.relative_to(dock.run_dir).as_posix(): f.stat().st_uid for f in files}
    by_step = {}
    for rel, uid in written.items():
        by_step.setdefault(rel.split("/")[0], set()).add(uid)
    assert all(UID in uids for uids in by_step.values()), by_step  # Metrics files: written by the host runner

    # the same step outputs as the subprocess run (structure exactly, floats within the tolerance)
    dev = Deviation()
    changed = compare(digest(sub.run_dir), digest(dock.run_dir), dev)
    print(f"docker vs subprocess: largest float difference {dev.abs:.3g} ({dev.ratio:.2f} of the tolerance) "
          f"at {dev.where}")
    assert not changed, "step outputs differ in the containers:\n" + "\n".join(changed[:40])
    if url.startswith(f"http://127.0.0.1:{RECORDED_PORT}/"):  # and the recorded ones
        gold = Deviation()
        changed = compare(json.loads(GOLDEN.read_text()), digest(dock.run_dir), gold)
        print(f"docker vs recorded: largest float difference {gold.abs:.3g} ({gold.ratio:.2f} of the tolerance)")
        assert not changed, "\n".join(changed[:40])

    # the containers' step runs nest under the parent run on the MLflow server, artifacts included
    client = mlflow.MlflowClient(tracking_uri=mlflow_http)
    parent = client.get_run(dock.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["runner"] == "kfp.local.DockerRunner"
    assert parent.data.tags["image"] == CPU_IMAGE
    kids = client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{dock.parent_run_id}'")
    assert {r.data.tags["step"].replace("_", "-") for r in kids} == STEPS
    assert all(r.info.status == "FINISHED" for r in kids)
    cluster_run = next(r for r in kids if r.data.tags["step"] == "cluster")
    assert cluster_run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert any(a.path.endswith(".png") for a in client.list_artifacts(cluster_run.info.run_id))
    assert dock.summary["n_creatives"] == sub.summary["n_creatives"] > 0
