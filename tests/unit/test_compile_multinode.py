"""`hllm-creator compile --preset gpu-multinode`: the train step launches a TrainJob (8 nodes x 8 GPUs).

The real CLI and the real KFP compiler; the YAML is loaded back with kfp's own loader. The train
task itself requests no GPU (it only stages data, creates the TrainJob and follows it), mounts the
shared volume the TrainJob's pods mount, and carries the launcher's code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("gm") / "gm.yaml"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "model_code"), str(REPO),
                                                         os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([str(BIN / "hllm-creator"), "compile", "--preset", "gpu-multinode", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    docs = list(yaml.safe_load_all(out.read_text()))
    return out, docs[0], (docs[1] if len(docs) > 1 else {})


def test_train_task_is_a_trainjob_launch_at_paper_scale(compiled):
    from kfp import components

    path, spec, _ = compiled
    assert components.load_component_from_file(str(path)).name == "hllm-creator"
    params = {k: v["runtimeValue"]["constant"] for k, v in spec["root"]["dag"]["tasks"]["train"]["inputs"]["parameters"].items()
              if "runtimeValue" in v}
    assert params["launcher"] == "trainjob" and params["train_preset"] == "gpu-multinode"
    assert int(params["num_nodes"]) * int(params["gpus_per_node"]) == 64
    assert params["deepspeed"].endswith("zero3.json") and params["bf16"] == "on"
    assert params["trainjob_image"].split(":")[0].endswith("hllm-creator-gpu")
    # runtime and namespace: the component's defaults (the preset only overrides)
    defaults = spec["components"]["comp-train"]["inputDefinitions"]["parameters"]
    assert defaults["trainjob_runtime"]["defaultValue"] == "torch-distributed"
    assert defaults["trainjob_namespace"]["defaultValue"] == "hllm-creator"
    assert "trainjob_runtime" not in params and "trainjob_namespace" not in params
    opts = json.loads(params["trainjob_options"])
    assert opts["tolerations"][0]["key"] == "nvidia.com/gpu" and opts["node_selector"]


def test_train_executor_carries_the_launcher_and_requests_no_gpu(compiled):
    _, spec, platform = compiled
    ex = spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    code = "\n".join(ex.get("command", []) + ex.get("args", []))
    assert "train_step(" in code and "launcher" in code and "job_name(" in code
    assert "accelerator" not in ex.get("resources", {})
    assert ex["resources"]["resourceCpuLimit"] == "2"
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    assert k8s["pvcMount"][0]["mountPath"] == "/data"
    # embed / generate still run on GPU pods
    assert "accelerator" in spec["deploymentSpec"]["executors"]["exec-embed"]["container"]["resources"]


def test_train_preset_is_the_papers_scale():
    from hllm_creator.train.config import build_config

    c = build_config("gpu-multinode", data="/d", out="/o")
    assert "TinyLlama-1.1B" in c.model.item_llm and "TinyLlama-1.1B" in c.model.user_llm
    assert "Qwen3-8B" in c.model.creative_llm
    assert c.deepspeed.endswith("zero3.json") and c.bf16 == "on" and c.gradient_checkpointing and not c.lora
