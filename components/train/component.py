"""train: HLLM-Creator training (six losses), evaluation vs baselines, model dir + MLflow registration.

Glue only: the work is ``hllm_creator.train.trainer.run_train``.
"""

from typing import Optional

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from hllm_creator_kfp.components._images import GPU_IMAGE
from hllm_creator_kfp.components._params import describe


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train(
    dataset: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    train_set: Input[Dataset] = None,
    train_preset: str = "demo",
    max_steps: int = 0,
    cls_epochs: Optional[float] = None,
    creative_rows: int = 0,
    eval_users: int = 0,
    head_steps: int = -1,
    lora: bool = True,
    bf16: str = "auto",
    deepspeed: Optional[str] = None,
    register: bool = True,
    seed: int = 0,
    launcher: str = "in-process",
    num_nodes: int = 1,
    gpus_per_node: int = 1,
    trainjob_image: Optional[str] = None,
    trainjob_runtime: str = "torch-distributed",
    trainjob_namespace: str = "hllm-creator",
    data_pvc: str = "hllm-creator-data",
    data_mount: str = "/data",
    shared_root: Optional[str] = None,
    trainjob_options: Optional[str] = None,
    timeout_s: int = 0,
):
    """Train HLLM-Creator and write its model dir (weights, configs, tokenizers, eval.json).

    Args:
        dataset: Dataset dir (items.parquet, interactions.parquet, manifest.json).
        model: Output model dir (HLLMCreator.load reads it; inference and serving use it).
        metrics: Held-out Recall@10 / NDCG@10 / AUC of the predictor and its baselines, final losses.
        train_set: Teacher training set (a dir holding train.parquet, or the parquet itself);
            absent = a deterministic STAND-IN set built from the dataset (not teacher data).
        train_preset: A TRAINING preset (hllm_creator.train.config: model sizes, schedule): tiny | demo |
            cpu | gpu | gpu-multinode (docs/train.md); not the pipeline preset.
        max_steps: Override the number of optimizer steps (0 = train_preset).
        cls_epochs: Passes over all users for the cls objective (None = train_preset).
        creative_rows: Use at most N rows of the training set (0 = all).
        eval_users: Held-out users to evaluate (0 = train_preset).
        head_steps: Predictor-fit steps on frozen user embeddings after joint training
            (-1 = train_preset, 0 = off).
        seed: Random seed.
        launcher: in-process (train in this pod/process) | torchrun (gpus_per_node processes
            in this pod) | trainjob (a Kubeflow Trainer v2 TrainJob of num_nodes x gpus_per_node
            GPUs that this step creates, follows and waits for: hllm_creator/train/launch.py).
        num_nodes: TrainJob nodes (launcher trainjob).
        gpus_per_node: GPUs (= processes) per node (launchers torchrun and trainjob).
        trainjob_image: The TrainJob's image; required with launcher trainjob. The pipeline passes the
            train component's own image as resolved at compile time (registry, tag or digest pin).
        trainjob_runtime: The ClusterTrainingRuntime the TrainJob uses.
        trainjob_namespace: Namespace of the TrainJob (the launcher's service account may create
            TrainJobs there: manifests/base/rbac-train-launcher.yaml).
        data_pvc: The shared ReadWriteMany volume the TrainJob's pods mount (as this step does).
        data_mount: Where that volume is mounted, here and in the TrainJob's pods.
        shared_root: Directory under data_mount where the dataset is staged and the job writes
            the model (None = data_mount).
        trainjob_options: JSON of further TrainJobSpec fields (cpu_per_node, memory_per_node,
            node_selector, tolerations, service_account, active_deadline_seconds, env).
        timeout_s: Fail (and delete the TrainJob) after this many seconds (0 = wait forever).
    """
    import json
    import os
    from pathlib import Path

    from hllm_creator.train.config import build_config
    from hllm_creator.train.launch import job_name, train_step

    train_parquet = None
    if train_set is not None and train_set.path:
        p = Path(train_set.path)
        train_parquet = str(p / "train.parquet" if p.is_dir() else p)
    cfg = build_config(train_preset, data=dataset.path, out=model.path, train_parquet=train_parquet,
                       max_steps=max_steps or None, cls_epochs=cls_epochs, max_creative_rows=creative_rows or None,
                       eval_users=eval_users or None, head_steps=head_steps if head_steps >= 0 else None, lora=lora,
                       bf16=bf16, deepspeed=deepspeed,
                       register_model=register, seed=seed)
    trainjob = None
    if launcher == "trainjob":
        if not trainjob_image:  # the image is compiled in (the pipeline passes it), never looked up here
            raise ValueError("train: launcher 'trainjob' needs trainjob_image (the image the TrainJob's pods run)")
        trainjob = {"name": job_name("hllm-train", model.path), "image": trainjob_image,
                    "runtime": trainjob_runtime, "namespace": trainjob_namespace, "num_nodes": num_nodes,
                    "gpus_per_node": gpus_per_node, "data_pvc": data_pvc, "mount": data_mount,
                    "mlflow_parent_run_id": os.environ.get("HLLM_PARENT_RUN_ID") or None,
                    **(json.loads(trainjob_options) if trainjob_options else {})}
    res = train_step(cfg, launcher=launcher, nproc=gpus_per_node, trainjob=trainjob,
                     shared_root=shared_root or data_mount, timeout_s=timeout_s or None)
    ev = res["eval"]
    for name in ("model", "popularity", "random"):
        for k in ("recall@10", "ndcg@10", "auc"):
            metrics.log_metric(f"{name}_{k}", float(ev[name][k]))
    for k, v in res["loss_trend"].items():
        metrics.log_metric(f"{k}_last", float(v["last"]))
    model_hash = json.loads((Path(model.path) / "model_hash.json").read_text())["model_hash"]
    model.metadata.update({"model_hash": model_hash, "mlflow_run_id": res["run_id"] or "", "launcher": launcher,
                           "standin_data": res["standin"], "steps": res["steps"]})


describe(train)  # input descriptions from the config's fields, written once
