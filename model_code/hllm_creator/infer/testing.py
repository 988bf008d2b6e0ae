"""Helpers for tests of the inference workflow (unit, integration, component tests)."""

from __future__ import annotations

import tempfile
from pathlib import Path


def small_dataset(out: str | Path, n_users: int = 60, *, source: str | Path | None = None):
    """A real slice of the bundled data: the first ``n_users`` users (sorted ids), their clicks, their
    items, prepared into a dataset dir at ``out`` (same contract and checks as the full dataset)."""
    from hllm_creator.data import load_dataset
    from hllm_creator.data.prepare import prepare, prepare_bundled

    if source is None:
        import shutil

        tmp = Path(tempfile.mkdtemp(prefix="hllm-bundled-"))
        try:
            full = prepare_bundled(tmp / "amazon_scientific")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        full = load_dataset(source)
    users = sorted(full.interactions["user_id"].unique())[:n_users]
    inter = full.interactions[full.interactions["user_id"].isin(set(users))]
    items = full.items[full.items["item_id"].isin(set(inter["item_id"]))]
    return prepare(items.reset_index(drop=True), inter.reset_index(drop=True), out, name=f"bundled-{n_users}u",
                   source=f"first {n_users} users of the bundled dataset", license="see bundled dataset")


def tiny_workflow(root: str | Path, n_users: int = 60):
    """(dataset dir, tiny untrained model dir) under ``root`` for end-to-end tests."""
    from hllm_creator.model.testing import tiny_model_dir

    root = Path(root)
    data = root / "data"
    small_dataset(data, n_users)
    model = tiny_model_dir(root / "model")
    return data, Path(model)


_SHARED: dict = {}


def shared_tiny_workflow(n_users: int = 60):
    """``tiny_workflow`` built once per process (a temp dir), for test modules that cannot share a
    pytest fixture (component tests live outside tests/). Read-only: do not write into it."""
    if n_users not in _SHARED:
        import atexit
        import shutil

        root = Path(tempfile.mkdtemp(prefix="hllm-infer-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _SHARED[n_users] = tiny_workflow(root, n_users)
    return _SHARED[n_users]


def isolate_tracking(monkeypatch, tmp_path) -> str:
    """Point MLflow (and the embedded work dir) at a fresh sqlite store under ``tmp_path``."""
    monkeypatch.setenv("HLLM_WORKDIR", str(tmp_path / ".hllm"))
    uri = f"sqlite:///{tmp_path / '.hllm' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("HLLM_PARENT_RUN_ID", raising=False)
    return uri


def init_tracking_store() -> None:
    """Create the sqlite store's tables now, so parallel subprocess tasks do not race to migrate it."""
    from hllm_creator.tracking import ensure_experiment

    ensure_experiment()
