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
        tmp = Path(tempfile.mkdtemp(prefix="hllm-bundled-"))
        full = prepare_bundled(tmp / "amazon_scientific")
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
