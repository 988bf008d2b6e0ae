"""The Kubeflow Trainer v2 TrainJob the train step launches at scale (hllm_creator/train/launch.py).

Offline: the object is validated against the real Trainer API models (``kubeflow-trainer-api``,
the TrainJob/TrainingRuntime pydantic models): it must round-trip through
``TrainerV1alpha1TrainJob`` unchanged, so an unknown or misspelled field, a wrong type or a
missing required field fails. The Kubernetes API server cannot exist here: ``FakeCustomObjects``
(named fake) stands in for ``kubernetes.client.CustomObjectsApi`` and replays TrainJob statuses.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from hllm_creator.train import launch
from hllm_creator.train.launch import TrainJobFailed, TrainJobSpec, build_trainjob, job_state, wait_trainjob

REPO = Path(__file__).resolve().parents[2]


def _spec(**kw) -> TrainJobSpec:
    base = dict(name="hllm-train-0123456789", image="ghcr.io/hllm-creator/hllm-creator-gpu:0.1.0", num_nodes=8,
                gpus_per_node=8, cpu_per_node="96", memory_per_node="1000Gi",
                config_path="/data/trainjobs/j/train_config.json", dataset_dir="/data/trainjobs/j/dataset",
                out_dir="/data/trainjobs/j/model", checkpoint_dir="/data/trainjobs/j/checkpoints",
                train_parquet="/data/trainjobs/j/train.parquet", deepspeed="/opt/hllm/configs/deepspeed/zero3.json",
                mlflow_parent_run_id="0123abcd", node_selector={"nvidia.com/gpu.present": "true"},
                tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    base.update(kw)
    return TrainJobSpec(**base)


def validate(obj: dict) -> None:
    """Strict validation with the Trainer API models: parse, dump, compare (nothing dropped or changed)."""
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

    model = TrainerV1alpha1TrainJob.from_dict(copy.deepcopy(obj))
    back = model.to_dict()
    assert back == obj, f"the Trainer API models do not reproduce the object: {json.dumps(back)[:2000]}"
    assert model.spec.runtime_ref.name and model.spec.trainer is not None


def test_trainjob_validates_against_the_trainer_api_models():
    obj = build_trainjob(_spec())
    validate(obj)
    assert obj["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and obj["kind"] == "TrainJob"
    assert obj["metadata"] == {"name": "hllm-train-0123456789", "namespace": "hllm-creator", "labels": {
        "app.kubernetes.io/part-of": "hllm-creator", "app.kubernetes.io/component": "train"},
        "annotations": {"hllm-creator.io/out-dir": "/data/trainjobs/j/model",
                        "hllm-creator.io/mlflow-parent-run-id": "0123abcd"}}
    spec = obj["spec"]
    assert spec["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime",
                                  "name": "torch-distributed"}
    t = spec["trainer"]
    assert t["numNodes"] == 8 and t["numProcPerNode"] == 8
    assert t["resourcesPerNode"]["limits"] == {"nvidia.com/gpu": "8", "cpu": "96", "memory": "1000Gi"}
    assert t["image"].endswith("hllm-creator-gpu:0.1.0")
    # torchrun reads PET_NNODES / PET_NPROC_PER_NODE / PET_NODE_RANK / PET_MASTER_* set by the runtime
    assert t["command"] == ["torchrun"]
    args = t["args"]
    assert args[:4] == ["-m", "hllm_creator.train.launch", "--config", "/data/trainjobs/j/train_config.json"]
    flags = dict(zip(args[4::2], args[5::2]))
    assert flags == {"--data": "/data/trainjobs/j/dataset", "--out": "/data/trainjobs/j/model",
                     "--checkpoint-dir": "/data/trainjobs/j/checkpoints",
                     "--train-parquet": "/data/trainjobs/j/train.parquet",
                     "--deepspeed": "/opt/hllm/configs/deepspeed/zero3.json"}
    env = {e["name"]: e for e in t["env"]}
    assert env["HLLM_PARENT_RUN_ID"]["value"] == "0123abcd" and env["HF_HUB_OFFLINE"]["value"] == "1"
    assert env["MLFLOW_TRACKING_URI"]["valueFrom"]["secretKeyRef"] == {
        "name": "hllm-creator-env", "key": "MLFLOW_TRACKING_URI", "optional": True}
    # the shared volume, at the same path as in the launcher's pod, on the runtime's `node` job
    (patch,) = spec["runtimePatches"]
    (rj,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert rj["name"] == "node"
    pod = rj["template"]["spec"]["template"]["spec"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "hllm-creator-data"}} in pod["volumes"]
    assert pod["containers"][0]["name"] == "node"
    assert {"name": "data", "mountPath": "/data"} in pod["containers"][0]["volumeMounts"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_validation_is_strict_a_misspelled_or_mistyped_field_fails():
    obj = build_trainjob(_spec())
    bad = copy.deepcopy(obj)
    bad["spec"]["trainer"]["numNode"] = bad["spec"]["trainer"].pop("numNodes")  # typo
    with pytest.raises(AssertionError):
        validate(bad)
    bad = copy.deepcopy(obj)
    bad["spec"]["trainer"]["numNodes"] = "8"  # a string where the API wants an int
    with pytest.raises(Exception):
        validate(bad)
    bad = copy.deepcopy(obj)
    del bad["spec"]["runtimeRef"]["name"]  # required
    with pytest.raises(Exception):
        validate(bad)


def test_cpu_only_job_and_minimal_spec_validate():
    obj = build_trainjob(_spec(gpus_per_node=0, cpu_per_node=None, memory_per_node=None, num_nodes=2,
                               node_selector={}, tolerations=[], train_parquet=None, deepspeed=None,
                               mlflow_parent_run_id=None, secret_name=None))
    validate(obj)
    assert obj["spec"]["trainer"]["numProcPerNode"] == 1 and "resourcesPerNode" not in obj["spec"]["trainer"]
    assert "--deepspeed" not in obj["spec"]["trainer"]["args"]


def test_spec_rejects_bad_names_and_relative_paths():
    with pytest.raises(ValueError, match="DNS-1035"):
        _spec(name="Train_Job")
    with pytest.raises(ValueError, match="absolute"):
        _spec(dataset_dir="data/ds")
    n = launch.job_name("hllm-train", "/gcs/bucket/run-1/train/model")
    assert re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", n)
    assert n == launch.job_name("hllm-train", "/gcs/bucket/run-1/train/model")
    assert n != launch.job_name("hllm-train", "/gcs/bucket/run-2/train/model")


class FakeCustomObjects:
    """FAKE of kubernetes.client.CustomObjectsApi (no cluster here): stores created objects and
    answers ``get`` with the next status of a scripted sequence (the last one repeats)."""

    def __init__(self, statuses: list[dict]):
        self.statuses, self.calls, self.created, self.deleted = list(statuses), [], {}, []

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.calls.append(("create", group, version, namespace, plural))
        self.created[body["metadata"]["name"]] = body
        return body

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.calls.append(("get", group, version, namespace, plural))
        st = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        obj = copy.deepcopy(self.created.get(name) or {"metadata": {"name": name}})
        obj["status"] = st
        return obj

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.calls.append(("delete", group, version, namespace, plural))
        self.deleted.append(name)


def cond(type_: str, reason: str = "", message: str = "") -> dict:
    return {"type": type_, "status": "True", "reason": reason, "message": message,
            "lastTransitionTime": "2026-11-29T10:00:00Z"}


CREATED = {"conditions": [cond("Created", "JobSetCreated", "the JobSet was created")]}
RUNNING = {"conditions": CREATED["conditions"], "jobsStatus": [
    {"name": "node", "active": 8, "ready": 8, "succeeded": 0, "failed": 0, "suspended": 0}],
    "trainerStatus": {"progressPercentage": 40}}
COMPLETE = {"conditions": CREATED["conditions"] + [cond("Complete", "JobsCompleted", "all jobs completed")],
            "jobsStatus": [{"name": "node", "active": 0, "ready": 0, "succeeded": 8, "failed": 0, "suspended": 0}]}
FAILED = {"conditions": CREATED["conditions"] + [cond("Failed", "JobsFailed", "node-3: OOMKilled (exit 137)")],
          "jobsStatus": [{"name": "node", "active": 0, "ready": 0, "succeeded": 7, "failed": 1, "suspended": 0}]}


def test_statuses_are_the_trainer_api_status_model():
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJobStatus

    for st in (CREATED, RUNNING, COMPLETE, FAILED):
        assert TrainerV1alpha1TrainJobStatus.from_dict(copy.deepcopy(st)).to_dict() is not None
    assert job_state({"status": RUNNING})[0] == "Running"
    assert job_state({"status": COMPLETE})[0] == "Complete"
    assert job_state({"status": FAILED}) == ("Failed", "JobsFailed", "node-3: OOMKilled (exit 137)")
    assert job_state({})[0] == "Pending"


def test_wait_reports_each_change_and_returns_on_complete():
    api = FakeCustomObjects([CREATED, CREATED, RUNNING, COMPLETE])
    seen = []
    obj = wait_trainjob(api, "j", "hllm-creator", poll_s=0, on_status=lambda o, line: seen.append(line))
    assert job_state(obj)[0] == "Complete"
    assert len(seen) == 3  # Created twice = one report
    assert "Running" in seen[1] and "active=8" in seen[1] and "progress 40%" in seen[1]
    assert all(c[1:] == ("trainer.kubeflow.org", "v1alpha1", "hllm-creator", "trainjobs") for c in api.calls)


def test_wait_fails_with_the_jobs_reason():
    api = FakeCustomObjects([CREATED, RUNNING, FAILED])
    with pytest.raises(TrainJobFailed, match="JobsFailed: node-3: OOMKilled") as e:
        wait_trainjob(api, "j", "hllm-creator", poll_s=0)
    assert e.value.reason == "JobsFailed" and not api.deleted


def test_wait_timeout_deletes_the_job_so_its_gpus_are_freed():
    api = FakeCustomObjects([RUNNING])
    with pytest.raises(TrainJobFailed, match="LauncherTimeout"):
        wait_trainjob(api, "j", "hllm-creator", poll_s=0.01, timeout_s=0.05)
    assert api.deleted == ["j"]


def test_run_trainjob_failure_fails_the_step_and_records_the_reason_in_mlflow(tmp_path, bundled_dataset):
    import mlflow
    from helpers import small_dataset

    from hllm_creator.train.config import build_config

    ds = small_dataset(tmp_path / "ds", n_users=10, source=bundled_dataset.path)
    mount = tmp_path / "shared"
    mount.mkdir()
    cfg = build_config("tiny", data=str(ds.path), out=str(tmp_path / "model"))
    api = FakeCustomObjects([CREATED, RUNNING, FAILED])
    fields = {"name": "hllm-train-fail", "image": "img:1", "num_nodes": 2, "gpus_per_node": 4, "mount": str(mount)}
    with pytest.raises(TrainJobFailed, match="OOMKilled"):
        launch.run_trainjob(cfg, spec_fields=fields, shared_root=str(mount), api=api, poll_s=0)
    created = api.created["hllm-train-fail"]
    validate(created)
    work = mount / "trainjobs" / "hllm-train-fail"
    assert (work / "dataset" / "manifest.json").exists()  # staged where the job's pods read it
    staged = json.loads((work / "train_config.json").read_text())
    assert staged["data"] == str(work / "dataset") and staged["out"] == str(work / "model")
    assert staged["preset"] == "tiny" and staged["model"] == cfg.model.model_dump(mode="json")
    assert not (tmp_path / "model").exists()
    (run,) = mlflow.search_runs(filter_string="tags.step = 'train-launch'", output_format="list")
    assert run.data.tags["trainjob_phase"] == "Failed" and run.data.tags["trainjob_reason"] == "JobsFailed"
    assert run.data.params["world_size"] == "8" and run.data.params["trainjob"] == "hllm-train-fail"
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"trainjob.json", "trainjob_status.json"} <= arts


def test_shared_root_must_be_on_the_mounted_volume(tmp_path):
    from hllm_creator.train.config import build_config

    cfg = build_config("tiny", data=str(tmp_path), out=str(tmp_path / "m"))
    with pytest.raises(ValueError, match="not under the shared volume"):
        launch.run_trainjob(cfg, spec_fields={"name": "j", "image": "i", "mount": "/data"},
                            shared_root=str(tmp_path), api=FakeCustomObjects([CREATED]))
    with pytest.raises(ValueError, match="launcher must be one of"):
        launch.train_step(cfg, launcher="slurm")


def test_rbac_allows_exactly_what_the_launcher_calls():
    """manifests/base/rbac-train-launcher.yaml: TrainJobs only, in the namespace, and every verb
    the launcher's code uses (create/get/delete; watch for kubectl/SDK watchers)."""
    import yaml

    docs = {d["kind"]: d for d in yaml.safe_load_all((REPO / "manifests/base/rbac-train-launcher.yaml").read_text())}
    assert set(docs) == {"ServiceAccount", "Role", "RoleBinding"}  # no ClusterRole: namespaced only
    (rule,) = docs["Role"]["rules"]
    assert rule == {"apiGroups": ["trainer.kubeflow.org"], "resources": ["trainjobs"],
                    "verbs": ["create", "get", "watch", "delete"]}
    src = (REPO / "model_code/hllm_creator/train/launch.py").read_text()
    used = set(re.findall(r"api\.(\w+)_namespaced_custom_object", src))
    assert used and used <= set(rule["verbs"]), used
    rb = docs["RoleBinding"]
    assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": docs["Role"]["metadata"]["name"]}
    assert {"kind": "ServiceAccount", "name": docs["ServiceAccount"]["metadata"]["name"],
            "namespace": "hllm-creator"} in rb["subjects"]
    import inspect

    from hllm_creator_kfp.components.train.component import train
    from hllm_creator_kfp.pipelines.presets import get_preset

    # the namespace the TrainJob goes to: the preset's, else the train component's default
    ns = get_preset("gpu-multinode").train.get(
        "trainjob_namespace", inspect.signature(train.python_func).parameters["trainjob_namespace"].default)
    assert ns == docs["Role"]["metadata"]["namespace"]
    kz = yaml.safe_load((REPO / "manifests/base/kustomization.yaml").read_text())
    assert "rbac-train-launcher.yaml" in kz["resources"]
