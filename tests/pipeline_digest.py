"""A digest of a pipeline run's step outputs, to check that a refactor leaves them unchanged.

``digest(run_dir)`` maps every output file of every task (relative path) to a hash of its content
in a canonical form: parquet rows with floats rounded, JSON without the keys that change from run
to run (times, throughput, paths, run ids), arrays rounded; plots, logs and Metrics-only files are
left out. ``HLLM_LLM_PORT=18239 python tests/pipeline_digest.py OUT.json`` runs the tiny pipeline on the
first 40 bundled users and writes its digest plus the LLM reply cache it used (the golden files of
``tests/integration/test_pipeline.py``; the replies are keyed by the server's URL, hence the port).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

DECIMALS = 4
# keys whose values change from run to run, not with the step's result
VOLATILE = re.compile(r"(second|_time|time_|elapsed|duration|per_s|throughput|created|timestamp|path|_dir$|"
                      r"^dir$|uri|run_id|started|finished|host|pid|cache_hits|workdir|^out$|^data$|^model_dir$|"
                      r"^matches$|^clusters$|^creatives$|^train_set$|^input$|^assignments$|tokens_per|users_per|"
                      r"titles_per|_cache$|^cache|^llm_|local_files_only|_s$|bundle_mb|bundle_id)", re.I)
SKIP_SUFFIXES = {".png", ".svg", ".pdf", ".log", ".sqlite", ".txt", ".lock"}
# KFP's own record of the task (paths, cache stats); the bundle's manifest (hashes and sizes of files
# digested themselves, with their timings)
SKIP_NAMES = {"executor_output.json", "bundle.json"}
SKIP_DIRS = (".checkpoints",)  # resume state of train, keyed by the output path


def _round(x: Any) -> Any:
    import numpy as np

    if isinstance(x, str) and (x.startswith("/") or "://" in x):
        return "<path>"
    if isinstance(x, float):
        return round(x, DECIMALS) if x == x else "nan"
    if isinstance(x, (np.floating,)):
        return _round(float(x))
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.ndarray):
        return [_round(v) for v in x.tolist()]
    if isinstance(x, dict):
        return {str(k): _round(v) for k, v in sorted(x.items(), key=lambda kv: str(kv[0]))
                if not VOLATILE.search(str(k))}
    if isinstance(x, (list, tuple)):
        return [_round(v) for v in x]
    return x


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(f: Path) -> dict[str, Any] | None:
    import numpy as np
    import pandas as pd

    if f.suffix in SKIP_SUFFIXES or f.name in SKIP_NAMES or any(p.endswith(SKIP_DIRS) for p in f.parts):
        return None
    if f.suffix == ".parquet":
        df = pd.read_parquet(f)
        df = df[[c for c in sorted(df.columns) if not VOLATILE.search(c)]]
        rows = [_round(r) for r in df.to_dict("records")]
        return {"rows": len(df), "columns": list(df.columns), "sha": _sha(rows)}
    if f.suffix == ".npy":
        a = np.load(f)
        return {"shape": list(a.shape), "sha": _sha(_round(np.round(a.astype("float64"), DECIMALS)))}
    if f.suffix == ".json" or not f.suffix:
        try:
            obj = json.loads(f.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {"sha": hashlib.sha256(f.read_bytes()).hexdigest()[:16]}
        return {"sha": _sha(_round(obj))}
    if f.suffix == ".safetensors":
        from safetensors.numpy import load_file

        t = load_file(str(f))
        return {"tensors": len(t), "sha": _sha({k: _sha(_round(np.round(v.astype("float64"), DECIMALS)))
                                                 for k, v in sorted(t.items())})}
    return {"sha": hashlib.sha256(f.read_bytes()).hexdigest()[:16]}


def digest(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """{task/output/file: digest} for every output file under a local run dir."""
    run_dir = Path(run_dir)
    out = {}
    for f in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        rel = re.sub(r"^for-loop-\d+-", "for-loop-", f.relative_to(run_dir).as_posix())  # the loop's number is the DAG's
        d = file_digest(f)
        if d is not None:
            out[rel] = d
    return out


def diff(expected: dict[str, dict], actual: dict[str, dict]) -> list[str]:
    """Human-readable differences between two digests (empty = the same)."""
    lines = []
    for k in sorted(set(expected) | set(actual)):
        if k not in actual:
            lines.append(f"missing: {k}")
        elif k not in expected:
            lines.append(f"new: {k}")
        elif expected[k] != actual[k]:
            lines.append(f"changed: {k}: {expected[k]} -> {actual[k]}")
    return lines


if __name__ == "__main__":  # the golden files (run once, on the code whose outputs are the reference)
    import os
    import shutil
    import sys
    import tempfile

    dst = Path(sys.argv[1]).resolve()
    work = Path(tempfile.mkdtemp(prefix="hllm-digest-"))
    os.environ["HLLM_WORKDIR"] = str(work / ".hllm")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / '.hllm' / 'mlflow.db'}"
    os.environ.pop("HLLM_PARENT_RUN_ID", None)
    replies = dst.with_suffix(".replies.sqlite")
    if replies.exists() and "--fresh" not in sys.argv:  # replay the recorded replies
        (work / ".hllm" / "llm_cache").mkdir(parents=True, exist_ok=True)
        shutil.copy(replies, work / ".hllm" / "llm_cache" / "replies.sqlite")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        from helpers import small_dataset  # noqa: E402
    except ImportError:  # before the helpers moved into tests/
        from hllm_creator.infer.testing import small_dataset  # noqa: E402

    from hllm_creator.data.prepare import prepare_bundled  # noqa: E402
    from pipelines.local_runner import run_local  # noqa: E402
    from pipelines.presets import get_preset  # noqa: E402

    full = prepare_bundled(work / "bundled")
    data = small_dataset(work / "data", n_users=40, source=full.path).path
    res = run_local(get_preset("tiny"), pipeline_root=work / "root", data_dir=data, run_name="digest")
    dst.write_text(json.dumps(digest(res.run_dir), indent=1, sort_keys=True) + "\n")
    if not replies.exists():
        shutil.copy(work / ".hllm" / "llm_cache" / "replies.sqlite", replies)
    print(dst, res.run_dir)
