"""Multi-node training through Kubeflow Trainer v2: build a ``TrainJob``, create it, follow it.

At scale the pipeline's ``train`` step does not train: it launches ``hllm-creator train`` on
N nodes x G GPUs as a Kubeflow Trainer v2 ``TrainJob`` (runtime ``torch-distributed``: the
controller starts one pod per node and sets ``PET_NNODES``, ``PET_NPROC_PER_NODE``,
``PET_NODE_RANK``, ``PET_MASTER_ADDR``/``PORT``, which ``torchrun`` reads), waits for it,
streams its status into the step's log and MLflow, and fails with the job's own reason.

Data travels on the shared ReadWriteMany volume (``manifests/base/data-pvc.yaml``) that both the
launcher's pod and the TrainJob's pods mount at the same path: the launcher stages the dataset
(and the teacher's training set) under ``<mount>/trainjobs/<job>/``, the job writes the model dir
and its checkpoints there, the launcher copies the model dir back into the step's output.

Library code: no kfp import. The Kubernetes API is the ``kubernetes`` client's
``CustomObjectsApi`` (or anything with its three methods); ``build_trainjob`` returns a plain
dict, validated against the ``kubeflow-trainer-api`` models in tests/unit/test_trainjob.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from hllm_creator import tracking
from hllm_creator.config import StepConfig
from hllm_creator.process import free_port
from hllm_creator.train.config import TrainConfig

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL, KIND = "trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"
API_VERSION = f"{GROUP}/{VERSION}"
PATCH_MANAGER = "hllm-creator.io/train-launcher"
NODE_JOB = "node"  # the replicated job (and container) of the torch-distributed runtime
LAUNCHERS = ("in-process", "torchrun", "trainjob")


class TrainJobFailed(RuntimeError):
    """The TrainJob ended Failed (or did not finish in time): carries the job's reason and message."""

    def __init__(self, name: str, reason: str, message: str):
        self.name, self.reason, self.message = name, reason, message
        super().__init__(f"TrainJob {name} failed: {reason}: {message}")


class TrainJobSpec(StepConfig):
    """What one multi-node training needs; every path is on the shared volume (``mount``)."""

    name: str = Field(..., description="TrainJob name (DNS-1035 label, <= 63 chars)")
    namespace: str = "hllm-creator"
    image: str = Field(..., description="the project's GPU image (Dockerfiles/Dockerfile.gpu)")
    runtime: str = Field("torch-distributed", description="ClusterTrainingRuntime to use")
    runtime_kind: Literal["ClusterTrainingRuntime", "TrainingRuntime"] = "ClusterTrainingRuntime"
    num_nodes: int = Field(1, ge=1)
    gpus_per_node: int = Field(1, ge=0, description="processes (one per GPU) on every node; 0 = CPU, 1 process")
    cpu_per_node: str | None = None
    memory_per_node: str | None = None
    data_pvc: str = "hllm-creator-data"
    mount: str = "/data"
    config_path: str = Field(..., description="the step's TrainConfig as JSON (written by the launcher)")
    dataset_dir: str
    out_dir: str
    checkpoint_dir: str | None = None
    train_parquet: str | None = None
    deepspeed: str | None = Field(None, description="DeepSpeed JSON inside the image")
    mlflow_parent_run_id: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    secret_name: str | None = Field("hllm-creator-env", description="secret whose keys become env (MLFLOW_*)")
    secret_keys: list[str] = Field(default_factory=lambda: ["MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"])
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, str]] = Field(default_factory=list)
    service_account: str | None = Field(None, description="service account of the training pods")
    active_deadline_seconds: int | None = Field(None, ge=1)
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _dns(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", v):
            raise ValueError(f"TrainJob name {v!r} must be a DNS-1035 label (lowercase, digits, '-', <= 63 chars)")
        return v

    @field_validator("config_path", "dataset_dir", "out_dir", "checkpoint_dir", "train_parquet")
    @classmethod
    def _abs(cls, v):
        if v is not None and not v.startswith("/"):
            raise ValueError(f"{v!r}: TrainJob paths must be absolute paths on the shared volume")
        return v


def job_name(prefix: str, *parts: Any) -> str:
    """A stable, valid TrainJob name: prefix + a short hash of ``parts`` (e.g. the KFP task's output path)."""
    h = hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:10]
    prefix = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")[:40] or "hllm"
    if not prefix[0].isalpha():
        prefix = "j" + prefix
    return f"{prefix}-{h}"


def worker_args(config_path: str, *, data: str | None = None, out: str | None = None,
                checkpoint_dir: str | None = None, train_parquet: str | None = None,
                deepspeed: str | None = None) -> list[str]:
    """``-m hllm_creator.train.launch --config C [--data ...]``: the worker entry, for torchrun."""
    args = ["-m", "hllm_creator.train.launch", "--config", config_path]
    for flag, v in (("--data", data), ("--out", out), ("--checkpoint-dir", checkpoint_dir),
                    ("--train-parquet", train_parquet), ("--deepspeed", deepspeed)):
        if v:
            args += [flag, v]
    return args


