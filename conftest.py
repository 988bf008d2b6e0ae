"""Shared fixtures: isolated tracking store, the bundled dataset, real servers on 127.0.0.1.

Real parts only: ``mlflow_server`` starts a real ``mlflow server``; ``llm_server`` starts the
project's real KServe OpenAI-compatible server with the real SmolLM2.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from hllm_creator.process import free_port, stop_process

REPO = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "tests"))  # test helpers (tests/helpers.py): `from helpers import ...`
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # servers and tests share 2 cores: no spin-waiting

# Tests never touch the user's own stores (the demo's .hllm/: its MLflow db, caches, pipeline root).
# The per-test fixture below isolates each test; this covers what runs outside a test function
# (module and session fixtures, collection): one session-wide temp work dir and tracking store.
_SESSION_WORK = Path(tempfile.mkdtemp(prefix="hllm-tests-"))
os.environ["HLLM_WORKDIR"] = str(_SESSION_WORK / ".hllm")
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_SESSION_WORK / '.hllm' / 'mlflow.db'}"
os.environ.pop("HLLM_PARENT_RUN_ID", None)
USER_STORES = [REPO / ".hllm", Path.cwd() / ".hllm"]
# The model cache ($HLLM_CACHE, else ~/.cache/hllm-creator) holds the pulled models (read-only for the
# tests) AND the item-embedding caches keyed by model hash, which embed reuses: a tiny model trained
# twice with the same seed has the same hash, so items encoded by an earlier test (or an earlier run on
# this machine) in other batches were reused and the pipeline's embeddings moved by ~1e-3 with the test
# order (issue 25). Each test gets its own cache dir; only `models/` is shared (a link to the user's).
_USER_CACHE = Path(os.environ.get("HLLM_CACHE", Path.home() / ".cache" / "hllm-creator"))


def _private_cache(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (_USER_CACHE / "models").mkdir(parents=True, exist_ok=True)
    if not (root / "models").exists():
        (root / "models").symlink_to(_USER_CACHE / "models", target_is_directory=True)
    return root


os.environ["HLLM_CACHE"] = str(_private_cache(_SESSION_WORK / "cache"))


def _snapshot(roots) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime_ns) of every file under the user's .hllm dirs."""
    out = {}
    for root in dict.fromkeys(r.resolve() for r in roots):
        if root.is_dir():
            for f in root.rglob("*"):
                try:
                    st = f.lstat()
                except OSError:
                    continue
                out[str(f)] = (st.st_size, st.st_mtime_ns)
    return out


def pytest_sessionstart(session):
    session.config._hllm_user_stores = _snapshot(USER_STORES)


def pytest_sessionfinish(session, exitstatus):
    """Fail the run when anything under the user's .hllm/ changed while the tests ran."""
    before = getattr(session.config, "_hllm_user_stores", None)
    if before is None:
        return
    after = _snapshot(USER_STORES)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    if changed:
        msg = (f"FAILED: the tests changed {len(changed)} file(s) under the user's .hllm/ "
               f"(tests must use their own stores): {changed[:10]}")
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        reporter.write_line(msg, red=True) if reporter else print(msg, file=sys.stderr)
        session.exitstatus = 1
    shutil.rmtree(_SESSION_WORK, ignore_errors=True)




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


# ---- what a test leaves behind -------------------------------------------------------------------
# A test (or a library call inside it) that changes the process's environment, working directory or
# torch's global settings changes what the tests after it compute: the KFP steps of the pipeline test
# inherit os.environ, in-process steps inherit torch's thread count. Each test and each test module
# gets them back as they were; what was restored is listed at the end of the session (to fix at the
# source), never silently carried into the next test.
_LEAKS: list[tuple[str, list[str]]] = []


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}  # pytest's own


def _process_state() -> dict:
    state = {"env": _env(), "cwd": os.getcwd()}
    torch = sys.modules.get("torch")
    if torch is not None:
        state["torch"] = {"num_threads": torch.get_num_threads(), "grad": torch.is_grad_enabled(),
                          "deterministic": torch.are_deterministic_algorithms_enabled(),
                          "default_dtype": torch.get_default_dtype()}
    return state


