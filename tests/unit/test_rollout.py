"""The KServe rollout patches, validated offline against kserve's models (kserve 0.21 python
package: V1beta1InferenceService & co.), alone and merged onto the base manifests; and the alias
flow of ``promote --rollout canary|complete`` / ``--rollback`` on a real MLflow sqlite store
(``--dry-run``: no cluster here)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from hllm_creator.publish import rollout as R

ROOT = Path(__file__).resolve().parents[2]
URI = "s3://hllm-creator-models/1/models/m-abc/artifacts/bundle"


def _base(name: str) -> dict:
    return yaml.safe_load((ROOT / "manifests" / "base" / f"inferenceservice-{name}.yaml").read_text())


@pytest.mark.parametrize("name", R.SERVICES)
def test_patches_validate_alone_and_merged_onto_the_base_manifest(name):
    base = _base(name)
    R.validate_isvc(base)
    canary = R.canary_patch(name, URI, 10, "hllm-creator")
    assert canary["spec"] == {"predictor": {"canaryTrafficPercent": 10, "model": {
        "modelFormat": {"name": "hllm-creator"}, "storageUri": URI}}}
    R.validate_isvc(canary)
    live = R.merge_patch(base, canary)
    R.validate_isvc(live)
    # the canary changes only the traffic split and the storage: runtime, resources, security stay
    assert live["spec"]["predictor"]["model"]["runtime"] == base["spec"]["predictor"]["model"]["runtime"]
    assert live["spec"]["predictor"]["model"]["resources"] == base["spec"]["predictor"]["model"]["resources"]
    done = R.merge_patch(live, R.complete_patch(name))
    R.validate_isvc(done)
    assert done["spec"]["predictor"]["canaryTrafficPercent"] == 100
    back = R.merge_patch(live, R.rollback_patch(name, "s3://old/bundle"))
    R.validate_isvc(back)
    assert back["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert back["spec"]["predictor"]["model"]["storageUri"] == "s3://old/bundle"
    assert R.rollback_patch(name)["spec"] == {"predictor": {"canaryTrafficPercent": 0}}


def test_validation_refuses_what_kserve_would_not_take():
    good = R.canary_patch("predictor", URI, 25)
    cases = {
        "misspelled": (["spec", "predictor"], "canaryTrafficPercnt", 5, "unknown field"),
        "string percent": (["spec", "predictor"], "canaryTrafficPercent", "25", "expected int"),
        "over 100": (["spec", "predictor"], "canaryTrafficPercent", 150, "must be 0..100"),
        "model field": (["spec", "predictor", "model"], "storageURI", URI, "unknown field"),
    }
    for path, key, val, msg in cases.values():
        bad = copy.deepcopy(good)
        d = bad
        for p in path:
            d = d[p]
        d[key] = val
        with pytest.raises(ValueError, match=msg):
            R.validate_isvc(bad)
    with pytest.raises(ValueError, match="1..99"):
        R.canary_patch("predictor", URI, 100)
    with pytest.raises(ValueError, match="URI"):
        R.canary_patch("predictor", "bucket/path", 10)
    with pytest.raises(ValueError, match="apiVersion"):
        R.validate_isvc({**good, "apiVersion": "serving.kserve.io/v1alpha1"})


def test_gpu_overlay_documents_the_canary_flow():
    text = (ROOT / "manifests" / "overlays" / "gpu" / "kustomization.yaml").read_text()
    for s in ("promote --rollout canary", "--rollout complete", "--rollback", "Serverless"):
        assert s in text


def _register(tmp_path, tag, ci_low):
    from hllm_creator import tracking

    bundle = tmp_path / f"bundle-{tag}"
    (bundle / "model").mkdir(parents=True)
    (bundle / "bundle.json").write_text(json.dumps({"bundle_id": tag}))
    with tracking.parent_run(f"p-{tag}"):
        with tracking.step_run("train", tags={"standin_data": "false"}):
            pass
        with tracking.step_run("gsb-eval"):
            tracking.log_metrics({"gsb_ci_low": ci_low, "gsb_judge_failure_rate": 0.0})
        with tracking.step_run("publish"):
            mi = tracking.register_bundle(bundle, {"bundle_id": tag})
    return str(mi.registered_model_version)


def test_rollout_alias_flow(tmp_path, monkeypatch):
    """canary: gate + alias canary (champion unchanged); complete: champion moves, previous kept;
    rollback: canary alias gone, storage back to the champion's bundle; a refused gate patches nothing.
    The cluster is a FAKE (no Kubernetes here): ``apply_patches`` records the patches it is given; a
    dry run (issue 28) computes the same patches and moves no alias."""
    from hllm_creator import tracking
    from hllm_creator.publish.commands import rollout
    from hllm_creator.tracking.mlflow_utils import _version_for

    applied: list = []
    monkeypatch.setattr(R, "apply_patches", lambda patches, ns: applied.extend(patches) or [])
    pol = tracking.PromotePolicy()
    kw = dict(percent=10, namespace="hllm-creator", storage_uri=None, dry_run=False, services=["predictor", "creative"],
              policy=pol, force=False)
    v1 = _register(tmp_path, "one", 0.1)
    dry = rollout("canary", candidate="candidate", **{**kw, "dry_run": True})
    assert dry["gate"]["would_promote"] and not dry["gate"]["promoted"] and not dry["applied"] and not applied
    with pytest.raises(Exception):
        _version_for("canary")  # the dry run moved nothing
    out = rollout("canary", candidate="candidate", **kw)
    assert out["patches"] == dry["patches"] and applied == out["patches"]
    assert out["gate"]["promoted"] and out["version"] == v1 and out["applied"]
    assert out["storage_uri"] == tracking.version_storage_uri(v1) and out["storage_uri"].endswith("/artifacts/bundle-one")
    assert [p["spec"]["predictor"]["canaryTrafficPercent"] for p in out["patches"]] == [10, 10]
    assert str(_version_for("canary").version) == v1
    out = rollout("complete", candidate="candidate", **kw)
    assert str(_version_for("champion").version) == v1
    v2 = _register(tmp_path, "two", 0.2)
    out = rollout("canary", candidate="candidate", **{**kw, "percent": 20})
    assert out["version"] == v2 and str(_version_for("champion").version) == v1
    out = rollout("rollback", candidate="candidate", **kw)
    assert out["storage_uri"] == tracking.version_storage_uri(v1)
    assert [p["spec"]["predictor"]["canaryTrafficPercent"] for p in out["patches"]] == [0, 0]
    with pytest.raises(Exception):
        _version_for("canary")
    # a candidate that does not beat the champion never reaches traffic
    _register(tmp_path, "three", 0.05)
    out = rollout("canary", candidate="candidate", **kw)
    assert not out["gate"]["promoted"] and "patches" not in out and out["applied"] is False
    # complete promotes v2 after a fresh canary; the old champion is kept as `previous`
    rollout("canary", candidate=v2, **{**kw, "percent": 50})
    rollout("complete", candidate="candidate", **kw)
    assert str(_version_for("champion").version) == v2 and str(_version_for("previous").version) == v1
