"""Compile the pipeline (production preset) and load it back with kfp's own loader: eight steps,
the embed fan-out, GPU requests on train/embed/generate, kfp-kubernetes settings, caching, images."""

from __future__ import annotations

import pytest
import yaml

STEP_EXECUTORS = ("dataset-construct", "train", "embed", "embed-merge", "cluster", "match", "generate", "gsb-eval",
                  "personalization-eval", "publish")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    from hllm_creator_kfp.pipelines.kfp_backend import check_compiled, compile_pipeline
    from hllm_creator_kfp.pipelines.presets import get_preset

    out = compile_pipeline(get_preset("production"), tmp_path_factory.mktemp("c") / "hllm.yaml")
    return out, check_compiled(out)


def test_compiles_and_loads_back(compiled):
    from kfp import components

    path, rep = compiled
    comp = components.load_component_from_file(str(path))
    assert comp.name == "hllm-creator" == rep["name"]
    for step in STEP_EXECUTORS:
        assert f"exec-{step.replace('_', '-')}" in rep["executors"], (step, rep["executors"])
    # pipeline parameters a run can set
    params = rep["spec"]["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {"dataset_uri", "llm_base_url", "llm_model"}


def test_gpu_requests_on_train_embed_generate_personalization_only(compiled):
    _, rep = compiled
    assert rep["gpu_steps"] == ["embed", "generate", "personalization_eval", "train"]
    for acc in rep["gpu"].values():
        assert acc["type"] == "nvidia.com/gpu" and acc["count"] >= 1
    assert set(rep["gpu"]) == {"exec-train", "exec-embed", "exec-generate", "exec-personalization-eval"}


def test_kubernetes_settings(compiled):
    from hllm_creator_kfp.pipelines.presets import get_preset

    _, rep = compiled
    res = get_preset("production").resources
    k8s = rep["kubernetes"]
    for step in STEP_EXECUTORS:
        ex = k8s[f"exec-{step}"]
        envs = {e["envVar"] for s in ex["secretAsEnv"] for e in s["keyToEnv"]}
        assert {"MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= envs
        assert res.mlflow_secret_name in {s["secretName"] for s in ex["secretAsEnv"]}
    for step in ("train", "embed", "generate", "personalization-eval"):
        ex = k8s[f"exec-{step}"]
        assert ex["nodeSelector"]["labels"] == res.gpu_node_selector
        assert ex["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert "nodeSelector" not in k8s["exec-cluster"]


def test_llm_secret_only_in_the_steps_that_call_an_llm(compiled):
    """OPENAI_API_KEY (the hllm-creator-llm secret) reaches dataset-construct, gsb-eval and
    personalization-eval (its cross-cluster judge; the LLM_STEPS present in the DAG) and no other task; the key's value is nowhere in the YAML."""
    from hllm_creator_kfp.pipelines.hllm_pipeline import LLM_STEPS
    from hllm_creator_kfp.pipelines.presets import get_preset

    path, rep = compiled
    res = get_preset("production").resources
    with_llm = set()
    for label, ex in rep["kubernetes"].items():
        for s in ex.get("secretAsEnv", []):
            envs = {e["envVar"] for e in s["keyToEnv"]}
            if s["secretName"] == res.llm_secret_name or envs & {"OPENAI_API_KEY", "OPENAI_BASE_URL"}:
                assert s["secretName"] == res.llm_secret_name and "OPENAI_API_KEY" in envs
                with_llm.add(label)
    llm_execs = {f"exec-{s.replace('_', '-')}" for s in LLM_STEPS}
    assert with_llm == llm_execs & set(rep["kubernetes"]) == {"exec-dataset-construct", "exec-gsb-eval",
                                                                "exec-personalization-eval"}
    # no other executor in the whole document names the secret or the key
    text = path.read_text()
    assert text.count(f"secretName: {res.llm_secret_name}") == len(with_llm)
    assert "CHANGE-ME" not in text


def test_every_task_pod_is_restricted_and_state_is_durable(compiled):
    """What the compiled pipeline can carry for Pod Security "restricted": a non-root security
    context on every task, an emptyDir for /tmp (scratch; the images' HLLM_WORKDIR, HF_HOME,
    MPLCONFIGDIR), the MLflow NetworkPolicy's label; no hostPath or other volume types. (KFP's
    backend adds allowPrivilegeEscalation=false, drop ALL, seccomp RuntimeDefault: kfp-kubernetes
    set_security_context's contract.) The stateful steps mount the durable work PVC; OMP threads
    follow the CPU limit."""
    from hllm_creator_kfp.pipelines.hllm_pipeline import STATE_STEPS
    from hllm_creator_kfp.pipelines.presets import get_preset

    _, rep = compiled
    res = get_preset("production").resources
    executors = rep["spec"]["deploymentSpec"]["executors"]
    for step in STEP_EXECUTORS:
        ex = rep["kubernetes"][f"exec-{step}"]
        sc = ex["securityContext"]
        assert sc["runAsNonRoot"] is True and int(sc["runAsUser"]) == res.run_as_user != 0
        assert {m["mountPath"] for m in ex["emptyDirMounts"]} == {"/tmp"}
        assert set(ex) <= {"secretAsEnv", "pvcMount", "securityContext", "emptyDirMounts", "podMetadata",
                           "nodeSelector", "tolerations"}, f"{step}: unexpected pod settings {set(ex)}"
        assert ex["podMetadata"]["labels"] == res.pod_labels
        mounts = {m["mountPath"] for m in ex.get("pvcMount", [])}
        env = {e["name"]: e["value"] for e in executors[f"exec-{step}"]["container"].get("env", [])}
        # the shared data volume only on train (a TrainJob stages the dataset there); the dataset
        # itself reaches every step as one artifact in the run's workspace
        data = {res.data_mount} if step == "train" else set()
        if step.replace("-", "_") in STATE_STEPS:
            assert mounts == data | {res.work_mount}
            assert env["HLLM_STATE_DIR"].startswith(res.work_mount + "/")
        else:
            assert mounts == data and "HLLM_STATE_DIR" not in env
        cpu = res.steps.get(step.replace("-", "_"))
        if cpu is not None and cpu.cpu:
            assert env["OMP_NUM_THREADS"] == str(int(float(cpu.cpu)))


def test_the_dataset_is_one_artifact_in_the_runs_workspace(compiled):
    """One importer of `dataset_uri` into the workspace PVC feeds every step that reads the dataset
    (no `data_dir` string beside it); `clusters` is the same artifact type in every step."""
    from hllm_creator_kfp.pipelines.presets import get_preset

    path, rep = compiled
    spec = rep["spec"]
    assert spec["root"]["inputDefinitions"]["parameters"].keys() == {"dataset_uri", "llm_base_url", "llm_model"}
    imp = [c for c in spec["deploymentSpec"]["executors"].values() if "importer" in c]
    assert len(imp) == 1 and imp[0]["importer"]["downloadToWorkspace"] is True
    platform = next(d for d in yaml.safe_load_all(path.read_text()) if d and "platforms" in d)
    ws = platform["platforms"]["kubernetes"]["pipelineConfig"]["workspace"]
    assert ws["size"] == get_preset("production").resources.workspace_size
    assert ws["kubernetes"]["pvcSpecPatch"]["accessModes"] == ["ReadWriteMany"]
    for name, comp in spec["components"].items():
        arts = comp.get("inputDefinitions", {}).get("artifacts", {})
        params = comp.get("inputDefinitions", {}).get("parameters", {})
        assert "data_dir" not in params, name
        for a in ("dataset", "clusters"):
            if a in arts:
                assert arts[a]["artifactType"]["schemaTitle"] == "system.Dataset", (name, a)


def test_pipeline_source_has_no_name_lookup():
    """Every edge is a call with named arguments: no alias tables, no input probing."""
    import inspect

    import hllm_creator_kfp.pipelines.hllm_pipeline as hp

    src = inspect.getsource(hp)
    for gone in ("ALIASES", "STEP_INPUTS", "_shard_inputs", "pool.get", "component_io"):
        assert gone not in src, gone


def test_a_preset_may_not_set_a_wired_input():
    from hllm_creator_kfp.pipelines.hllm_pipeline import WiringError, build_pipeline
    from hllm_creator_kfp.pipelines.presets import get_preset

    with pytest.raises(WiringError, match="wires"):
        build_pipeline(get_preset("tiny", {"match.clusters": "x"}))


def test_cpu_threads_parses_quantities():
    from hllm_creator_kfp.pipelines.hllm_pipeline import cpu_threads

    assert [cpu_threads(q) for q in ("4", "2.5", "500m", "1500m", "16")] == [4, 2, 1, 1, 16]


def test_fan_out_caching_and_images(compiled):
    from hllm_creator_kfp.components._images import CPU_IMAGE, GPU_IMAGE

    path, rep = compiled
    spec = rep["spec"]
    text = path.read_text()
    assert "parameterIterator" in text  # ParallelFor over the embed shards
    loops = [t for t in spec["root"]["dag"]["tasks"].values() if "parameterIterator" in t]
    assert loops and "embed-merge" in spec["root"]["dag"]["tasks"] or any(
        "embed-merge" in t.get("taskInfo", {}).get("name", "") for t in spec["root"]["dag"]["tasks"].values())
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    checked = 0
    for dag in dags:
        for t in dag["tasks"].values():
            ref = t["componentRef"]["name"]
            if ref.startswith(("comp-importer", "comp-for-loop")):
                continue
            assert t.get("cachingOptions", {}).get("enableCache") is True, t["taskInfo"]
            checked += 1
    assert checked == len(STEP_EXECUTORS)  # every step task, including embed inside the loop
    images = {label: ex["container"]["image"] for label, ex in spec["deploymentSpec"]["executors"].items()
              if "container" in ex}
    assert images["exec-train"] == GPU_IMAGE and images["exec-cluster"] == CPU_IMAGE
    assert set(images.values()) <= {CPU_IMAGE, GPU_IMAGE}


def test_cli_compile_and_registry_override(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from hllm_creator.cli import app

    out = tmp_path / "p.yaml"
    r = CliRunner().invoke(app, ["compile", "--out", str(out), "--set", "n_embed_shards=3"])
    assert r.exit_code == 0, r.output
    assert "GPU requests" in r.output and "exec-train x1" in r.output
    spec = next(yaml.safe_load_all(out.read_text()))
    loop = next(t for t in spec["root"]["dag"]["tasks"].values() if "parameterIterator" in t)
    assert "0/3" in str(loop) and "2/3" in str(loop)
    r = CliRunner().invoke(app, ["compile", "--out", str(tmp_path / "bad.txt")])
    assert r.exit_code != 0
    r = CliRunner().invoke(app, ["compile", "--out", str(out), "--set", "train.no_such_knob=1"])
    assert r.exit_code != 0 and "no_such_knob" in (r.output + str(r.exception))


def test_wiring_errors_are_clear():
    from hllm_creator_kfp.pipelines.hllm_pipeline import WiringError, build_pipeline
    from hllm_creator_kfp.pipelines.presets import get_preset

    with pytest.raises(WiringError, match="does not take"):
        build_pipeline(get_preset("tiny", {"cluster.no_such_knob": 3}))
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("huge")
    with pytest.raises(ValueError, match="no section"):
        get_preset("tiny", {"nope.x": 1})


def test_run_and_submit_reject_bad_input_early(tmp_path):
    """Clear errors before anything starts (no LLM server, no KFP run)."""
    from typer.testing import CliRunner

    from hllm_creator.cli import app

    r = CliRunner().invoke(app, ["run", "--preset", "huge"])
    assert r.exit_code != 0 and "unknown preset" in r.output
    r = CliRunner().invoke(app, ["run", "--preset", "tiny", "--data", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "not a dataset dir" in r.output
    r = CliRunner().invoke(app, ["run", "--set", "novalue"])
    assert r.exit_code != 0 and "KEY=VALUE" in r.output
    r = CliRunner().invoke(app, ["submit", "--host", "http://127.0.0.1:9", "--run-name", "x",
                                 "--dataset-uri", "/local/path"])
    assert r.exit_code != 0 and "object-store URI" in r.output


@pytest.mark.parametrize("name", ["tiny", "demo", "production"])
def test_every_preset_wires_into_the_pipeline(name):
    """Every preset key is an input of its component (a typo would be silently ignored otherwise)."""
    from hllm_creator_kfp.pipelines.hllm_pipeline import build_pipeline
    from hllm_creator_kfp.pipelines.presets import get_preset

    p = build_pipeline(get_preset(name))
    assert p is not None


def test_images_by_digest_at_compile_time():
    """A release compiles with HLLM_IMAGE_DIGEST_*: every base image then names a digest, not a tag."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    d = "sha256:" + "ab" * 32
    env = {**os.environ, "HLLM_IMAGE_DIGEST_CPU": d, "HLLM_IMAGE_DIGEST_GPU": d, "PYTHONPATH": str(repo)}
    code = "from hllm_creator_kfp.components._images import CPU_IMAGE, GPU_IMAGE, SERVING_IMAGE as S; print(CPU_IMAGE, GPU_IMAGE, S)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    cpu, gpu, serving = out.stdout.split()
    assert cpu.endswith(f"hllm-creator-cpu@{d}") and gpu.endswith(f"hllm-creator-gpu@{d}")
    assert serving.endswith(":0.1.0") or ":" in serving.rsplit("/", 1)[1]
    bad = subprocess.run([sys.executable, "-c", code], env={**env, "HLLM_IMAGE_DIGEST_CPU": "latest"},
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "HLLM_IMAGE_DIGEST_CPU" in bad.stderr


def test_personalization_uses_the_slot_generate_serves_with(tmp_path):
    """personalization-eval's greedy swap fills the slot as generate does: a preset that sets
    generate.slot passes the same value on (unless the step sets its own)."""
    from hllm_creator_kfp.pipelines.kfp_backend import compile_pipeline
    from hllm_creator_kfp.pipelines.presets import get_preset

    def slot_of(preset, name):
        text = compile_pipeline(preset, tmp_path / f"{name}.yaml").read_text()
        spec = next(yaml.safe_load_all(text))
        task = spec["root"]["dag"]["tasks"]["personalization-eval"]
        return task["inputs"]["parameters"]["slot"]["runtimeValue"]["constant"]

    assert slot_of(get_preset("production", {"generate.slot": "mean"}), "mean") == "mean"
    assert slot_of(get_preset("production", {"generate.slot": "mean", "personalization_eval.slot": "medoid"}),
                   "both") == "medoid"


def test_every_step_in_one_image_is_a_parameter_not_a_patch(tmp_path):
    """build_pipeline(image=X): every executor runs X (the local DockerRunner's cpu image), the same
    command and the same inputs; the components themselves keep their own images."""
    from kfp import compiler

    from hllm_creator_kfp.components._images import CPU_IMAGE, GPU_IMAGE
    from hllm_creator_kfp.components.train.component import train
    from hllm_creator_kfp.pipelines.hllm_pipeline import build_pipeline, with_image
    from hllm_creator_kfp.pipelines.presets import get_preset

    specs = {}
    for name, image in (("own", None), ("one", "hllm-creator-cpu:ct")):
        out = tmp_path / f"{name}.yaml"
        compiler.Compiler().compile(build_pipeline(get_preset("tiny"), local=True, image=image), str(out))
        specs[name] = yaml.safe_load(out.read_text())["deploymentSpec"]["executors"]
    own = {k: v["container"] for k, v in specs["own"].items() if "container" in v}
    one = {k: v["container"] for k, v in specs["one"].items() if "container" in v}
    assert set(own) == set(one) and len(one) == len(STEP_EXECUTORS)
    assert {c["image"] for c in own.values()} == {CPU_IMAGE, GPU_IMAGE}
    assert {c["image"] for c in one.values()} == {"hllm-creator-cpu:ct"}
    for k in own:
        assert {**own[k], "image": None} == {**one[k], "image": None}, k
    assert train.component_spec.implementation.container.image == GPU_IMAGE  # not changed in place
    assert with_image(train, "x:1").component_spec.inputs == train.component_spec.inputs
    with pytest.raises(ValueError, match="image"):
        with_image(train, "")