def _restore_process_state(before: dict, who: str) -> None:
    what = []
    env = _env()
    if env != before["env"]:
        keys = sorted(k for k in set(env) | set(before["env"]) if env.get(k) != before["env"].get(k))
        what.append("env " + ", ".join(keys))
        for k in keys:
            if k in before["env"]:
                os.environ[k] = before["env"][k]
            else:
                os.environ.pop(k, None)
    if os.getcwd() != before["cwd"]:
        what.append(f"cwd {os.getcwd()}")
        os.chdir(before["cwd"])
    torch = sys.modules.get("torch")
    if torch is not None and "torch" in before:
        t = before["torch"]
        if torch.get_num_threads() != t["num_threads"]:
            what.append(f"torch.num_threads {torch.get_num_threads()} (was {t['num_threads']})")
            torch.set_num_threads(t["num_threads"])
        if torch.is_grad_enabled() != t["grad"]:
            what.append("torch grad mode")
            torch.set_grad_enabled(t["grad"])
        if torch.are_deterministic_algorithms_enabled() != t["deterministic"]:
            what.append("torch deterministic algorithms")
            torch.use_deterministic_algorithms(t["deterministic"])
        if torch.get_default_dtype() != t["default_dtype"]:
            what.append("torch default dtype")
            torch.set_default_dtype(t["default_dtype"])
    if what:
        _LEAKS.append((who, what))


@pytest.fixture(autouse=True, scope="module")
def _module_process_state(request):
    """Module-scoped fixtures (servers, registries) set things for their module; undone after it."""
    before = _process_state()
    yield
    _restore_process_state(before, f"module {request.node.nodeid}")


@pytest.fixture(autouse=True)
def _test_process_state(request):
    before = _process_state()
    yield
    _restore_process_state(before, request.node.nodeid)


def pytest_terminal_summary(terminalreporter):
    if _LEAKS:
        terminalreporter.write_sep("-", f"process state restored after {len(_LEAKS)} test(s)/module(s)")
        for who, what in _LEAKS:
            terminalreporter.write_line(f"{who}: {'; '.join(what)}")


@pytest.fixture(autouse=True)
def _isolated_tracking(tmp_path, tmp_path_factory, monkeypatch):
    """Every test gets its own embedded sqlite MLflow store and work dir unless it asks for a server,
    and its own cache dir (beside its tmp_path, not in it: tests that list their tmp_path see only
    what they wrote)."""
    monkeypatch.setenv("HLLM_WORKDIR", str(tmp_path / ".hllm"))
    monkeypatch.setenv("HLLM_CACHE", str(_private_cache(tmp_path_factory.mktemp("hllm-cache"))))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / '.hllm' / 'mlflow.db'}")
    monkeypatch.delenv("HLLM_PARENT_RUN_ID", raising=False)
    # mlflow.set_tracking_uri() (the library's tracking helpers call it) is a module global that wins over
    # the env var: an earlier test's store, deleted with its tmp_path, was still what a bare
    # mlflow.MlflowClient() wrote to ("attempt to write a readonly database", random order 4711)
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    yield
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        mlflow.set_tracking_uri(None)  # back to the env var (monkeypatch restores it after this)
        fluent = sys.modules.get("mlflow.tracking.fluent")  # set_experiment's choice: of that store only
        if fluent is not None and hasattr(fluent, "_active_experiment_id"):
            fluent._active_experiment_id = None


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


@pytest.fixture(scope="session")
def serving_stack(tmp_path_factory, bundled_dataset):
    """A tiny real serving stack (``helpers.tiny_serving_stack``: untrained tiny model + real infer
    outputs on the bundled data), built once per session for the serving tests."""
    from helpers import tiny_serving_stack

    return tiny_serving_stack(tmp_path_factory.mktemp("serving_stack"), data_dir=bundled_dataset.path)
