"""Where things live on disk: caches (models) and the working dir (embedded MLflow store, runs)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_DATA = REPO_ROOT / "data" / "amazon_scientific"


def cache_dir() -> Path:
    """Model cache: $HLLM_CACHE, else ~/.cache/hllm-creator."""
    p = Path(os.environ.get("HLLM_CACHE", Path.home() / ".cache" / "hllm-creator"))
    p.mkdir(parents=True, exist_ok=True)
    return p


def work_dir() -> Path:
    """Working dir for embedded state (sqlite MLflow store, run outputs): $HLLM_WORKDIR, else ./.hllm."""
    p = Path(os.environ.get("HLLM_WORKDIR", Path.cwd() / ".hllm")).resolve()
    p.mkdir(parents=True, exist_ok=True)
    return p
