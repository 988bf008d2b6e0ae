"""Offline validation of manifests/: build the kustomize overlays, then deserialize every object
into the real Python models (kserve's for the KServe kinds, the kubernetes client's for the core
kinds) with a STRICT walk: an unknown field anywhere (a typo) fails, required fields are checked
by the models' own constructors (client-side validation), then the project's rules are checked.

Overlays are built with ``kubectl kustomize`` when kubectl is installed (it is here: kustomize
v5.5). Without it, a small builder below (namespace, labels, images, JSON6902 patches: the only
features these kustomizations use) builds them; when both exist the two outputs must agree.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
OVERLAYS = ("cpu", "gpu")
CLUSTER_SCOPED = {"Namespace"}


# ---------------------------------------------------------------- strict deserialization
def _model_class(type_name: str):
    import kserve
    import kubernetes.client as k8s

    for mod in (kserve, k8s):
        cls = getattr(mod, type_name, None)
        if cls is not None and hasattr(cls, "openapi_types"):
            return cls
    raise LookupError(type_name)


def strict(data, type_name: str, where: str = ""):
    """Build the model object for ``data``; raise on unknown fields and constructor validation."""
    if data is None:
        return None
    if type_name in ("str", "int", "bool", "float", "object", "datetime", "date"):
        if type_name == "str":
            assert isinstance(data, str), f"{where}: expected a string, got {data!r}"
        elif type_name == "int":
            assert isinstance(data, int) and not isinstance(data, bool), f"{where}: expected an int, got {data!r}"
        elif type_name == "bool":
            assert isinstance(data, bool), f"{where}: expected a bool, got {data!r}"
        return data
    m = re.fullmatch(r"list\[(.+)\]", type_name)
    if m:
        assert isinstance(data, list), f"{where}: expected a list"
        return [strict(x, m.group(1), f"{where}[{i}]") for i, x in enumerate(data)]
    m = re.fullmatch(r"dict\((\w+), (.+)\)", type_name)
    if m:
        assert isinstance(data, dict), f"{where}: expected a map"
        return {k: strict(v, m.group(2), f"{where}.{k}") for k, v in data.items()}
    cls = _model_class(type_name)
    if not isinstance(data, dict):
        # IntOrString / Quantity fields are typed 'object' upstream; anything else must be a map
        raise AssertionError(f"{where}: expected a {type_name} map, got {data!r}")
    by_json = {v: k for k, v in cls.attribute_map.items()}
    kwargs = {}
    for key, value in data.items():
        assert key in by_json, f"{where}: unknown field {key!r} for {type_name} (typo?)"
        attr = by_json[key]
        kwargs[attr] = strict(value, cls.openapi_types[attr], f"{where}.{key}")
    return cls(**kwargs)


KINDS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("v1", "Service"): "V1Service",
    ("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim",
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("v1", "Namespace"): "V1Namespace",
    ("v1", "Secret"): "V1Secret",
}


def to_models(docs: list[dict]) -> dict[tuple[str, str], object]:
    out = {}
    for d in docs:
        key = (d["apiVersion"], d["kind"])
        assert key in KINDS, f"unexpected kind {key}"
        out[(d["kind"], d["metadata"]["name"])] = strict(d, KINDS[key], f"{d['kind']}/{d['metadata']['name']}")
    return out


# ---------------------------------------------------------------- building the overlays
def kubectl_build(overlay: Path) -> list[dict] | None:
    exe = shutil.which("kubectl") or shutil.which("kustomize")
    if exe is None:
        return None
    cmd = [exe, "kustomize", str(overlay)] if exe.endswith("kubectl") else [exe, "build", str(overlay)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def _json_patch(doc: dict, ops: list[dict]) -> None:
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        node = doc
        for p in parts[:-1]:
            node = node[int(p)] if isinstance(node, list) else node[p]
        last = parts[-1]
        if op["op"] in ("add", "replace"):
            if op["op"] == "replace":
                assert last in node, f"replace of missing {op['path']}"
            if isinstance(node, list):
                node.insert(len(node) if last == "-" else int(last), copy.deepcopy(op["value"]))
            else:
                node[last] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del node[int(last) if isinstance(node, list) else last]
        else:
            raise NotImplementedError(op["op"])


def own_build(path: Path) -> list[dict]:
    """The subset of kustomize these files use: resources, namespace, labels, images, patches."""
    kz = yaml.safe_load((path / "kustomization.yaml").read_text())
    docs: list[dict] = []
    for res in kz.get("resources", []):
        p = path / res
        docs += own_build(p) if p.is_dir() else [d for d in yaml.safe_load_all(p.read_text()) if d]
    ns = kz.get("namespace")
    for d in docs:
        if ns and d["kind"] not in CLUSTER_SCOPED:
            d["metadata"]["namespace"] = ns
        for lab in kz.get("labels", []):
            d["metadata"].setdefault("labels", {}).update(lab["pairs"])
    for img in kz.get("images", []):
        for d in docs:
            for c in _containers(d):
                name, _, _tag = c["image"].rpartition(":")
                if name == img["name"]:
                    c["image"] = f"{img.get('newName', name)}:{img['newTag']}"
    for patch in kz.get("patches", []):
        t = patch["target"]
        for d in docs:
            if d["kind"] == t["kind"] and d["metadata"]["name"] == t["name"]:
                _json_patch(d, yaml.safe_load(patch["patch"]))
    return docs


def _containers(d: dict) -> list[dict]:
    spec = d.get("spec", {})
    if d["kind"] == "ServingRuntime":
        return spec.get("containers", [])
    if d["kind"] == "Deployment":
        return spec["template"]["spec"]["containers"]
    return []


def _canon(docs):
    return sorted((yaml.safe_dump(d, sort_keys=True) for d in docs))


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request):
    path = MANIFESTS / "overlays" / request.param
    ours = own_build(path)
    theirs = kubectl_build(path)
    if theirs is not None:
        assert _canon(ours) == _canon(theirs), "own builder disagrees with kustomize"
    docs = theirs if theirs is not None else ours
    return request.param, docs, to_models(docs)


# ---------------------------------------------------------------- the checks
def test_overlay_has_every_part(overlay):
    name, docs, models = overlay
    kinds = {k for k in models}
    need = {("InferenceService", "creative"), ("InferenceService", "predictor"), ("ServingRuntime", "hllm-creator"),
            ("Deployment", "mlflow"), ("Service", "mlflow"), ("PersistentVolumeClaim", "mlflow-db")}
    assert need <= kinds
    for d in docs:
        if d["kind"] not in CLUSTER_SCOPED:
            assert d["metadata"]["namespace"] == "hllm-creator"


def test_inference_services(overlay):
    name, docs, models = overlay
    runtimes = {n: m for (k, n), m in models.items() if k == "ServingRuntime"}
    for isvc_name in ("creative", "predictor"):
        isvc = models[("InferenceService", isvc_name)]
        model = isvc.spec.predictor.model
        assert model.model_format.name == "hllm-creator"
        assert model.storage_uri and re.match(r"^(s3|gs|pvc|https?)://", model.storage_uri)
        assert model.runtime in runtimes, f"{isvc_name} names unknown runtime {model.runtime}"
        rt = runtimes[model.runtime]
        assert "hllm-creator" in [f.name for f in rt.spec.supported_model_formats]
        c = rt.spec.containers[0]
        # same entry point and arguments as the serving CLI: `hllm-creator serve NAME --model-dir ...`
        argv = (c.command or []) + c.args
        assert argv[:3] == ["hllm-creator", "serve", "{{.Name}}"]
        assert argv[argv.index("--port") + 1] == "8080" and argv[argv.index("--host") + 1] == "0.0.0.0"
        # KServe's storage initializer downloads storageUri to /mnt/models
        assert argv[argv.index("--model-dir") + 1].startswith("/mnt/models/")
        assert argv[argv.index("--artifacts") + 1].startswith("/mnt/models/")
        assert c.readiness_probe.http_get.path == "/v2/health/ready" and c.readiness_probe.http_get.port == 8080
        assert c.ports[0].container_port == 8080
        for sc in (c.security_context, model.security_context):
            assert sc.run_as_non_root is True and sc.allow_privilege_escalation is False
            assert sc.run_as_user and sc.run_as_user != 0 and "ALL" in sc.capabilities.drop
        res = model.resources or c.resources
        assert res.limits and res.requests and {"cpu", "memory"} <= set(res.limits)
        gpu = "nvidia.com/gpu" in (model.resources.limits or {})
        if isvc_name == "creative" and name == "gpu":
            assert gpu and model.resources.requests["nvidia.com/gpu"] == "1"
            assert isvc.spec.predictor.tolerations[0].key == "nvidia.com/gpu"
            assert isvc.spec.predictor.node_selector
            assert "gpu" in rt.spec.containers[0].image
        else:
            assert not gpu, f"{isvc_name} requests a GPU in the {name} overlay"


def test_mlflow_server(overlay):
    _, _, models = overlay
    dep = models[("Deployment", "mlflow")]
    svc = models[("Service", "mlflow")]
    pod = dep.spec.template.spec
    c = pod.containers[0]
    args = c.args
    assert c.command == ["mlflow"] and args[0] == "server"
    backend = args[args.index("--backend-store-uri") + 1]
    assert backend.startswith(("sqlite:////", "postgresql://"))
    assert args[args.index("--artifacts-destination") + 1].startswith(("s3://", "gs://", "wasbs://"))
    assert "--serve-artifacts" in args
    hosts = args[args.index("--allowed-hosts") + 1].split(",")
    assert "mlflow.hllm-creator.svc.cluster.local:*" in hosts
    if backend.startswith("sqlite"):
        assert dep.spec.replicas == 1 and dep.spec.strategy.type == "Recreate"  # one writer on the sqlite file
        mount = {m.mount_path: m.name for m in c.volume_mounts}
        db_dir = backend[len("sqlite:///"):].rsplit("/", 1)[0]
        assert db_dir in mount
        vol = next(v for v in pod.volumes if v.name == mount[db_dir])
        assert vol.persistent_volume_claim.claim_name == "mlflow-db"
    assert pod.security_context.run_as_non_root and c.security_context.allow_privilege_escalation is False
    assert c.resources.limits and c.readiness_probe.http_get.path == "/health"
    assert svc.spec.selector == dep.spec.selector.match_labels
    assert svc.spec.ports[0].port == int(args[args.index("--port") + 1])
    # the in-cluster URI the other parts use points at this Service
    runtime_env = {e.name: e.value for e in models[("ServingRuntime", "hllm-creator")].spec.containers[0].env}
    assert runtime_env["MLFLOW_TRACKING_URI"] == f"http://mlflow.hllm-creator.svc.cluster.local:{svc.spec.ports[0].port}"


def test_secret_template_matches_what_the_parts_read():
    docs = [d for d in yaml.safe_load_all((MANIFESTS / "base" / "secret.example.yaml").read_text()) if d]
    models = to_models(docs)
    env = models[("Secret", "hllm-creator-env")].string_data
    assert {"OPENAI_BASE_URL", "OPENAI_API_KEY", "MLFLOW_TRACKING_URI"} <= set(env)
    s3 = models[("Secret", "hllm-creator-s3")].string_data
    dep = next(d for d in own_build(MANIFESTS / "base") if d["kind"] == "Deployment")
    refs = {e["valueFrom"]["secretKeyRef"]["key"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]
            if "valueFrom" in e}
    assert refs <= set(s3)
    # the template is never applied by the kustomization (it would overwrite the real values)
    assert "secret.example.yaml" not in (MANIFESTS / "base" / "kustomization.yaml").read_text().split("resources:")[1]


def test_strict_validation_catches_mistakes():
    """Not vacuous: a typo'd field and a missing required field are rejected."""
    good = yaml.safe_load((MANIFESTS / "base" / "inferenceservice-predictor.yaml").read_text())
    strict(good, "V1beta1InferenceService")
    typo = copy.deepcopy(good)
    typo["spec"]["predictor"]["model"]["storageURI"] = typo["spec"]["predictor"]["model"].pop("storageUri")
    with pytest.raises(AssertionError, match="storageURI"):
        strict(typo, "V1beta1InferenceService")
    dep = next(d for d in yaml.safe_load_all((MANIFESTS / "base" / "mlflow.yaml").read_text()) if d["kind"] == "Deployment")
    del dep["spec"]["template"]["spec"]["containers"][0]["name"]
    with pytest.raises(ValueError, match="name"):
        strict(dep, "V1Deployment")


