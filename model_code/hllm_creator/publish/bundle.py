"""One serving bundle per pipeline run: assemble, check by loading, register.

The bundle's layout and manifest are ``serving.bundle``'s (what a server reads). It is written to
a temp dir beside the target and renamed (``io.atomic_dir``): a bundle dir is complete or absent.
:func:`check_bundle` loads it with the real serving loaders (the predictor and the creative model,
one pass each) before :func:`publish` registers it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hllm_creator.data.schema import dataset_fingerprint
from hllm_creator.infer.common import ASSIGNMENTS, CENTROIDS, CLUSTER_META, CREATIVES, MATCHES, MEDOIDS, MEMBER_MEANS
from hllm_creator.io import atomic_dir, sha256_file
from hllm_creator.model import HLLMCreator
from hllm_creator.publish.ad_embeddings import write_item_embeddings
from hllm_creator.serving.bundle import ARTIFACTS, BUNDLE_SCHEMA, ITEMS, MANIFEST, MODEL, BundleError, bundle_paths
from hllm_creator.serving.creative import Creative
from hllm_creator.serving.loading import load_assets
from hllm_creator.serving.predictor import Predictor
from hllm_creator.serving.schemas import CreativeInstance, PredictorInstance

log = logging.getLogger(__name__)

# file -> (source step output, required)
# assignments.parquet: a refresh (``hllm-creator refresh``) matches new ads against these clusters
CLUSTER_FILES = {CENTROIDS: True, CLUSTER_META: True, MEMBER_MEANS: False, MEDOIDS: False, ASSIGNMENTS: False}
MATCH_FILES = {MATCHES: True, "match_meta.json": False, "member_id_parts.npy": False}  # last: hybrid predictor
CREATIVE_FILES = {CREATIVES: True, "generate_meta.json": False}

# KFP local run dir: <run_dir>/<task>/<output> (how KFP 2.17's local runner lays out its outputs)
RUN_DIR_LAYOUT = {
    "model": "train/model",
    "clusters": "cluster/clusters",
    "matches": "match/matches",
    "creatives": "generate/creatives",
    "gsb": "gsb-eval/report",
    "personalization": "personalization-eval/report",
}


@dataclass
class BundleInputs:
    """Where a run's outputs are. ``gsb`` / ``personalization``: report dirs (optional)."""

    model: Path
    clusters: Path
    matches: Path
    creatives: Path
    data_dir: Path | None = None          # the dataset dir (its items.parquet is the catalog)
    gsb: Path | None = None
    personalization: Path | None = None
    run_dir: Path | None = None
    mlflow_run_id: str | None = None      # the pipeline's parent MLflow run
    train_run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def inputs_from_run_dir(run_dir: str | Path, data_dir: str | Path | None = None) -> BundleInputs:
    """The outputs of a KFP (local) run dir, ``<run_dir>/<task>/<output>``; a missing one is an error
    that names the path it expected."""
    rd = Path(run_dir).expanduser().resolve()
    if not rd.is_dir():
        raise BundleError(f"run dir {rd} is not a directory")
    paths = {k: rd / v for k, v in RUN_DIR_LAYOUT.items()}
    missing = [f"{k} ({p})" for k, p in paths.items() if k not in ("gsb", "personalization") and not p.is_dir()]
    if missing:
        raise BundleError(f"run dir {rd} lacks the step outputs: {', '.join(missing)}; a run dir is "
                          f"<pipeline_root>/<pipeline>-<timestamp> with one folder per task")
    train_meta = {}
    for a in (_json(rd / "train" / "executor_output.json").get("artifacts", {}).get("model", {})
              .get("artifacts", [])):
        train_meta = a.get("metadata") or {}
    return BundleInputs(model=paths["model"], clusters=paths["clusters"], matches=paths["matches"],
                        creatives=paths["creatives"], data_dir=Path(data_dir) if data_dir else None,
                        gsb=paths["gsb"] if paths["gsb"].is_dir() else None,
                        personalization=paths["personalization"] if paths["personalization"].is_dir() else None,
                        run_dir=rd, train_run_id=train_meta.get("mlflow_run_id") or None,
                        extra={"standin_data": train_meta.get("standin_data"), "model_hash": train_meta.get("model_hash")})


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link when src and dst share a filesystem (a run's model can be GBs), else a copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _copy_tree(src: Path, dst: Path) -> None:
    for p in sorted(src.rglob("*")):
        if p.is_file():
            _link_or_copy(p, dst / p.relative_to(src))


def _figures(inp: BundleInputs) -> dict[str, Any]:
    """GSB summary + personalization figures from the report dirs (numbers only)."""
    out: dict[str, Any] = {}
    if inp.gsb is not None:
        s = _json(inp.gsb / "gsb_summary.json")
        out["gsb"] = {k: v for k, v in s.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if inp.personalization is not None:
        s = _json(inp.personalization / "personalization.json")
        flat = {}
        for k, v in s.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                flat[k] = v
            elif isinstance(v, dict):
                flat.update({f"{k}.{kk}": vv for kk, vv in v.items()
                             if isinstance(vv, (int, float)) and not isinstance(vv, bool)})
        out["personalization"] = flat
    return out


def assemble_bundle(inp: BundleInputs, out: str | Path, *, run_info: dict[str, Any] | None = None,
                    item_embeddings: bool = False, reuse_embeddings: list[str | Path] = ()) -> dict:
    """Write the bundle of ``inp`` to ``out`` (atomically) and return its manifest.

    ``item_embeddings``: also compute the catalog's item embeddings with the bundle's model
    (``publish.ad_embeddings``: reused from ``reuse_embeddings`` bundles' artifacts, the model dir and
    the item cache first), so a server never encodes the catalog at load."""

    out = Path(out).expanduser().resolve()
    if not (inp.model / "hllm_config.json").is_file():
        raise BundleError(f"{inp.model}: not a model dir (no hllm_config.json); expected the train step's output")
    plan: list[tuple[Path, str]] = []
    missing = []
    for src_dir, files in ((inp.clusters, CLUSTER_FILES), (inp.matches, MATCH_FILES),
                           (inp.creatives, CREATIVE_FILES)):
        for name, required in files.items():
            p = Path(src_dir) / name
            if p.is_file():
                plan.append((p, name))
            elif required:
                missing.append(str(p))
    items = None
    if inp.data_dir is not None:
        items = Path(inp.data_dir) / ITEMS if Path(inp.data_dir).is_dir() else Path(inp.data_dir)
        if not items.is_file():
            missing.append(str(items))
    if missing:
        raise BundleError(f"cannot assemble a serving bundle: missing {', '.join(missing)}")
    if items is None:
        raise BundleError("no item catalog: give the run's dataset dir (--data DIR holding items.parquet)")
    ds_name, ds_hash = dataset_fingerprint(items.parent)
    t0 = time.time()
    with atomic_dir(out) as tmp:
        _copy_tree(inp.model, tmp / MODEL)
        for src, name in plan:
            _link_or_copy(src, tmp / ARTIFACTS / name)
        _link_or_copy(items, tmp / ARTIFACTS / ITEMS)
        emb_meta = None
        if item_embeddings:
            import pandas as pd

            model = HLLMCreator.load(tmp / MODEL)
            emb_meta = write_item_embeddings(model, pd.read_parquet(items), tmp / ARTIFACTS, model_dir=tmp / MODEL,
                                             reuse=list(reuse_embeddings))
            del model
        files = {}
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                files[str(p.relative_to(tmp))] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        bundle_id = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
        model_hash = _json(inp.model / "model_hash.json").get("model_hash") or inp.extra.get("model_hash")
        manifest = {
            "schema": BUNDLE_SCHEMA,
            "bundle_id": bundle_id,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "run_dir": str(inp.run_dir) if inp.run_dir else None,
            "mlflow_run_id": inp.mlflow_run_id,
            "train_run_id": inp.train_run_id,
            "model_hash": model_hash,
            "dataset": ds_name,
            "dataset_hash": ds_hash,
            # the users' clicks the clusters were made of: a refresh checks its --data against it
            "interactions_sha256": (_json(items.parent / "manifest.json").get("sha256") or {}).get(
                "interactions.parquet"),
            "figures": _figures(inp),
            "item_embeddings": emb_meta,
            "files": files,
            **{k: v for k, v in (run_info or {}).items() if v is not None},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    log.info("bundle %s written to %s in %.1fs (%d files)", bundle_id, out, time.time() - t0, len(files))
    return manifest


def check_bundle(bundle: str | Path, *, creative: bool = True) -> dict[str, Any]:
    """Load the bundle with the real serving loaders and answer one request with each model.

    The predictor model must find clusters, matches and creatives (it refuses to turn ready
    otherwise), answer one known user with a catalog ad, and the creative model must generate
    once. Returns what was loaded (counts) and the sample answers.
    """

    model_dir, art, items = bundle_paths(bundle)
    t0 = time.time()
    assets = load_assets(model_dir, art, items, require=Predictor.required_artifacts)
    pred = Predictor("predictor", model_dir=str(model_dir))
    pred.assets = assets
    some = next(iter(assets.creatives)) if assets.creatives else None
    ad = some[0] if some else next(iter(assets.items))
    hist = [i for i in list(assets.items)[:3] if i != ad] or [ad]
    p = pred.run_batch([PredictorInstance(user_history=hist, candidate_ad_ids=[ad])])[0]
    out = {"items": len(assets.items), "clusters": int(len(assets.centroids)), "selected_pairs": len(assets.selected),
           "creatives": len(assets.creatives), "predictor_sample": p}
    if creative:
        cre = Creative("creative", model_dir=str(model_dir))
        cre.assets = assets
        row = assets.items[ad]
        c = cre.run_batch([CreativeInstance(user_history=hist, ad={"title": str(row["title"])},
                                            max_new_tokens=4)])[0]
        out["creative_sample"] = {k: c[k] for k in ("title", "cluster_id", "grounded", "personalized")}
    out["seconds"] = round(time.time() - t0, 1)
    return out
