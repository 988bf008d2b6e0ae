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
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("networking.k8s.io/v1", "NetworkPolicy"): "V1NetworkPolicy",
    ("batch/v1", "Job"): "V1Job",
    ("rbac.authorization.k8s.io/v1", "Role"): "V1Role",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "V1RoleBinding",
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
                name = re.split(r"[@]", c["image"])[0]
                name = name.rpartition(":")[0] if ":" in name.split("/")[-1] else name
                if name == img["name"]:
                    new = img.get("newName", name)
                    c["image"] = f"{new}@{img['digest']}" if img.get("digest") else f"{new}:{img['newTag']}"
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
    if d["kind"] in ("Deployment", "Job"):
        return spec["template"]["spec"]["containers"]
    return []


def _canon(docs):
    return sorted(yaml.safe_dump(d, sort_keys=True) for d in docs)


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
            ("Deployment", "mlflow"), ("Service", "mlflow"), ("PersistentVolumeClaim", "mlflow-db"),
            ("NetworkPolicy", "mlflow"), ("ConfigMap", "mlflow-auth"), ("Job", "mlflow-users"),
            ("PersistentVolumeClaim", "hllm-creator-data"), ("PersistentVolumeClaim", "hllm-creator-work")}
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


def _secret_template() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all((MANIFESTS / "base" / "secret.example.yaml").read_text()) if d]
    to_models(docs)  # strict
    return {d["metadata"]["name"]: d for d in docs}


def _secret_refs(docs: list[dict]) -> set[tuple[str, str]]:
    """Every (secret, key) a manifest's container env reads."""
    refs = set()
    for d in docs:
        for c in _containers(d):
            for e in c.get("env", []):
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    refs.add((ref["name"], ref["key"]))
    return refs


def test_secret_template_matches_what_the_parts_read():
    secrets = _secret_template()
    assert {"OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_MODEL"} <= set(secrets["hllm-creator-llm"]["stringData"])
    # every secret key a manifest reads exists in the template
    for overlay_name in OVERLAYS:
        for name, key in _secret_refs(own_build(MANIFESTS / "overlays" / overlay_name)):
            assert name in secrets and key in secrets[name]["stringData"], f"{overlay_name}: {name}/{key} not in template"
    # the template's LLM endpoint is a documented external URL, not a service no manifest creates
    assert secrets["hllm-creator-llm"]["stringData"]["OPENAI_BASE_URL"].startswith("https://")
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
    """The PVCs and secrets the compiled pipeline mounts/reads exist in the manifests / template."""
    from hllm_creator_kfp.pipelines.presets import get_preset

    res = get_preset("production").resources
    secrets = _secret_template()
    for overlay_name in OVERLAYS:
        docs = own_build(MANIFESTS / "overlays" / overlay_name)
        pvcs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"}
        assert res.data_pvc in pvcs and res.work_pvc in pvcs
        # the work PVC holds a sqlite WAL: one host only
        assert pvcs[res.work_pvc]["spec"]["accessModes"] == ["ReadWriteOnce"]
        # task pods run as uid/gid run_as_user and cannot set fsGroup: the pvc-init Job makes both PVCs
        # group-writable for them
        init = next(d for d in docs if d["kind"] == "Job" and d["metadata"]["name"] == "pvc-init")["spec"]["template"]
        assert init["spec"]["securityContext"]["fsGroup"] == res.run_as_user
        claims = {v["persistentVolumeClaim"]["claimName"] for v in init["spec"]["volumes"] if "persistentVolumeClaim" in v}
        assert claims == {res.data_pvc, res.work_pvc}
        assert f"{res.work_mount}/state" in init["spec"]["containers"][0]["args"][0]
        for pvc in pvcs.values():
            assert pvc["spec"]["accessModes"] and set(pvc["spec"]["accessModes"]) <= {
                "ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany", "ReadWriteOncePod"}
    for name, keys in ((res.llm_secret_name, res.llm_secret_keys), (res.mlflow_secret_name, res.mlflow_secret_keys)):
        assert set(keys) <= set(secrets[name]["stringData"]), name


# ---------------------------------------------------------------- Pod Security "restricted"
_PSS_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
                "secret"}