@pytest.mark.parametrize("overlay_name", OVERLAYS)
def test_runtime_args_parse_with_the_real_serving_cli(overlay_name):
    """The runtimes' argv is accepted by `hllm-creator serve creative|predictor` itself (click parses
    it; nothing is started), so the manifests serve the serving issue's classes with its arguments."""
    import typer

    from hllm_creator.cli import app

    docs = own_build(MANIFESTS / "overlays" / overlay_name)
    root = typer.main.get_command(app)
    for rt in (d for d in docs if d["kind"] == "ServingRuntime"):
        c = rt["spec"]["containers"][0]
        assert c["command"] == ["hllm-creator"]
        for name in ("creative", "predictor"):
            argv = [a.replace("{{.Name}}", name) for a in c["args"]]
            ctx = root.make_context("hllm-creator", list(argv), resilient_parsing=False)
            serve = root.get_command(ctx, argv[0])
            sub_ctx = serve.make_context("serve", argv[1:], parent=ctx)
            cmd = serve.get_command(sub_ctx, name)
            assert cmd is not None, f"`hllm-creator serve {name}` does not exist"
            params = cmd.make_context(name, argv[2:], parent=sub_ctx).params
            assert params["port"] == 8080 and params["host"] == "0.0.0.0"
            assert params["model_dir"] == "/mnt/models/model" and params["artifacts"] == "/mnt/models/artifacts"


def test_pipeline_settings_match_the_manifests():
    """The PVC and secret the compiled pipeline mounts/reads exist in the manifests."""
    from pipelines.presets import get_preset

    res = get_preset("production").resources
    docs = own_build(MANIFESTS / "overlays" / "gpu")
    pvcs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"}
    assert res.data_pvc in pvcs and "ReadWriteMany" in pvcs[res.data_pvc]["spec"]["accessModes"]
    secrets = [d for d in yaml.safe_load_all((MANIFESTS / "base" / "secret.example.yaml").read_text()) if d]
    env = next(d for d in secrets if d["metadata"]["name"] == res.secret_name)
    assert set(res.secret_keys) <= set(env["stringData"])
