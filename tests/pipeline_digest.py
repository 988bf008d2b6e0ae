"""A digest of a pipeline run's step outputs, to check that a change leaves them unchanged.

``digest(run_dir)`` maps every output file of every task (relative path) to a canonical tree of its
content: parquet tables (rows, columns, dtypes, then each column), JSON without the keys that change
from run to run (times, throughput, paths, run ids, hashes of weights), arrays and safetensors; plots,
logs and Metrics-only files are left out. Floating-point values are kept as numbers (an array of more
than ``MAX_VALUES`` numbers as its summary: mean, mean |x|, rms, min, max and ``N_SAMPLES`` values at
fixed positions); everything else (structure, strings, ints, bools) as is, or as a hash when long.

``compare(expected, actual)`` checks structure exactly (the same files, keys, columns, lengths, strings,
integers, booleans) and floats with a tolerance: ``|a - e| <= ATOL + RTOL * |e|``. The tolerance
absorbs what differs between two correct runs of the same code on machines of this kind (thread
counts change the order of float sums; tests/integration/test_pipeline.py measures the worst case it
sees, see the README "Tests"), not a changed result: a changed title, cluster or selection fails.

Re-record the golden files after an intended change of the step outputs (one command, from the repo root):

    .venv/bin/python tests/pipeline_digest.py --record

It runs the tiny pipeline on the first 40 bundled users with the recorded teacher/judge replies and
rewrites ``tests/integration/data/tiny_pipeline_digest.json`` (``--fresh`` also re-records the replies:
slower, needs the embedded LLM; the replies are keyed by the server's URL, so it runs on the recorded
port 18239). ``python tests/pipeline_digest.py --compare RUN_DIR`` compares a run dir with the golden file.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).resolve().parent / "integration" / "data" / "tiny_pipeline_digest.json"
RECORDED_PORT = 18239
FORMAT = 2
ATOL = 1e-3
RTOL = 1e-3
MAX_VALUES = 512      # longer float arrays are summarised
N_SAMPLES = 32
LONG = 240            # a float-free subtree whose JSON is longer is kept as its hash
# keys whose values change from run to run, not with the step's result
VOLATILE = re.compile(r"(second|_time|time_|elapsed|duration|per_s|throughput|created|timestamp|path|_dir$|"
                      r"^dir$|uri|run_id|started|finished|host|pid|cache_hits|workdir|^out$|^data$|^model_dir$|"
                      r"^matches$|^clusters$|^creatives$|^train_set$|^input$|^assignments$|tokens_per|users_per|"
                      r"titles_per|_cache$|^cache|^llm_|local_files_only|_s$|bundle_mb|bundle_id|sha256|"
                      r"^hash$|_hash$)", re.I)
SKIP_SUFFIXES = {".png", ".svg", ".pdf", ".log", ".sqlite", ".txt", ".lock"}
# KFP's own record of the task (paths, cache stats); the bundle's manifest (hashes and sizes of files
# digested themselves, with their timings)
SKIP_NAMES = {"executor_output.json", "bundle.json"}
SKIP_DIRS = (".checkpoints",)  # resume state of train, keyed by the output path


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _array(a) -> Any:
    import numpy as np

    a = np.asarray(a)
    if a.dtype.kind in "fc":
        a = a.astype("float64")
        if a.size <= MAX_VALUES:
            return {"__array__": list(a.shape), "values": [_num(v) for v in a.ravel().tolist()]}
        flat = a.ravel()
        idx = np.linspace(0, flat.size - 1, N_SAMPLES).astype(int)
        finite = flat[np.isfinite(flat)]
        return {"__array__": list(a.shape),
                "summary": {"mean": float(finite.mean()), "abs_mean": float(np.abs(finite).mean()),
                            "rms": float(np.sqrt((finite ** 2).mean())), "min": float(finite.min()),
                            "max": float(finite.max()), "nonfinite": int(flat.size - finite.size),
                            "sample": [_num(v) for v in flat[idx].tolist()]}}
    return {"__array__": list(a.shape), "dtype": a.dtype.str, "values": _norm(a.tolist())}


def _num(v: float) -> Any:
    return v if math.isfinite(v) else str(v)


def _norm(x: Any) -> Any:
    """A JSON tree: volatile keys dropped, paths masked, numpy values as Python ones, floats kept."""
    import numpy as np

    if isinstance(x, str):
        return "<path>" if (x.startswith("/") or "://" in x) else x
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return _num(float(x))
    if isinstance(x, np.ndarray):
        return _array(x) if x.dtype.kind in "fc" else _norm(x.tolist())
    if isinstance(x, dict):
        return {str(k): _norm(v) for k, v in sorted(x.items(), key=lambda kv: str(kv[0]))
                if not VOLATILE.search(str(k))}
    if isinstance(x, (list, tuple)):
        if len(x) > MAX_VALUES and all(isinstance(v, (float, np.floating)) for v in x):
            return _array(np.asarray(x, dtype="float64"))
        return [_norm(v) for v in x]
    return x


def _has_float(t: Any) -> bool:
    if isinstance(t, float):
        return True
    if isinstance(t, dict):
        return "__array__" in t and ("summary" in t or any(isinstance(v, float) for v in t.get("values", []))) \
            or any(_has_float(v) for v in t.values())
    if isinstance(t, list):
        return any(_has_float(v) for v in t)
    return False


def _compact(t: Any) -> Any:
    """Long float-free subtrees as their hash (compared exactly); subtrees with floats kept."""
    if not _has_float(t):
        return {"__sha__": _sha(t)} if len(json.dumps(t, default=str)) > LONG else t
    if isinstance(t, dict) and "__array__" not in t:
        return {k: _compact(v) for k, v in t.items()}
    if isinstance(t, list):
        return [_compact(v) for v in t]
    return t


def file_digest(f: Path) -> Any | None:
    import numpy as np
    import pandas as pd

    if f.suffix in SKIP_SUFFIXES or f.name in SKIP_NAMES or any(p.endswith(SKIP_DIRS) for p in f.parts):
        return None
    if f.suffix == ".parquet":
        df = pd.read_parquet(f)
        cols = [c for c in sorted(df.columns) if not VOLATILE.search(c)]
        out = {"rows": len(df), "columns": cols, "dtypes": {c: str(df[c].dtype) for c in cols}}
        for c in cols:
            v = df[c]
            if v.dtype.kind in "fc":
                out[f"col:{c}"] = _array(v.to_numpy())
            elif len(v) and all(isinstance(e, (np.ndarray, list)) for e in v) and \
                    np.asarray(v.iloc[0]).dtype.kind in "fc":  # a vector per row (embeddings)
                out[f"col:{c}"] = _array(np.stack([np.asarray(e, dtype="float64") for e in v]))
            else:
                out[f"col:{c}"] = _norm(v.tolist())
        return _compact(out)
    if f.suffix == ".npy":
        return _compact(_array(np.load(f)))
    if f.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return _compact({k: _array(v) for k, v in sorted(load_file(str(f)).items())})
    if f.suffix == ".json" or not f.suffix:
        try:
            obj = json.loads(f.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {"__sha__": hashlib.sha256(f.read_bytes()).hexdigest()[:16]}
        return _compact(_norm(obj))
    return {"__sha__": hashlib.sha256(f.read_bytes()).hexdigest()[:16]}


def digest(run_dir: str | Path) -> dict[str, Any]:
    """{task/output/file: canonical tree} for every output file under a local run dir."""
    run_dir = Path(run_dir)
    out = {}
    for f in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        rel = re.sub(r"^for-loop-\d+-", "for-loop-", f.relative_to(run_dir).as_posix())  # the loop's number is the DAG's
        d = file_digest(f)
        if d is not None:
            out[rel] = d
    return out


class Deviation:
    """The largest float difference seen by a comparison (its share of the tolerance, where)."""

    def __init__(self) -> None:
        self.ratio, self.abs, self.where = 0.0, 0.0, ""

    def see(self, e: float, a: float, where: str) -> bool:
        d = abs(a - e)
        ratio = d / (ATOL + RTOL * abs(e))
        if ratio > self.ratio:
            self.ratio, self.abs, self.where = ratio, d, where
        return ratio <= 1.0


def _cmp(e: Any, a: Any, where: str, out: list[str], dev: Deviation) -> None:
    if len(out) > 50:
        return
    if isinstance(e, float) and isinstance(a, (int, float)) and not isinstance(a, bool):
        if not dev.see(e, float(a), where):
            out.append(f"{where}: {a!r} != {e!r} (tolerance {ATOL} + {RTOL}*|expected|)")
    elif isinstance(e, dict) and isinstance(a, dict):
        if set(e) != set(a):
            out.append(f"{where}: keys {sorted(set(a) - set(e))} new, {sorted(set(e) - set(a))} missing")
        for k in sorted(set(e) & set(a)):
            _cmp(e[k], a[k], f"{where}.{k}" if where else k, out, dev)
    elif isinstance(e, list) and isinstance(a, list):
        if len(e) != len(a):
            out.append(f"{where}: length {len(a)} != {len(e)}")
        else:
            for i, (x, y) in enumerate(zip(e, a)):
                _cmp(x, y, f"{where}[{i}]", out, dev)
    elif e != a or type(e) is not type(a):
        out.append(f"{where}: {str(a)[:160]!r} != {str(e)[:160]!r}")


def compare(expected: dict[str, Any], actual: dict[str, Any], dev: Deviation | None = None) -> list[str]:
    """Differences between two digests (empty = the same, floats within the tolerance)."""
    dev = dev if dev is not None else Deviation()
    lines = []
    if expected.get("__format__", FORMAT) != FORMAT:
        return [f"golden digest has format {expected.get('__format__')}, this code writes {FORMAT}: "
                f"re-record it (python tests/pipeline_digest.py --record)"]
    for k in sorted((set(expected) | set(actual)) - {"__format__"}):
        if k not in actual:
            lines.append(f"missing: {k}")
        elif k not in expected:
            lines.append(f"new: {k}")
        else:
            found: list[str] = []
            _cmp(expected[k], actual[k], k, found, dev)
            lines += [f"changed: {x}" for x in found]
    return lines


diff = compare  # the old name


def record_run(work: Path, *, fresh: bool = False) -> Path:
    """Run the tiny pipeline as the test does (first 40 bundled users, recorded replies); its run dir."""
    import os
    import shutil
    import sys

    os.environ["HLLM_WORKDIR"] = str(work / ".hllm")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / '.hllm' / 'mlflow.db'}"
    os.environ["HLLM_LLM_PORT"] = str(RECORDED_PORT)
    os.environ.pop("HLLM_PARENT_RUN_ID", None)
    replies = GOLDEN.with_suffix(".replies.sqlite")
    if replies.exists() and not fresh:  # replay the recorded replies
        (work / ".hllm" / "llm_cache").mkdir(parents=True, exist_ok=True)
        shutil.copy(replies, work / ".hllm" / "llm_cache" / "replies.sqlite")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from helpers import small_dataset

    from hllm_creator.data.prepare import prepare_bundled
    from hllm_creator_kfp.pipelines.local_runner import run_local
    from hllm_creator_kfp.pipelines.presets import get_preset

    full = prepare_bundled(work / "bundled")
    data = small_dataset(work / "data", n_users=40, source=full.path).path
    res = run_local(get_preset("tiny"), pipeline_root=work / "root", data_dir=data, run_name="digest")
    if fresh or not replies.exists():
        shutil.copy(work / ".hllm" / "llm_cache" / "replies.sqlite", replies)
    return res.run_dir


def _stored(t: Any) -> Any:
    """Floats kept to 7 significant digits in the golden file (far below the tolerance)."""
    if isinstance(t, float):
        return float(f"{t:.7g}")
    if isinstance(t, dict):
        return {k: _stored(v) for k, v in t.items()}
    if isinstance(t, list):
        return [_stored(v) for v in t]
    return t


def dump(d: dict[str, Any]) -> str:
    """One line per file (a re-record's diff names the files that changed)."""
    d = {"__format__": FORMAT, **d}
    return "{\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(_stored(v), sort_keys=True)}" for k, v in sorted(d.items())) + "\n}\n"


def write_golden(run_dir: str | Path, dst: Path = GOLDEN) -> None:
    dst.write_text(dump(digest(run_dir)))


if __name__ == "__main__":
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--record", action="store_true", help=f"run the tiny pipeline and rewrite {GOLDEN.name}")
    g.add_argument("--compare", metavar="RUN_DIR", help="compare a run dir with the golden digest")
    ap.add_argument("--fresh", action="store_true", help="with --record: re-record the LLM replies too")
    ap.add_argument("--out", type=Path, default=GOLDEN, help="with --record: where to write (default the golden file)")
    args = ap.parse_args()
    if args.compare:
        dev = Deviation()
        changed = compare(json.loads(GOLDEN.read_text()), digest(args.compare), dev)
        print("\n".join(changed) or "the same", f"(largest float difference {dev.abs:.3g} at {dev.where}, "
              f"{dev.ratio:.2f} of the tolerance)")
        raise SystemExit(1 if changed else 0)
    run_dir = record_run(Path(tempfile.mkdtemp(prefix="hllm-digest-")), fresh=args.fresh)
    write_golden(run_dir, args.out)
    print(args.out, run_dir)
