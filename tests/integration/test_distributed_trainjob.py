"""The train COMPONENT with launcher "trainjob", end to end on this machine.

A Kubernetes cluster with Kubeflow Trainer cannot exist here, so ``FakeLocalTrainer`` (named fake)
plays the controller for ONE node: on ``create`` it validates the TrainJob against the Trainer
API models, then runs the trainer container's command and args from the object, with its env
(secret keys resolved from a fake secret) and the ``PET_*`` variables the torch-distributed
runtime sets (1 node x ``numProcPerNode`` processes, gloo on CPU), and reports the TrainJob
conditions Created / Complete / Failed (reason and message from the exit code) on ``get``.
Everything else is real: the component's python_func, staging on the "shared volume" (a temp
dir used as the mount path, so the job's paths are the same here), the real torchrun reading
PET_*, the real training on 2 ranks, MLflow (sqlite) with the launcher's run and the train run.
About 40 s on the 2-core box.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kfp import dsl

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


class FakeLocalTrainer:
    """FAKE Kubeflow Trainer controller + API server (no cluster here): runs a TrainJob's trainer
    container as local processes for one node and answers with TrainJob conditions."""

    def __init__(self, secret: dict[str, str], log: Path):
        self.secret, self.log, self.jobs, self.calls = secret, log, {}, []

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

        self.calls.append("create")
        assert (group, version, plural) == ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
        assert TrainerV1alpha1TrainJob.from_dict(copy.deepcopy(body)).to_dict() == body
        t = body["spec"]["trainer"]
        assert t["numNodes"] == 1, "this fake runs one node"
        from hllm_creator.process import free_port

        env = {**os.environ}
        for e in t["env"]:
            if "value" in e:
                env[e["name"]] = e["value"]
            elif e["valueFrom"]["secretKeyRef"]["key"] in self.secret:
                env[e["name"]] = self.secret[e["valueFrom"]["secretKeyRef"]["key"]]
        env.update(PET_NNODES="1", PET_NPROC_PER_NODE=str(t["numProcPerNode"]), PET_NODE_RANK="0",
                   PET_MASTER_ADDR="127.0.0.1", PET_MASTER_PORT=str(free_port()),
                   PYTHONPATH=os.pathsep.join([str(REPO / "model_code"), str(REPO), env.get("PYTHONPATH", "")]),
                   OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
        cmd = [str(BIN / t["command"][0]), *t["command"][1:], *t["args"]]
        with open(self.log, "w") as f:
            p = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=480)
        name = body["metadata"]["name"]
        created = {"type": "Created", "status": "True", "reason": "JobSetCreated", "message": "",
                   "lastTransitionTime": "2026-11-29T10:00:00Z"}
        end = ({"type": "Complete", "status": "True", "reason": "JobsCompleted", "message": "all jobs completed"}
               if p.returncode == 0 else
               {"type": "Failed", "status": "True", "reason": "JobsFailed",
                "message": f"node-0: exit code {p.returncode}"})
        end["lastTransitionTime"] = "2026-11-29T10:01:00Z"
        self.jobs[name] = {**body, "status": {"conditions": [created, end]}}
        return body

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.calls.append("get")
        return self.jobs[name]

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.calls.append("delete")
        self.jobs.pop(name, None)


@pytest.fixture()
def small_ds(tmp_path, bundled_dataset):
    from helpers import small_dataset

    return small_dataset(tmp_path / "ds", n_users=30, source=bundled_dataset.path)


def test_train_component_launches_a_trainjob_and_returns_its_model(small_ds, tmp_path, monkeypatch):
    import mlflow

    from hllm_creator.model import HLLMCreator
    from hllm_creator.train import launch
    from hllm_creator_kfp.components.train.component import train

    mount = tmp_path / "shared"  # the RWX volume: same path in the launcher's pod and the job's pods
    mount.mkdir()
    tracking_uri = os.environ["MLFLOW_TRACKING_URI"]
    fake = FakeLocalTrainer({"MLFLOW_TRACKING_URI": tracking_uri}, tmp_path / "job.log")
    monkeypatch.setattr(launch, "kube_api", lambda: fake)
    parent = mlflow.MlflowClient().create_run(
        mlflow.set_experiment("hllm-creator").experiment_id, run_name="parent").info.run_id
    monkeypatch.setenv("HLLM_PARENT_RUN_ID", parent)  # the run context's one channel: the task env
    model = dsl.Model(uri=str(tmp_path / "model"))
    metrics = dsl.Metrics(uri=str(tmp_path / "metrics"))
    train.python_func(dataset=dsl.Dataset(uri=str(small_ds.path)), model=model, metrics=metrics, train_preset="tiny",
                      max_steps=2, eval_users=8, bf16="off", register=True,
                      launcher="trainjob", num_nodes=1, gpus_per_node=2, trainjob_image="img:test",
                      data_mount=str(mount), trainjob_options=json.dumps({"secret_keys": ["MLFLOW_TRACKING_URI"]}))
    log = (tmp_path / "job.log").read_text()
    assert fake.calls[0] == "create" and "get" in fake.calls, fake.calls
    # the job ran on 2 ranks (torchrun read PET_NPROC_PER_NODE=2) and wrote the model on the volume
    assert log.count("STAND-IN training rows") == 2, log[-3000:]
    (job,) = fake.jobs
    assert (mount / "trainjobs" / job / "model" / "model.safetensors").exists()
    # the step's output is that model, loadable; its metrics came from the job's eval.json
    m = HLLMCreator.load(model.path)
    assert model.metadata["model_hash"] == m.model_hash and model.metadata["launcher"] == "trainjob"
    assert 0 <= metrics.metadata["model_recall@10"] <= 1
    # MLflow: the launcher's run and the job's (rank 0) train run, both under the pipeline's parent
    runs = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{parent}'", output_format="list")
    steps = sorted(r.data.tags["step"] for r in runs)
    assert steps == ["train", "train-launch"], steps
    launch_run = next(r for r in runs if r.data.tags["step"] == "train-launch")
    assert launch_run.data.tags["trainjob_phase"] == "Complete" and launch_run.data.params["world_size"] == "2"
    assert model.metadata["mlflow_run_id"] == launch_run.info.run_id
    mv = mlflow.MlflowClient().get_model_version_by_alias("hllm-creator", "candidate")
    assert mv.run_id == next(r for r in runs if r.data.tags["step"] == "train").info.run_id


def test_a_failing_trainjob_fails_the_step_with_the_jobs_reason(small_ds, tmp_path, monkeypatch):
    from hllm_creator.train import launch
    from hllm_creator_kfp.components.train.component import train

    mount = tmp_path / "shared"
    mount.mkdir()
    fake = FakeLocalTrainer({}, tmp_path / "job.log")
    monkeypatch.setattr(launch, "kube_api", lambda: fake)
    (small_ds.path / "items.parquet").write_bytes(b"not a parquet")  # the job's training will fail
    with pytest.raises(launch.TrainJobFailed, match=r"JobsFailed: node-0: exit code \d+"):
        train.python_func(dataset=dsl.Dataset(uri=str(small_ds.path)), model=dsl.Model(uri=str(tmp_path / "m")),
                          metrics=dsl.Metrics(uri=str(tmp_path / "x")), train_preset="tiny", max_steps=1,
                          register=False, launcher="trainjob", num_nodes=1, gpus_per_node=1,
                          trainjob_image="img:test", data_mount=str(mount))
    assert "items.parquet" in (tmp_path / "job.log").read_text()
    assert not (tmp_path / "m").exists()
