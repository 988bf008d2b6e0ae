"""Shared fixtures: isolated tracking store, the bundled dataset, real servers on 127.0.0.1.

Real parts only: ``mlflow_server`` starts a real ``mlflow server``; ``llm_server`` starts the
project's real KServe OpenAI-compatible server with the real SmolLM2.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from hllm_creator.serving.process import free_port, stop_process

REPO = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "tests"))  # test helpers (tests/helpers.py): `from helpers import ...`
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # servers and tests share 2 cores: no spin-waiting




def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()[-3000:] if log else ''}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout}s: {log.read_text()[-3000:] if log else ''}")


def start_server(cmd: list[str], ready_url: str, log: Path, timeout: float = 120, env=None) -> subprocess.Popen:
    f = open(log, "w")
    proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env or os.environ.copy(),
                            start_new_session=True)
    try:
        wait_http(ready_url, timeout, proc, log)
    except Exception:
        stop_server(proc)
        raise
    return proc


def stop_server(proc: subprocess.Popen) -> None:
    stop_process(proc, grace_s=15)


@pytest.fixture(autouse=True)
def _isolated_tracking(tmp_path, monkeypatch):
    """Every test gets its own embedded sqlite MLflow store and work dir unless it asks for a server."""
    monkeypatch.setenv("HLLM_WORKDIR", str(tmp_path / ".hllm"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / '.hllm' / 'mlflow.db'}")
    monkeypatch.delenv("HLLM_PARENT_RUN_ID", raising=False)


@pytest.fixture(scope="session")
def bundled_dataset(tmp_path_factory):
    """The vendored Amazon Industrial & Scientific data prepared into a dataset dir (once)."""
    from hllm_creator.data.prepare import prepare_bundled

    return prepare_bundled(tmp_path_factory.mktemp("data") / "amazon_scientific")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` on 127.0.0.1 (sqlite backend, local artifacts). Yields its URI."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    env = os.environ.copy()
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--default-artifact-root", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    proc = start_server(cmd, f"http://127.0.0.1:{port}/health", root / "server.log", timeout=180, env=env)
    yield f"http://127.0.0.1:{port}"
    stop_server(proc)


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory):
    """The project's OpenAI-compatible KServe server with the real SmolLM2, on 127.0.0.1.

    Yields ``(base_url, model_name)``; ``base_url`` ends in ``/openai/v1`` for the openai client.
    """
    if shutil.which("hllm-creator", path=str(BIN)) is None:
        pytest.fail("hllm-creator console script not installed in this venv")
    root = tmp_path_factory.mktemp("llm")
    port = free_port()
    cmd = [str(BIN / "hllm-creator"), "serve", "llm", "--model", "smollm2-135m-instruct",
           "--host", "127.0.0.1", "--port", str(port)]
    proc = start_server(cmd, f"http://127.0.0.1:{port}/v2/health/ready", root / "server.log", timeout=180)
    yield f"http://127.0.0.1:{port}/openai/v1", "smollm2-135m-instruct"
    stop_server(proc)


@pytest.fixture(scope="session")
def infer_workflow(tmp_path_factory):
    """(small dataset dir: first 60 bundled users, tiny untrained model dir), built once (infer tests)."""
    from helpers import shared_tiny_workflow

    return shared_tiny_workflow(60)
