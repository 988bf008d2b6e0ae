"""issue 28: the MLflow UI URLs the CLI prints open the runs table and the model registry, checked in
a real headless browser against a real ``mlflow server`` (``mlflow_ui_check.py``, which also saves the
screenshot kept in docs/img/mlflow_ui_runs.png when run by hand)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from mlflow_ui_check import BROWSERS, find_browser  # noqa: E402


@pytest.mark.skipif(find_browser() is None,
                    reason=f"no headless browser ({' / '.join(BROWSERS)}) on PATH; Debian: apt-get install chromium")
def test_printed_urls_open_runs_table_and_model_registry(tmp_path):
    shot = tmp_path / "runs.png"
    r = subprocess.run([sys.executable, str(HERE / "mlflow_ui_check.py"), "--screenshot", str(shot)],
                       capture_output=True, text=True, timeout=900)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(("ok", "FAIL"))]
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert len(lines) == 4 and all(ln.startswith("ok") for ln in lines), lines
    assert shot.stat().st_size > 10_000  # a real rendering, not an empty page
