"""Issue 17 end to end on real parts: a tiny real run's outputs -> ``hllm-creator publish`` (bundle,
load check with the real serving loaders, one registered version in a real MLflow sqlite store)
-> ``hllm-creator serve predictor --model-uri models:/hllm-creator@candidate`` with NO other argument
(a real KServe HTTP server on 127.0.0.1) -> the run's titles; a server pointed at outputs without
clusters never turns ready and says what is missing; A/B exposures and clicks survive SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx
import pandas as pd
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(serving_stack):
    """The tiny real stack of the serving tests (the root conftest's session fixture)."""
    return serving_stack


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite MLflow store + work dir for the module (the servers are subprocesses: env vars)."""
    root = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HLLM_WORKDIR", str(root))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.delenv("HLLM_PARENT_RUN_ID", raising=False)
        yield root


@pytest.fixture(autouse=True)
def _use_store(_isolated_tracking, store, monkeypatch):
    """After conftest's per-test store: this module's tests share the module's store."""
    monkeypatch.setenv("HLLM_WORKDIR", str(store))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")


def _cli(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hllm_creator.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())


@pytest.fixture(scope="module")
def published(stack, store):
    """A pipeline parent run (tags + GSB figures as the runner logs them), a train step run, then
    ``hllm-creator publish`` of the stack's outputs under it (CLI, subprocess)."""
    from hllm_creator import tracking

    with tracking.parent_run("pipeline-tiny", tags={"dataset_hash": "x", "config_hash": "cfg123"}) as parent:
        with tracking.step_run("train", tags={"standin_data": "false"}):
            pass
        with tracking.step_run("gsb-eval"):
            tracking.log_metrics({"gsb_ci_low": 0.1, "gsb_judge_failure_rate": 0.0, "gsb_adv": 0.3})
    pid = parent.info.run_id
    # the dataset hash the runner tags must be the catalog's: use the real fingerprint
    from pathlib import Path

    from hllm_creator.data.schema import dataset_fingerprint

    items_dir = Path(stack["items"]).parent
    tracking.mlflow_utils._mlflow().MlflowClient().set_tag(pid, "dataset_hash", dataset_fingerprint(items_dir)[1])
    art = stack["artifacts"]
    r = _cli("publish", "--model", stack["model_dir"], "--clusters", art, "--matches", art, "--creatives", art,
             "--data", str(items_dir), "--out", str(store / "bundle"), "--run-id", pid)
    assert r.returncode == 0, r.stdout + r.stderr
    return {"parent": pid, "out": r.stdout, "bundle": store / "bundle"}


def test_publish_writes_a_checked_registered_bundle(published, stack):
    from hllm_creator import tracking
    from hllm_creator.serving.bundle import read_manifest, verify_bundle

    assert "load check:" in published["out"] and "registered hllm-creator version 1" in published["out"]
    m = read_manifest(published["bundle"])
    assert m["mlflow_run_id"] == published["parent"] and m["config_hash"] == "cfg123"
    assert m["run_metrics"]["gsb_ci_low"] == 0.1
    assert {"model/hllm_config.json", "artifacts/centroids.npy", "artifacts/creatives.parquet",
            "artifacts/matches.parquet", "artifacts/items.parquet"} <= set(m["files"])
    assert verify_bundle(published["bundle"]) == []
    mv = tracking.mlflow_utils._version_for("models:/hllm-creator@candidate")
    assert mv.tags["kind"] == "bundle" and mv.tags["bundle_id"] == m["bundle_id"]
    assert mv.tags["pipeline_run_id"] == published["parent"]
    # promote's evidence is found from the publish run (a sibling of gsb-eval and train)
    res = tracking.promote("candidate")
    assert res["promoted"], res


def _user_with_personalized(stack):
    ad, cid, title = stack["personalized"]
    u = next(u for u, c in stack["assignments"].items() if c == cid)
    return u, ad, title


def test_serve_model_uri_alone_serves_the_runs_titles(published, stack, store):
    from hllm_creator.process import serve_process

    creatives = pd.read_parquet(f"{stack['artifacts']}/creatives.parquet")
    u, ad, title = _user_with_personalized(stack)
    with serve_process("predictor", ["--model-uri", "models:/hllm-creator@candidate", "--threads", "1"],
                       timeout=300, log_dir=store / "logs") as h:
        r = httpx.post(f"{h.url}/v1/models/predictor:predict", timeout=60,
                       json={"instances": [{"user_history": stack["users"][u], "candidate_ad_ids": [ad]}]})
        assert r.status_code == 200, r.text
        a = r.json()["predictions"][0]["ads"][0]
        assert a["title"] == title and a["personalized"] is True
        assert title in set(creatives["llm_output"]) | set(creatives.get("title", []))
        log = h.log.read_text()
    assert "serving bundle" in log


def test_serve_creative_model_uri_alone(published, stack, store):
    """The creative model from the same registered bundle, no other argument: it writes a title for
    a catalog ad for a user of a known cluster."""
    from hllm_creator.process import serve_process

    u, ad, _ = _user_with_personalized(stack)
    with serve_process("creative", ["--model-uri", "models:/hllm-creator@candidate", "--threads", "1"],
                       timeout=300, log_dir=store / "logs") as h:
        r = httpx.post(f"{h.url}/v1/models/creative:predict", timeout=120, json={"instances": [
            {"user_history": stack["users"][u], "ad": {"title": stack["titles"][ad]}, "max_new_tokens": 6}]})
        assert r.status_code == 200, r.text
        p = r.json()["predictions"][0]
        assert p["cluster_id"] == stack["assignments"][u] and p["original_title"] == stack["titles"][ad]
        assert "serving bundle" in h.log.read_text()


def test_outputs_without_clusters_never_turn_ready(stack, store, tmp_path):
    """A run dir's outputs sit two levels down: the predictor names what is missing and where it looked."""
    import shutil

    run = tmp_path / "run"
    (run / "match" / "matches").mkdir(parents=True)
    shutil.copy(f"{stack['artifacts']}/matches.parquet", run / "match" / "matches")
    (run / "cluster" / "clusters").mkdir(parents=True)
    shutil.copy(f"{stack['artifacts']}/centroids.npy", run / "cluster" / "clusters")
    from hllm_creator.process import serve_process

    with pytest.raises(RuntimeError) as e:
        with serve_process("predictor", ["--model-dir", stack["model_dir"], "--artifacts", str(run),
                                         "--threads", "1"], timeout=300, log_dir=tmp_path):
            pass
    msg = str(e.value)
    assert "exited with 3" in msg and "inference outputs missing" in msg
    assert "centroids.npy" in msg and "creatives.parquet" in msg and str(run) in msg
    assert "hllm-creator publish RUN_DIR" in msg


def _start(args, log, port):
    f = open(log, "a")
    p = subprocess.Popen([sys.executable, "-m", "hllm_creator.cli", "serve", "predictor", *args, "--host",
                          "127.0.0.1", "--port", str(port)], stdout=f, stderr=subprocess.STDOUT,
                         start_new_session=True, env=os.environ.copy())
    from conftest import wait_http

    wait_http(f"http://127.0.0.1:{port}/v2/health/ready", 300, p, log)
    return p


def test_exposures_and_clicks_survive_sigkill(published, stack, store, tmp_path):
    """Every answered exposure and acknowledged click is on disk after SIGKILL; a restarted server
    appends to a new segment; the readout sees both processes' events."""
    from hllm_creator.process import free_port
    from hllm_creator.serving.experiment import EXPOSURES, FEEDBACK, assign, read_events

    sink = tmp_path / "ab"
    args = ["--model-uri", "models:/hllm-creator@candidate", "--threads", "1", "--experiment", "exp-kill",
            "--exposure-dir", str(sink)]
    users = list(stack["users"])
    ads = stack["ads"][:3]
    answered, clicked = [], []

    def burst(url, us):
        for u in us:
            r = httpx.post(f"{url}/v1/models/predictor:predict", timeout=60, json={"instances": [
                {"user_id": u, "user_history": stack["users"][u], "candidate_ad_ids": ads}]})
            assert r.status_code == 200, r.text
            p = r.json()["predictions"][0]
            assert p["variant"] == assign(u, "exp-kill", 0.5)
            for a in p["ads"]:
                answered.append(a["exposure_id"])
                if p["variant"] == "control":
                    assert a["title"] == a["original_title"] and a["personalized"] is False
            ex = p["ads"][0]["exposure_id"]
            r = httpx.post(f"{url}/v1/models/predictor/feedback", timeout=30,
                           json={"events": [{"exposure_id": ex, "event": "click", "user_id": u}]})
            assert r.status_code == 200 and r.json() == {"accepted": 1}, r.text
            clicked.append(ex)

    port = free_port()
    log = tmp_path / "serve.log"
    p = _start(args, log, port)
    try:
        url = f"http://127.0.0.1:{port}"
        burst(url, users[:12])
        bad = httpx.post(f"{url}/v1/models/predictor/feedback", json={"events": [{"event": "click"}]})
        assert bad.status_code == 400 and "exposure_id" in bad.text
        os.killpg(p.pid, signal.SIGKILL)  # no shutdown hook runs
        p.wait(10)
        p = _start(args, log, port)
        burst(url, users[12:20])
        assert {e["exposure_id"] for e in read_events(sink, EXPOSURES)[0]} == set(answered)
        # SIGKILL in the middle of concurrent traffic: every ANSWERED exposure/click is on disk
        import threading
        import time

        stop = threading.Event()

        def client(k):
            while not stop.is_set():
                try:
                    burst(url, users[20 + k::4][:6])
                except (httpx.HTTPError, AssertionError):
                    return  # the server is gone: unanswered requests owe nothing

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        time.sleep(2.5)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)
        stop.set()
        for t in threads:
            t.join(60)
        p = _start(args, log, port)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)
    ex, torn_e = read_events(sink, EXPOSURES)
    fb, torn_f = read_events(sink, FEEDBACK)
    on_disk = {e["exposure_id"] for e in ex}
    assert set(answered) <= on_disk and len(ex) == len(on_disk)  # nothing answered is lost, nothing doubled
    assert set(clicked) <= {f["exposure_id"] for f in fb}
    assert len(answered) > 20 * len(ads)  # the concurrent phase answered requests before the kill
    assert len(list(sink.glob("exposures-*.jsonl"))) == 3  # one segment per process
    assert {e["model_version"] for e in ex} == {"1"} and all(e["bundle_id"] for e in ex)
    r = _cli("ab-report", str(sink), "--experiment", "exp-kill", "--out", str(tmp_path / "rep"), "--bootstrap", "200")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads((tmp_path / "rep" / "ab_report.json").read_text())
    n = rep["variants"]["personalized"]["exposures"] + rep["variants"]["control"]["exposures"]
    assert n == len(ex) and rep["model_version"] == "1" and (tmp_path / "rep" / "ab_report.png").exists()
    assert rep["torn_lines"] == torn_e + torn_f