def restricted_violations(pod: dict, containers: list[dict], where: str) -> list[str]:
    """Pod Security Standard "restricted" (v1.30+) on a pod spec and its containers, plus this
    project's rules: a read-only root filesystem and no service-account token unless needed."""
    bad = []
    psc = pod.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            bad.append(f"{where}: {flag}")
    for v in pod.get("volumes") or []:
        kinds = set(v) - {"name"}
        if not kinds <= _PSS_VOLUMES:
            bad.append(f"{where}: volume {v['name']} of type {kinds - _PSS_VOLUMES}")
    if pod.get("automountServiceAccountToken") is not False:
        bad.append(f"{where}: automountServiceAccountToken not false")
    if psc.get("runAsUser") == 0:
        bad.append(f"{where}: pod runAsUser 0")
    for c in containers:
        cw = f"{where}/{c.get('name')}"
        sc = c.get("securityContext") or {}
        if not (sc.get("runAsNonRoot") is True or (psc.get("runAsNonRoot") is True and sc.get("runAsNonRoot") is None)):
            bad.append(f"{cw}: runAsNonRoot not true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            bad.append(f"{cw}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{cw}: seccompProfile {seccomp!r}")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{cw}: allowPrivilegeEscalation not false")
        if sc.get("privileged"):
            bad.append(f"{cw}: privileged")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            bad.append(f"{cw}: capabilities not dropped (ALL)")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            bad.append(f"{cw}: adds capabilities {caps['add']}")
        if sc.get("readOnlyRootFilesystem") is not True:
            bad.append(f"{cw}: readOnlyRootFilesystem not true")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            bad.append(f"{cw}: hostPort")
    return bad


def pod_specs(docs: list[dict]) -> list[tuple[str, dict, list[dict]]]:
    """(where, pod spec, containers) of every pod the manifests make. An InferenceService's pod is
    its predictor (pod fields) running its ServingRuntime's container with the model's overrides:
    both the runtime's container and the model's container fields are checked."""
    out = []
    runtimes = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServingRuntime"}
    for d in docs:
        where = f"{d['kind']}/{d['metadata']['name']}"
        if d["kind"] in ("Deployment", "Job"):
            pod = d["spec"]["template"]["spec"]
            out.append((where, pod, pod["containers"] + pod.get("initContainers", [])))
        elif d["kind"] == "InferenceService":
            pred = d["spec"]["predictor"]
            rt = runtimes[pred["model"]["runtime"]]["spec"]
            pod = {**pred, "volumes": (pred.get("volumes") or []) + (rt.get("volumes") or [])}
            model = {k: v for k, v in pred["model"].items() if k in ("name", "securityContext", "ports")}
            out.append((where, pod, [*rt["containers"], {"name": "model", **model}]))
    return out


