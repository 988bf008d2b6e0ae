"""KServe rollout of a registered bundle: canary, complete, rollback (``hllm-creator promote --rollout``).

The patches are JSON merge patches of ``serving.kserve.io/v1beta1`` InferenceServices, built as
kserve's own models (``V1beta1InferenceService`` ...) and serialized by the kubernetes client, so a
misspelled field cannot reach the cluster (:func:`validate_isvc` walks the result against the
models' ``openapi_types``). They are applied with the kubernetes ``CustomObjectsApi``.

KServe semantics (canary rollout, KServe docs "Canary Rollout Strategy"; Serverless deployment
mode only, RawDeployment has no revisions to split between):

- canary N%: a new ``storageUri`` + ``canaryTrafficPercent: N``: the new revision gets N% of the
  traffic, the last rolled-out revision the rest;
- complete: ``canaryTrafficPercent: 100``: the latest revision gets all traffic and becomes the
  rolled-out revision;
- rollback: ``canaryTrafficPercent: 0`` (all traffic back on the last rolled-out revision, at once)
  and ``storageUri`` back to the champion's bundle, so the spec names what serves.
"""

from __future__ import annotations

import logging
from typing import Any

from hllm_creator.serving.runtime import import_kserve

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
API_VERSION = f"{GROUP}/{VERSION}"
SERVICES = ("predictor", "creative")  # the InferenceServices of manifests/base
MODEL_FORMAT = "hllm-creator"


def _kserve():
    return import_kserve()


def isvc_patch(name: str, *, storage_uri: str | None = None, percent: int | None = None,
               namespace: str | None = None):
    """A ``V1beta1InferenceService`` holding only what a rollout step changes."""
    if percent is not None and (isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100):
        raise ValueError(f"canaryTrafficPercent must be an integer in 0..100, got {percent!r}")
    if storage_uri is not None and "://" not in storage_uri:
        raise ValueError(f"storageUri must be a URI (s3://, gs://, pvc://, https://, file://), got {storage_uri!r}")
    k = _kserve()
    from kubernetes.client import V1ObjectMeta

    model = None
    if storage_uri is not None:
        model = k.V1beta1ModelSpec(model_format=k.V1beta1ModelFormat(name=MODEL_FORMAT), storage_uri=storage_uri)
        model._name = None  # the model default "" would be sent and rename the container
    pred = k.V1beta1PredictorSpec(canary_traffic_percent=percent, model=model)
    return k.V1beta1InferenceService(api_version=API_VERSION, kind="InferenceService",
                                     metadata=V1ObjectMeta(name=name, namespace=namespace),
                                     spec=k.V1beta1InferenceServiceSpec(predictor=pred))


def to_body(isvc) -> dict[str, Any]:
    """The JSON body (camelCase, None dropped) the kubernetes client sends."""
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(isvc)


def canary_patch(name: str, storage_uri: str, percent: int, namespace: str | None = None) -> dict[str, Any]:
    if not 0 < percent < 100:
        raise ValueError(f"a canary takes 1..99 percent of the traffic, got {percent}")
    return to_body(isvc_patch(name, storage_uri=storage_uri, percent=percent, namespace=namespace))


def complete_patch(name: str, namespace: str | None = None) -> dict[str, Any]:
    return to_body(isvc_patch(name, percent=100, namespace=namespace))


def rollback_patch(name: str, storage_uri: str | None = None, namespace: str | None = None) -> dict[str, Any]:
    return to_body(isvc_patch(name, storage_uri=storage_uri, percent=0, namespace=namespace))


# ---- offline validation against kserve's models ---------------------------------------------------
def _model_class(type_name: str):
    import kubernetes.client as kc

    k = _kserve()
    return getattr(k, type_name, None) or getattr(kc, type_name, None)


def _walk(obj: Any, type_name: str, path: str, errors: list[str]) -> None:
    if type_name.startswith("list[") and type_name.endswith("]"):
        if not isinstance(obj, list):
            errors.append(f"{path}: expected a list, got {type(obj).__name__}")
            return
        for i, x in enumerate(obj):
            _walk(x, type_name[5:-1], f"{path}[{i}]", errors)
        return
    if type_name.startswith("dict("):
        if not isinstance(obj, dict):
            errors.append(f"{path}: expected a map, got {type(obj).__name__}")
        return
    prim = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object, "datetime": str,
            "date": str}
    if type_name in prim:
        ok = isinstance(obj, prim[type_name]) and not (type_name == "int" and isinstance(obj, bool))
        if not ok:
            errors.append(f"{path}: expected {type_name}, got {type(obj).__name__} {obj!r}")
        return
    cls = _model_class(type_name)
    if cls is None:
        return  # a type the packages do not model (e.g. a quantity string): accepted as is
    if not isinstance(obj, dict):
        errors.append(f"{path}: expected an object ({type_name}), got {type(obj).__name__}")
        return
    by_json = {v: k for k, v in cls.attribute_map.items()}
    for key, val in obj.items():
        if key not in by_json:
            errors.append(f"{path}.{key}: unknown field of {type_name}")
            continue
        _walk(val, cls.openapi_types[by_json[key]], f"{path}.{key}", errors)


