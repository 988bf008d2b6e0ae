"""Compile the pipeline to KFP IR YAML and submit it to a KFP backend (``kfp.Client``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hllm_creator_kfp.pipelines.presets import GPU_STEPS, Preset

log = logging.getLogger(__name__)


def compile_pipeline(preset: Preset, out: str | Path, *, parent_run_id: str | None = None) -> Path:
    """Write the pipeline spec YAML atomically; returns its path."""
    from kfp import compiler

    from hllm_creator.io import atomic_path
    from hllm_creator_kfp.pipelines.hllm_pipeline import build_pipeline

    out = Path(out)
    if out.suffix not in (".yaml", ".yml", ".json"):
        raise ValueError(f"--out must end in .yaml/.yml/.json (got {out})")
    fn = build_pipeline(preset, local=False, parent_run_id=parent_run_id)
    with atomic_path(out.with_suffix(out.suffix)) as tmp:
        tmp_y = tmp.with_name(tmp.name + out.suffix)  # kfp picks the format by suffix
        compiler.Compiler().compile(pipeline_func=fn, package_path=str(tmp_y))
        os.replace(tmp_y, tmp)
    return out


def gpu_requests(spec: dict) -> dict[str, dict[str, Any]]:
    """{executor label: {"type": ..., "count": ...}} for every executor that asks for an accelerator."""
    found = {}
    for label, ex in spec.get("deploymentSpec", {}).get("executors", {}).items():
        acc = (ex.get("container", {}).get("resources") or {}).get("accelerator") or {}
        count = acc.get("count") or acc.get("resourceCount")
        typ = acc.get("type") or acc.get("resourceType")
        if count:
            found[label] = {"type": typ, "count": int(count)}
    return found


def check_compiled(path: str | Path) -> dict[str, Any]:
    """Load the YAML back with kfp's own loader and report executors, GPU requests and the
    kubernetes platform settings (secrets as env, node selectors, tolerations, PVC mounts)."""
    import yaml
    from kfp import components

    comp = components.load_component_from_file(str(path))  # raises on a malformed spec
    docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    spec = docs[0]
    platform = next((d for d in docs[1:] if "platforms" in d), {}).get("platforms", {})
    k8s = platform.get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})
    gpus = gpu_requests(spec)
    steps_with_gpu = sorted({s for s in GPU_STEPS for label in gpus if label.startswith(f"exec-{s.replace('_', '-')}")})
    return {"name": comp.name, "executors": sorted(spec["deploymentSpec"]["executors"]), "gpu": gpus,
            "gpu_steps": steps_with_gpu, "kubernetes": k8s, "spec": spec}


def submit(preset: Preset, *, host: str, experiment: str, run_name: str, namespace: str | None = None,
           dataset_uri: str = "", llm_base_url: str = "", existing_token: str | None = None,
           create_parent_run: bool = True, work_dir: str | Path | None = None) -> dict[str, str]:
    """Create the MLflow parent run, compile with its id baked into every task's env, submit.

    The parent run is a container: it is closed at once and the steps nest under it by the
    ``mlflow.parentRunId`` tag (no need for it to stay active); it is tagged with the KFP run id
    once the backend answers. ``MLFLOW_TRACKING_URI`` here must be the same server the cluster's
    steps use (the ``hllm-creator-mlflow`` secret: URI and the pipeline user's credentials), e.g. a port-forward of the in-cluster MLflow.
    """
    import kfp

    from hllm_creator import tracking

    parent_id = None
    if create_parent_run:
        with tracking.parent_run(run_name, tags={"preset": preset.name, "config_hash": preset.config_hash(),
                                                 "runner": "kfp", "kfp_host": host}) as parent:
            parent_id = parent.info.run_id
            tracking.log_config(preset)
    out = Path(work_dir or ".") / f"{run_name}.pipeline.yaml"
    compile_pipeline(preset, out, parent_run_id=parent_id)
    client = kfp.Client(host=host, namespace=namespace, existing_token=existing_token)
    res = client.create_run_from_pipeline_package(
        # the parent id is compiled into every task's env (HLLM_PARENT_RUN_ID), not passed as an
        # argument: an argument that changes per run would defeat caching
        str(out), arguments={k: v for k, v in {"dataset_uri": dataset_uri, "llm_base_url": llm_base_url}.items()
                             if v},
        run_name=run_name, experiment_name=experiment, namespace=namespace, enable_caching=True)
    if parent_id:
        import mlflow

        mlflow.set_tracking_uri(tracking.resolve_tracking_uri())
        mlflow.MlflowClient().set_tag(parent_id, "kfp_run_id", res.run_id)
    return {"kfp_run_id": res.run_id, "mlflow_parent_run_id": parent_id or "", "package": str(out),
            "url": f"{host.rstrip('/')}/#/runs/details/{res.run_id}"}
