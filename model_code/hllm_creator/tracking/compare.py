"""Compare two pipeline runs side by side: params and metrics of the parent runs and of their
nested step runs (matched by the ``step`` tag). Used by ``hllm-creator compare RUN_A RUN_B``."""

from __future__ import annotations

from typing import Any

from hllm_creator.tracking.mlflow_utils import DEFAULT_EXPERIMENT, _mlflow


def _children(client, run) -> dict[str, Any]:
    kids = client.search_runs([run.info.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'",
                              max_results=1000)
    out: dict[str, Any] = {}
    for k in sorted(kids, key=lambda r: r.info.start_time or 0):
        step = k.data.tags.get("step") or k.info.run_name or k.info.run_id
        name, i = step, 2
        while name in out:  # ParallelFor shards log one run each: embed, embed#2, ...
            name, i = f"{step}#{i}", i + 1
        out[name] = k
    return out


def resolve_run(ref: str):
    """A run id, or a run name in the project's experiment (the newest run of that name)."""
    import os

    from mlflow.exceptions import MlflowException

    client = _mlflow().MlflowClient()
    try:
        return client.get_run(ref)
    except MlflowException:
        pass
    exp = client.get_experiment_by_name(os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT))
    if exp is not None:
        hits = client.search_runs([exp.experiment_id], filter_string=f"attributes.run_name = '{ref}'",
                                  order_by=["attributes.start_time DESC"], max_results=1)
        if hits:
            return hits[0]
    raise ValueError(f"no MLflow run with id or name {ref!r} in the store {_mlflow().get_tracking_uri()}")


def compare_runs(run_a: str, run_b: str, *, only_diff: bool = False):
    """A DataFrame with columns ``scope, kind, key, a, b, diff`` (scope: ``run`` or a step name;
    kind: param | metric | tag). Metrics get ``diff = b - a``."""
    import pandas as pd

    client = _mlflow().MlflowClient()
    ra, rb = resolve_run(run_a), resolve_run(run_b)
    pairs = [("run", ra, rb)]
    ca, cb = _children(client, ra), _children(client, rb)
    for step in sorted(set(ca) | set(cb)):
        pairs.append((step, ca.get(step), cb.get(step)))
    rows = []
    for scope, a, b in pairs:
        for kind in ("param", "metric", "tag"):
            def get(r, kind=kind):
                if r is None:
                    return {}
                d = {"param": r.data.params, "metric": r.data.metrics, "tag": r.data.tags}[kind]
                if kind == "tag":
                    keep = ("git_sha", "config_hash", "dataset_hash", "kfp_run_id", "preset")
                    d = {k: v for k, v in d.items() if k in keep}
                return d
            da, db = get(a), get(b)
            for key in sorted(set(da) | set(db)):
                va, vb = da.get(key), db.get(key)
                diff = None
                if kind == "metric" and va is not None and vb is not None:
                    diff = vb - va
                if only_diff and va == vb:
                    continue
                rows.append({"scope": scope, "kind": kind, "key": key, "a": va, "b": vb, "diff": diff})
    df = pd.DataFrame(rows, columns=["scope", "kind", "key", "a", "b", "diff"])
    df.attrs["run_a"], df.attrs["run_b"] = ra.info.run_id, rb.info.run_id
    return df