def _from_body(obj: Any, type_name: str) -> Any:
    """The model objects of a (checked) body; kubernetes' ApiClient.deserialize only knows its own
    models, not kserve's."""
    if obj is None:
        return None
    if type_name.startswith("list["):
        return [_from_body(x, type_name[5:-1]) for x in obj]
    cls = _model_class(type_name)
    if cls is None or not isinstance(obj, dict):
        return obj
    by_json = {v: k for k, v in cls.attribute_map.items()}
    inst = cls(**{by_json[k]: _from_body(v, cls.openapi_types[by_json[k]]) for k, v in obj.items()})
    for attr in cls.openapi_types:  # defaults the body did not set (ModelSpec.name = "") stay unset
        if cls.attribute_map[attr] not in obj and getattr(inst, attr) == "":
            setattr(inst, f"_{attr}", None)
    return inst


def validate_isvc(body: dict[str, Any]) -> None:
    """Raise ValueError unless ``body`` is a ``V1beta1InferenceService`` by kserve's models: every
    field known (camelCase as the API spells it), every value of its declared type, and the body
    deserializes into the model again."""
    errors: list[str] = []
    if body.get("apiVersion") != API_VERSION or body.get("kind") != "InferenceService":
        errors.append(f"apiVersion/kind: expected {API_VERSION} InferenceService, got "
                      f"{body.get('apiVersion')} {body.get('kind')}")
    _walk(body, "V1beta1InferenceService", "", errors)
    pct = (((body.get("spec") or {}).get("predictor") or {}).get("canaryTrafficPercent"))
    if pct is not None and not (isinstance(pct, int) and 0 <= pct <= 100):
        errors.append(f".spec.predictor.canaryTrafficPercent: must be 0..100, got {pct!r}")
    if errors:
        raise ValueError("not a valid InferenceService: " + "; ".join(errors))
    back = _from_body(body, "V1beta1InferenceService")
    if to_body(back) != body:
        raise ValueError("InferenceService does not survive a round trip through kserve's models")


def merge_patch(base: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (what ``patch_namespaced_custom_object`` sends for a dict body)."""
    if not isinstance(patch, dict):
        return patch
    out = dict(base) if isinstance(base, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


# ---- applying ------------------------------------------------------------------------------------
def custom_objects_api(context: str | None = None):
    """The kubernetes CustomObjectsApi: in-cluster config in a pod, else ~/.kube/config."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(context=context)
    return client.CustomObjectsApi()


def apply_patches(patches: list[dict[str, Any]], namespace: str, api=None) -> list[dict[str, Any]]:
    """Validate, then merge-patch each InferenceService; returns what the API server answered
    (name, generation, the predictor's canaryTrafficPercent and storageUri)."""
    for p in patches:
        validate_isvc(p)
    api = api or custom_objects_api()
    out = []
    for p in patches:
        name = p["metadata"]["name"]
        body = {k: v for k, v in p.items() if k not in ("apiVersion", "kind")}
        body["metadata"] = {"name": name}
        r = api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, body)
        pred = (r.get("spec") or {}).get("predictor") or {}
        out.append({"name": name, "generation": (r.get("metadata") or {}).get("generation"),
                    "canaryTrafficPercent": pred.get("canaryTrafficPercent"),
                    "storageUri": (pred.get("model") or {}).get("storageUri")})
    return out


def rollout_patches(action: str, *, storage_uri: str | None = None, percent: int | None = None,
                    previous_storage_uri: str | None = None, services: tuple[str, ...] = SERVICES,
                    namespace: str | None = None) -> list[dict[str, Any]]:
    """The patches of one step (``canary`` | ``complete`` | ``rollback``) for every service."""
    if action == "canary":
        if storage_uri is None or percent is None:
            raise ValueError("a canary needs the candidate's storage URI and --percent")
        return [canary_patch(s, storage_uri, percent, namespace) for s in services]
    if action == "complete":
        return [complete_patch(s, namespace) for s in services]
    if action == "rollback":
        return [rollback_patch(s, previous_storage_uri, namespace) for s in services]
    raise ValueError(f"unknown rollout action {action!r}: canary, complete or rollback")