def train_command(spec: TrainJobSpec) -> tuple[list[str], list[str]]:
    """(command, args) of the trainer container: torchrun (reads PET_* from the runtime) -> the worker,
    which runs ``run_train`` on the step's exact config (paths on the shared volume shown as flags)."""
    return ["torchrun"], worker_args(spec.config_path, data=spec.dataset_dir, out=spec.out_dir,
                                     checkpoint_dir=spec.checkpoint_dir, train_parquet=spec.train_parquet,
                                     deepspeed=spec.deepspeed)


def _quantities(spec: TrainJobSpec) -> dict[str, str]:
    q = {}
    if spec.gpus_per_node:
        q["nvidia.com/gpu"] = str(spec.gpus_per_node)
    if spec.cpu_per_node:
        q["cpu"] = spec.cpu_per_node
    if spec.memory_per_node:
        q["memory"] = spec.memory_per_node
    return q


def build_trainjob(spec: TrainJobSpec) -> dict:
    """The TrainJob object (a dict in the API's JSON field names) for ``spec``."""
    command, args = train_command(spec)
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "HLLM_WORKDIR": f"{spec.mount}/.hllm", **spec.env}
    if spec.mlflow_parent_run_id:
        env["HLLM_PARENT_RUN_ID"] = spec.mlflow_parent_run_id
    env_list: list[dict] = [{"name": k, "value": str(v)} for k, v in env.items()]
    if spec.secret_name:
        env_list += [{"name": k, "valueFrom": {"secretKeyRef": {"name": spec.secret_name, "key": k, "optional": True}}}
                     for k in spec.secret_keys]
    q = _quantities(spec)
    trainer: dict[str, Any] = {"image": spec.image, "command": command, "args": args, "env": env_list,
                               "numNodes": spec.num_nodes, "numProcPerNode": max(1, spec.gpus_per_node)}
    if q:
        trainer["resourcesPerNode"] = {"requests": dict(q), "limits": dict(q)}
    pod_spec: dict[str, Any] = {
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": spec.data_pvc}},
                    # NCCL needs more shared memory than a container's default 64 MiB
                    {"name": "dshm", "emptyDir": {"medium": "Memory"}}],
        "containers": [{"name": NODE_JOB, "volumeMounts": [{"name": "data", "mountPath": spec.mount},
                                                           {"name": "dshm", "mountPath": "/dev/shm"}]}],
    }
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in spec.tolerations]
    if spec.service_account:
        pod_spec["serviceAccountName"] = spec.service_account
    job_spec: dict[str, Any] = {
        "runtimeRef": {"apiGroup": GROUP, "kind": spec.runtime_kind, "name": spec.runtime},
        "trainer": trainer,
        "runtimePatches": [{"manager": PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {
            "replicatedJobs": [{"name": NODE_JOB, "template": {"spec": {"template": {"spec": pod_spec}}}}]}}}}],
    }
    if spec.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    labels = {"app.kubernetes.io/part-of": "hllm-creator", "app.kubernetes.io/component": "train", **spec.labels}
    annotations = {"hllm-creator.io/out-dir": spec.out_dir}
    if spec.mlflow_parent_run_id:
        annotations["hllm-creator.io/mlflow-parent-run-id"] = spec.mlflow_parent_run_id
    return {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": labels, "annotations": annotations},
            "spec": job_spec}


# ------------------------------------------------------------------------- following a job
def job_state(obj: dict) -> tuple[str, str, str]:
    """(phase, reason, message) of a TrainJob object: Complete | Failed | Suspended | Running | Pending."""
    conds = {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []
             if str(c.get("status")) == "True"}
    for phase in ("Failed", "Complete", "Suspended"):
        if phase in conds:
            return phase, conds[phase].get("reason", ""), conds[phase].get("message", "")
    jobs = (obj.get("status") or {}).get("jobsStatus") or []
    if any((j.get("active") or 0) > 0 for j in jobs):
        return "Running", "", ""
    c = conds.get("Created")
    return "Pending", (c or {}).get("reason", ""), (c or {}).get("message", "")


def status_line(obj: dict) -> str:
    phase, reason, msg = job_state(obj)
    st = obj.get("status") or {}
    parts = [f"TrainJob {obj.get('metadata', {}).get('name')}: {phase}"]
    if reason or msg:
        parts.append(f"({reason}: {msg})" if msg else f"({reason})")
    for j in st.get("jobsStatus") or []:
        parts.append(f"[{j.get('name')} active={j.get('active', 0)} ready={j.get('ready', 0)} "
                     f"succeeded={j.get('succeeded', 0)} failed={j.get('failed', 0)}]")
    ts = st.get("trainerStatus") or {}
    if ts.get("progressPercentage") is not None:
        parts.append(f"progress {ts['progressPercentage']}%")
    return " ".join(parts)


