"""Pipeline presets: one typed object per scale (pydantic), turned into pipeline arguments.

- ``tiny``: tiny random LLaMA backbones, a handful of users; the CI test of the whole DAG.
- ``demo``: the README's main command on a 2-core CPU (SmolLM2 as teacher, backbone and judge;
  truncated Item/User LLMs; LoRA creative LLM), whole pipeline in <= 30 minutes.
- ``production``: GPU nodes (training preset ``gpu``: SmolLM2-135M as Item, User and Creative LLM,
  DeepSpeed ZeRO-3, bf16), sharded embedding, the teacher/judge behind an OpenAI-compatible endpoint
  from the ``hllm-creator-llm`` secret.
- ``gpu-multinode``: ``production`` with training as a TrainJob (training preset ``gpu-multinode``:
  TinyLlama-1.1B Item/User LLMs and Qwen3-8B Creative LLM from the shared volume).

Each step section holds arguments of that step's component (names as in
``components/<step>/component.py``; what a section leaves out takes the component's default, which
is the step's typed config default); ``hllm_creator_kfp.pipelines.hllm_pipeline.check_preset`` rejects a key that is
not an input of the component or that the pipeline wires itself. ``PipelineResources`` holds what
only a cluster uses (GPU requests, node selectors, tolerations, secrets, volumes). This is the one
preset layer of the pipeline; ``train``'s own ``train_preset`` argument names a TRAINING preset
(``hllm_creator.train.config.PRESETS``: model sizes and schedules), a different thing.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

STEPS = ("dataset_construct", "train", "embed", "cluster", "match", "generate", "gsb_eval", "personalization_eval",
         "publish")
# personalization_eval runs the Creative LLM (greedy slot swap, NLL own vs shuffled): a GPU in production
GPU_STEPS = ("train", "embed", "generate", "personalization_eval")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class StepResources(_Strict):
    cpu: str | None = None            # set_cpu_request/limit, e.g. "4"
    memory: str | None = None         # set_memory_request/limit, e.g. "16G"
    accelerator_type: str | None = None  # e.g. "nvidia.com/gpu"
    accelerator_limit: int = 0


class PipelineResources(_Strict):
    """Cluster-only settings (compiled into the YAML; the local runner ignores them)."""

    # Secrets as env (kfp-kubernetes use_secret_as_env). The LLM key reaches ONLY the steps that
    # call an LLM (hllm_creator_kfp.pipelines.hllm_pipeline.LLM_STEPS); every step gets the MLflow client settings
    # (the pipeline's MLflow user: manifests/base/mlflow.yaml, docs/pipeline.md "Security").
    llm_secret_name: str = "hllm-creator-llm"
    llm_secret_keys: list[str] = Field(default_factory=lambda: ["OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_MODEL"])
    mlflow_secret_name: str = "hllm-creator-mlflow"
    mlflow_secret_keys: list[str] = Field(default_factory=lambda: [
        "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"])
    # Pod security (namespace enforces Pod Security "restricted"): the images' non-root user, an
    # emptyDir for scratch (HLLM_WORKDIR, HF_HOME, MPLCONFIGDIR live under /tmp), and the label the
    # MLflow NetworkPolicy admits.
    run_as_user: int = 10001
    scratch_mount: str = "/tmp"
    pod_labels: dict[str, str] = Field(default_factory=lambda: {"hllm-creator.io/mlflow-client": "true"})
    # Durable state that must outlive a pod (the teacher/judge reply cache, training checkpoints):
    # an RWO PVC (manifests/base/work-pvc.yaml) mounted on the steps that keep state
    # (hllm_creator_kfp.pipelines.hllm_pipeline.STATE_STEPS); HLLM_STATE_DIR points the library at it.
    work_pvc: str = "hllm-creator-work"
    work_mount: str = "/work"
    # The dataset is one artifact, imported once from `dataset_uri` into the run's workspace: a PVC
    # KFP creates per run (PipelineConfig(workspace=...)) that every step reads it from.
    workspace_size: str = "50Gi"
    workspace_storage_class: str | None = None  # None = the cluster's default StorageClass
    # A shared ReadWriteMany volume mounted on train only: a TrainJob's pods read the staged dataset
    # and write the model there (manifests/base/data-pvc.yaml).
    data_pvc: str = "hllm-creator-data"
    data_mount: str = "/data"
    gpu_node_selector: dict[str, str] = Field(default_factory=lambda: {"nvidia.com/gpu.present": "true"})
    gpu_tolerations: list[dict[str, str]] = Field(default_factory=lambda: [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    steps: dict[str, StepResources] = Field(default_factory=dict)

    def workspace(self):
        """The run's workspace PVC (kfp ``WorkspaceConfig``)."""
        from kfp import dsl

        patch = {"accessModes": ["ReadWriteMany"]}  # steps on GPU and CPU nodes read it at once
        if self.workspace_storage_class:
            patch["storageClassName"] = self.workspace_storage_class
        return dsl.WorkspaceConfig(size=self.workspace_size, kubernetes=dsl.KubernetesWorkspaceConfig(pvcSpecPatch=patch))