@pytest.mark.parametrize("overlay_name", OVERLAYS)
def test_every_pod_meets_restricted(overlay_name):
    docs = own_build(MANIFESTS / "overlays" / overlay_name)
    ns = next(d for d in docs if d["kind"] == "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pods = pod_specs(docs)
    assert {w for w, _, _ in pods} >= {"Deployment/mlflow", "Job/mlflow-users", "InferenceService/creative",
                                       "InferenceService/predictor"}
    bad = [v for where, pod, cs in pods for v in restricted_violations(pod, cs, where)]
    assert not bad, "\n".join(bad)
    for where, pod, cs in pods:
        # read-only root: every pod has an emptyDir for scratch at /tmp
        mounts = {m["mountPath"]: m["name"] for c in cs for m in c.get("volumeMounts") or []}
        assert "/tmp" in mounts, f"{where}: no scratch mount at /tmp"
        vol = next(v for v in pod["volumes"] if v["name"] == mounts["/tmp"])
        assert "emptyDir" in vol, f"{where}: /tmp is not an emptyDir"
        for c in cs:
            for probe in ("readinessProbe", "livenessProbe"):
                if probe in c:  # the default 1 s timeout fails on a loaded CPU
                    assert c[probe].get("timeoutSeconds", 1) >= 5, f"{where}/{c['name']}: {probe} timeout"
    sas = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    assert all(sa.get("automountServiceAccountToken") is False for sa in sas.values())


def test_restricted_check_catches_a_bad_pod():
    pod = {"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}
    c = {"name": "c", "securityContext": {"allowPrivilegeEscalation": True, "capabilities": {"add": ["SYS_ADMIN"]}}}
    bad = "\n".join(restricted_violations(pod, [c], "Pod/x"))
    for want in ("hostPath", "runAsNonRoot", "seccompProfile", "allowPrivilegeEscalation", "capabilities not dropped",
                 "SYS_ADMIN", "readOnlyRootFilesystem", "automountServiceAccountToken"):
        assert want in bad, want


@pytest.mark.parametrize("overlay_name", OVERLAYS)
def test_images_by_digest_and_torch_threads_from_the_limit(overlay_name):
    docs = own_build(MANIFESTS / "overlays" / overlay_name)
    theirs = kubectl_build(MANIFESTS / "overlays" / overlay_name)
    for d in docs + (theirs or []):
        for c in _containers(d):
            assert re.fullmatch(r"[\w./-]+@sha256:[0-9a-f]{64}", c["image"]), f"{d['kind']}: {c['image']} not by digest"
    for rt in (d for d in docs if d["kind"] == "ServingRuntime"):
        env = {e["name"]: e for e in rt["spec"]["containers"][0]["env"]}
        ref = env["OMP_NUM_THREADS"]["valueFrom"]["resourceFieldRef"]
        assert ref["resource"] == "limits.cpu" and ref["containerName"] == rt["spec"]["containers"][0]["name"]


@pytest.mark.parametrize("overlay_name", OVERLAYS)
def test_mlflow_auth_networkpolicy_and_readonly_serving(overlay_name):
    from hllm_creator_kfp.pipelines.presets import get_preset

    docs = own_build(MANIFESTS / "overlays" / overlay_name)
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    c = by[("Deployment", "mlflow")]["spec"]["template"]["spec"]["containers"][0]
    args, env = c["args"], {e["name"]: e for e in c["env"]}
    assert args[args.index("--app-name") + 1] == "basic-auth"
    ini = by[("ConfigMap", "mlflow-auth")]["data"]["basic_auth.ini"]
    assert "default_permission = NO_PERMISSIONS" in ini and "password" not in ini.lower()
    assert env["MLFLOW_AUTH_CONFIG_PATH"]["value"].endswith("/basic_auth.ini")
    for k in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert env[k]["valueFrom"]["secretKeyRef"]["name"] == "hllm-creator-mlflow-admin"
    # the auth DB sits on the PVC beside the tracking DB
    assert "sqlite:////data/" in ini
    # NetworkPolicy: ingress to MLflow only from labelled pods, only on its port
    np = by[("NetworkPolicy", "mlflow")]["spec"]
    assert np["podSelector"]["matchLabels"] == by[("Deployment", "mlflow")]["spec"]["selector"]["matchLabels"]
    assert np["policyTypes"] == ["Ingress"] and len(np["ingress"]) == 1
    (label,) = np["ingress"][0]["from"][0]["podSelector"]["matchLabels"].items()
    assert np["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 5000}]
    # ...and every MLflow client carries the label: serving, the setup Job, the pipeline's tasks
    for name in ("creative", "predictor"):
        assert by[("InferenceService", name)]["spec"]["predictor"]["labels"][label[0]] == label[1]
    assert by[("Job", "mlflow-users")]["spec"]["template"]["metadata"]["labels"][label[0]] == label[1]
    assert get_preset("production").resources.pod_labels[label[0]] == label[1]
    # serving reads the registry as the read-only user, never the pipeline's or the admin's
    pipeline_secret = get_preset("production").resources.mlflow_secret_name
    for rt in (d for d in docs if d["kind"] == "ServingRuntime"):
        renv = {e["name"]: e for e in rt["spec"]["containers"][0]["env"]}
        for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            assert renv[k]["valueFrom"]["secretKeyRef"]["name"] == "hllm-creator-mlflow-reader"
        read = {n for n, _ in _secret_refs([rt])}
        assert read == {"hllm-creator-mlflow-reader"} and pipeline_secret not in read
    # the admin secret reaches only the MLflow server and its setup Job
    users = {(d["kind"], d["metadata"]["name"]) for d in docs for c in _containers(d)
             if "hllm-creator-mlflow-admin" in str(c.get("env"))}
    assert users == {("Deployment", "mlflow"), ("Job", "mlflow-users")}