def wait_trainjob(api, name: str, namespace: str, *, poll_s: float = 15.0, timeout_s: float | None = None,
                  on_status: Callable[[dict, str], None] | None = None, delete_on_timeout: bool = True) -> dict:
    """Poll the TrainJob until it completes; report every change; raise ``TrainJobFailed`` with the
    job's reason when it fails (or after ``timeout_s``: the job is then deleted so its GPUs are freed)."""
    t0, last = time.time(), None
    while True:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        line = status_line(obj)
        if line != last:
            log.info("%s", line)
            if on_status is not None:
                on_status(obj, line)
            last = line
        phase, reason, msg = job_state(obj)
        if phase == "Complete":
            return obj
        if phase == "Failed":
            raise TrainJobFailed(name, reason or "Failed", msg or "no message")
        if timeout_s is not None and time.time() - t0 > timeout_s:
            if delete_on_timeout:
                api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            raise TrainJobFailed(name, "LauncherTimeout", f"not complete after {timeout_s:.0f}s (last: {line}); "
                                 f"{'deleted' if delete_on_timeout else 'left running'}")
        time.sleep(poll_s)


def kube_api():
    """``CustomObjectsApi`` from the in-cluster service account (or ~/.kube/config outside a pod)."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


# ----------------------------------------------------------------------- the pipeline step
def _copy(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
    dst.parent.mkdir(parents=True, exist_ok=True)
    (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)


def result_from_model_dir(model_dir: str | Path, run_id: str | None = None, **extra) -> dict:
    """What the component reports, read back from a model dir written by another process."""
    d = Path(model_dir)
    if not (d / "eval.json").exists():
        raise FileNotFoundError(f"{d}: no eval.json: the training did not write a model dir")
    ev = json.loads((d / "eval.json").read_text())
    summary = json.loads((d / "train_summary.json").read_text())
    return {"out": str(d), "eval": ev, "loss_trend": ev.get("loss_trend", {}), "run_id": run_id,
            "standin": ev.get("standin_data"), "steps": summary.get("steps"), **extra}


def run_torchrun(cfg, *, nproc: int, master_port: int | None = None, timeout_s: float | None = None) -> dict:
    """The step under ``torchrun --nproc_per_node N`` on this machine (gloo on CPU, NCCL on GPUs)."""
    with tempfile.TemporaryDirectory(prefix="hllm-torchrun-") as tmp:
        cfg_path = Path(tmp) / "train_config.json"
        cfg_path.write_text(cfg.model_dump_json())
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", str(master_port or free_port()),
               *worker_args(str(cfg_path))]
        log.info("launch: %s", " ".join(cmd))
        p = subprocess.run(cmd, env=os.environ.copy(), timeout=timeout_s)
        if p.returncode != 0:
            raise RuntimeError(f"torchrun training exited with {p.returncode} (see the log above)")
    return result_from_model_dir(cfg.out)


def run_trainjob(cfg, *, spec_fields: dict, shared_root: str, api=None, poll_s: float = 15.0,
                 timeout_s: float | None = None) -> dict:
    """The train step at scale: stage the inputs on the shared volume, launch the TrainJob, follow
    it (step log + an MLflow run ``train-launch`` with its status), copy the model dir back into
    ``cfg.out``. Returns what ``run_train`` returns that the component reports (eval, loss_trend,
    run_id, standin, steps), read from the model dir.

    ``cfg``: the step's ``TrainConfig`` (its data / train_parquet / out are local paths of this pod);
    ``spec_fields``: ``TrainJobSpec`` fields except the paths (name, image, num_nodes, gpus_per_node,
    ...); ``shared_root``: a directory on the shared volume, mounted in this pod at the same path as
    in the job's pods (``spec_fields['mount']``).
    """
    root = Path(shared_root)
    mount = spec_fields.get("mount", "/data")
    if not str(root.resolve()).startswith(str(Path(mount).resolve())):
        raise ValueError(f"shared_root {root} is not under the shared volume's mount {mount}: "
                         f"the TrainJob's pods could not see the staged data")
    name = spec_fields["name"]
    work = root / "trainjobs" / name
    _copy(Path(cfg.data), work / "dataset")
    tp = None
    if cfg.train_parquet:
        tp = work / "train.parquet"
        _copy(Path(cfg.train_parquet), tp)
    job_cfg = cfg.model_copy(update={"data": str(work / "dataset"), "out": str(work / "model"),
                                     "checkpoint_dir": str(work / "checkpoints"),
                                     "train_parquet": str(tp) if tp else None})
    (work / "train_config.json").write_text(job_cfg.model_dump_json(indent=1))
    spec = TrainJobSpec(**{**spec_fields, "config_path": str(work / "train_config.json"),
                           "dataset_dir": job_cfg.data, "out_dir": job_cfg.out,
                           "checkpoint_dir": job_cfg.checkpoint_dir, "train_parquet": job_cfg.train_parquet,
                           "deepspeed": cfg.deepspeed})
    obj = build_trainjob(spec)
    api = api or kube_api()
    params = {"trainjob": name, "namespace": spec.namespace, "image": spec.image, "runtime": spec.runtime,
              "num_nodes": spec.num_nodes, "gpus_per_node": spec.gpus_per_node,
              "world_size": spec.num_nodes * max(1, spec.gpus_per_node), "deepspeed": spec.deepspeed,
              "preset": cfg.preset}
    with tracking.step_run("train-launch", params, tags={"trainjob": name}) as run:
        tracking.log_json(obj, "trainjob.json")
        t0 = time.time()
        api.create_namespaced_custom_object(GROUP, VERSION, spec.namespace, PLURAL, obj)
        print(f"created TrainJob {spec.namespace}/{name}: {spec.num_nodes} node(s) x {spec.gpus_per_node} GPU(s), "
              f"image {spec.image}", flush=True)
        history: list[dict] = []

        def on_status(o: dict, line: str) -> None:
            import mlflow

            phase, reason, _ = job_state(o)
            history.append({"t": round(time.time() - t0, 1), "phase": phase, "reason": reason, "line": line})
            print(line, flush=True)  # the KFP step's log
            mlflow.set_tag("trainjob_phase", phase)
            ts = (o.get("status") or {}).get("trainerStatus") or {}
            m = {"trainjob_elapsed_s": time.time() - t0}
            if ts.get("progressPercentage") is not None:
                m["trainjob_progress_pct"] = float(ts["progressPercentage"])
            tracking.log_metrics(m, step=len(history))

        try:
            wait_trainjob(api, name, spec.namespace, poll_s=poll_s, timeout_s=timeout_s, on_status=on_status)
        except TrainJobFailed as e:
            import mlflow

            mlflow.set_tags({"trainjob_phase": "Failed", "trainjob_reason": e.reason})
            tracking.log_json({"history": history, "reason": e.reason, "message": e.message}, "trainjob_status.json")
            raise
        tracking.log_json({"history": history}, "trainjob_status.json")
        tracking.log_metrics({"trainjob_seconds": time.time() - t0})
        if not (Path(job_cfg.out) / "eval.json").exists():
            raise TrainJobFailed(name, "NoModel", f"the job completed but wrote no model dir at {job_cfg.out}")
        _copy(Path(job_cfg.out), Path(cfg.out))
        launch_run = run.info.run_id
    return result_from_model_dir(cfg.out, launch_run, trainjob=name)


def train_step(cfg, *, launcher: str = "in-process", nproc: int = 1, trainjob: dict | None = None,
               shared_root: str | None = None, timeout_s: float | None = None) -> dict:
    """The pipeline's train step, by launcher: ``in-process`` (``run_train`` here), ``torchrun``
    (``nproc`` processes on this machine), ``trainjob`` (a Kubeflow Trainer TrainJob, ``trainjob``
    = ``TrainJobSpec`` fields without the paths)."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
    if launcher == "in-process":
        from hllm_creator.train.trainer import run_train  # torch + the backbones: only where this process trains

        return run_train(cfg)
    if launcher == "torchrun":
        return run_torchrun(cfg, nproc=nproc, timeout_s=timeout_s)
    if not trainjob or not shared_root:
        raise ValueError("launcher 'trainjob' needs the TrainJob settings (image, nodes, GPUs) and shared_root")
    return run_trainjob(cfg, spec_fields=trainjob, shared_root=shared_root, timeout_s=timeout_s)


def main(argv: list[str] | None = None) -> None:
    """Worker entry (one per rank, under torchrun): run_train on a TrainConfig JSON (+ path flags)."""
    # after __main__ set the offline switches, which huggingface_hub reads when first imported
    from hllm_creator.train.trainer import run_train

    ap = argparse.ArgumentParser(prog="python -m hllm_creator.train.launch")
    ap.add_argument("--config", required=True)
    for flag in ("--data", "--out", "--checkpoint-dir", "--train-parquet", "--deepspeed"):
        ap.add_argument(flag)
    a = ap.parse_args(argv)
    cfg = TrainConfig.model_validate_json(Path(a.config).read_text())
    upd = {k: v for k, v in dict(data=a.data, out=a.out, checkpoint_dir=a.checkpoint_dir,
                                 train_parquet=a.train_parquet, deepspeed=a.deepspeed).items() if v}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_train(cfg.model_copy(update=upd))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    main()