class Preset(_Strict):
    name: str
    description: str
    # Step arguments, by component: every key must be an input of that step's component.
    dataset_construct: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    embed: dict[str, Any] = Field(default_factory=dict)
    cluster: dict[str, Any] = Field(default_factory=dict)
    match: dict[str, Any] = Field(default_factory=dict)
    generate: dict[str, Any] = Field(default_factory=dict)
    gsb_eval: dict[str, Any] = Field(default_factory=dict)
    personalization_eval: dict[str, Any] = Field(default_factory=dict)
    publish: dict[str, Any] = Field(default_factory=dict)
    n_embed_shards: int = Field(2, ge=1, le=256)
    llm_model: str = "smollm2-135m-instruct"  # what the local runner's embedded server hosts
    llm_server_args: list[str] = Field(default_factory=list)
    resources: PipelineResources = Field(default_factory=PipelineResources)

    def config_hash(self) -> str:
        blob = json.dumps(self.model_dump(mode="json", exclude={"description"}), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


_GPU = StepResources(cpu="8", memory="64G", accelerator_type="nvidia.com/gpu", accelerator_limit=1)


def _tiny() -> Preset:
    return Preset(
        name="tiny",
        description="CI: tiny random LLaMA backbones, a handful of users, a few tokens from the teacher/judge.",
        # SmolLM2's JSON profile needs ~150-200 tokens: at 48 or 96 every profile was cut short (0 rows kept,
        # and train refuses an empty training set)
        dataset_construct={"ads": 3, "users_per_fact": 1, "heldout_per_ad": 1, "candidate_users": 200,
                           "history_len": 3, "rewrite_max_tokens": 32},
        train={"train_preset": "tiny"},
        embed={"batch_size": 8, "max_users": 12},
        cluster={"k": 2, "min_cluster_size": 1, "niter": 5},
        match={"n_ads": 3, "top_k": 1},
        generate={"max_new_tokens": 8, "max_pairs": 3, "batch_size": 4},
        gsb_eval={"max_samples": 2, "judge_max_tokens": 32, "bootstrap": 100},
        # the tiny run has ~12 clustered users: measure on all of them (the hold-out would keep ~1)
        personalization_eval={"heldout_share": 1.0, "max_ads": 3, "members_per_cluster": 4, "nll_rows": 4,
                              "max_new_tokens": 6, "bootstrap": 200, "judge_samples": 2, "judge_max_tokens": 32},
        n_embed_shards=2,
        llm_server_args=["--max-tokens-limit", "256", "--default-max-tokens", "64"],
    )


def _demo() -> Preset:
    return Preset(
        name="demo",
        description="2-core CPU: SmolLM2-135M as teacher, backbone (first layers) and judge; whole pipeline <= 30 min.",
        # the teacher writes for the same 12 ads match offers (one LLM call per (ad, fact phrase));
        # SmolLM2 on 2 cores decodes ~20-30 tokens/s batched, so ~40 title calls take a minute or two
        dataset_construct={"ads": 12, "candidate_users": 3000, "concurrency": 8},
        train={"max_steps": 24, "eval_users": 1000},  # train_preset: demo (the component's default)
        embed={"max_users": 1000, "bf16": True},
        cluster={"k": 16},
        match={"n_ads": 12, "top_k": 2},
        # the demo's 24-step decoder rarely writes a gate-passing title: the slot's pick of the ad's gated
        # compositions is what its clusters are served (the cpu preset's model serves its generations)
        generate={"max_new_tokens": 24, "max_pairs": 24, "batch_size": 8, "bf16": True, "select": "slot"},
        gsb_eval={"max_samples": 12, "judge_max_tokens": 64},
        # held-out users (10%) of the 1000 embedded; MiniLM ~60 sentences/s; the greedy swap is 2 titles per pair
        personalization_eval={"max_ads": 12, "nll_rows": 64, "max_new_tokens": 24, "bf16": True,
                              "judge_samples": 12},
        n_embed_shards=2,
        llm_server_args=["--max-tokens-limit", "256", "--dtype", "bfloat16"],
    )


def _production() -> Preset:
    return Preset(
        name="production",
        description="GPU nodes: full-size backbones, all users, sharded embedding, external OpenAI-compatible teacher/judge.",
        dataset_construct={"ads": 1000, "users_per_fact": 20, "heldout_per_ad": 5, "candidate_users": 200000},
        # one process on one GPU with ZeRO-3 (the config ships in the GPU image); multi-GPU / multi-node
        # training goes through torchrun or Kubeflow Trainer outside this single-pod task
        train={"train_preset": "gpu", "deepspeed": "/opt/hllm/configs/deepspeed/zero3.json", "bf16": "on"},
        embed={"batch_size": 256, "bf16": True},
        cluster={"k_sweep": "128,256,512", "min_cluster_size": 20},
        match={"n_ads": 1000, "top_k": 10},
        generate={"max_new_tokens": 48, "batch_size": 64, "bf16": True},
        gsb_eval={"max_samples": 500},
        personalization_eval={"max_ads": 200, "members_per_cluster": 50, "swap_pairs": 600, "nll_rows": 512,
                              "max_new_tokens": 48, "batch_size": 32, "bf16": True, "judge_samples": 500},
        n_embed_shards=8,
        resources=PipelineResources(steps={
            "train": StepResources(cpu="16", memory="128G", accelerator_type="nvidia.com/gpu", accelerator_limit=1),
            "embed": _GPU,
            "generate": _GPU,
            "cluster": StepResources(cpu="8", memory="32G"),
            "match": StepResources(cpu="4", memory="16G"),
            "dataset_construct": StepResources(cpu="2", memory="8G"),
            "gsb_eval": StepResources(cpu="2", memory="8G"),
            "personalization_eval": _GPU,
        }),
    )


def _gpu_multinode() -> Preset:
    """The paper's scale: training as a Kubeflow Trainer v2 TrainJob on 8 nodes x 8 GPUs."""
    p = _production()
    p.name = "gpu-multinode"
    p.description = ("Paper scale: train launches a Kubeflow Trainer TrainJob, 8 nodes x 8 GPUs (64), "
                     "TinyLlama-1.1B item/user LLMs, Qwen3-8B creative LLM, ZeRO-3, bf16, flash-attention 2.")
    # the train task itself only stages data, creates the TrainJob and follows it: no GPU here
    p.train = {"train_preset": "gpu-multinode", "deepspeed": "/opt/hllm/configs/deepspeed/zero3.json", "bf16": "on",
               "launcher": "trainjob", "num_nodes": 8, "gpus_per_node": 8,
               "data_pvc": p.resources.data_pvc, "data_mount": p.resources.data_mount,
               "trainjob_options": json.dumps({
                   "cpu_per_node": "96", "memory_per_node": "1000Gi",
                   "node_selector": p.resources.gpu_node_selector, "tolerations": p.resources.gpu_tolerations})}
    p.resources.steps["train"] = StepResources(cpu="2", memory="8G")
    p.n_embed_shards = 64
    return p


PRESETS = {"tiny": _tiny, "demo": _demo, "production": _production, "gpu-multinode": _gpu_multinode}
PresetName = Literal["tiny", "demo", "production", "gpu-multinode"]


def get_preset(name: str, overrides: dict[str, Any] | None = None) -> Preset:
    """A preset by name, with optional dotted overrides ``{"train.epochs": 2, "n_embed_shards": 4}``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    data = PRESETS[name]().model_dump()
    for key, value in (overrides or {}).items():
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            if p not in node or not isinstance(node[p], dict):
                raise ValueError(f"bad override {key!r}: no section {p!r}")
            node = node[p]
        node[parts[-1]] = value
    return Preset.model_validate(data)
