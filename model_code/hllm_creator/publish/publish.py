"""``hllm-creator publish``: a run's outputs -> one checked serving bundle -> one MLflow model version."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hllm_creator import tracking
from hllm_creator.publish.bundle import BundleError, BundleInputs, assemble_bundle, check_bundle
from hllm_creator.tracking.mlflow_utils import _mlflow

log = logging.getLogger(__name__)

FIGURE_PREFIXES = ("gsb_", "pers_")


def pipeline_run_of(inp: BundleInputs) -> str | None:
    """The pipeline's parent MLflow run: given, ``$HLLM_PARENT_RUN_ID``, or the train run's parent."""
    if inp.mlflow_run_id:
        return inp.mlflow_run_id
    env = os.environ.get("HLLM_PARENT_RUN_ID")
    if env:
        return env
    if inp.train_run_id:
        try:
            run = _mlflow().MlflowClient().get_run(inp.train_run_id)
        except Exception as e:  # noqa: BLE001 - a run dir copied from another store
            log.warning("train run %s not found in %s (%s): the bundle is registered without its pipeline run",
                        inp.train_run_id, _mlflow().get_tracking_uri(), e)
            return None
        return run.data.tags.get("mlflow.parentRunId") or None
    return None


def _run_info(parent: str | None) -> dict[str, Any]:
    """Tags (dataset + config hash, preset, KFP run id) and figures (gsb_*, pers_*) of the pipeline run."""
    if not parent:
        return {}

    client = _mlflow().MlflowClient()
    run = client.get_run(parent)
    t = run.data.tags
    figs = {k: v for k, v in run.data.metrics.items() if k.startswith(FIGURE_PREFIXES)}
    # the step runs (gsb-eval, personalization) hold them when the runner did not copy them up
    for s in client.search_runs([run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'"):
        for k, v in s.data.metrics.items():
            if k.startswith(FIGURE_PREFIXES):
                figs.setdefault(k, v)
    return {"config_hash": t.get("config_hash"), "pipeline_dataset_hash": t.get("dataset_hash"),
            "preset": t.get("preset"), "kfp_run_id": t.get("kfp_run_id"), "git_sha": t.get("git_sha"),
            "run_metrics": dict(sorted(figs.items()))}


def publish(inp: BundleInputs, out: str | Path, *, register: bool = True, check: bool = True,
            aliases: tuple[str, ...] = ("candidate",), check_creative: bool = True,
            reuse_embeddings: list[str | Path] = (), run_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Assemble the bundle of ``inp`` at ``out``, load it with the real predictor and creative
    models, and register it (alias ``candidate``) in a ``publish`` step run nested under the
    pipeline run. Nothing is registered when the check fails. Returns the manifest, the check's
    answer and the registered version."""

    parent = pipeline_run_of(inp)
    inp.mlflow_run_id = parent
    info = {**_run_info(parent), **(run_info or {})}
    manifest = assemble_bundle(inp, out, run_info=info, item_embeddings=True, reuse_embeddings=reuse_embeddings)
    if info.get("pipeline_dataset_hash") and info["pipeline_dataset_hash"] != manifest["dataset_hash"]:
        raise BundleError(f"the item catalog's dataset ({manifest['dataset_hash']}) is not the run's "
                          f"({info['pipeline_dataset_hash']}, pipeline run {parent}): give the run's --data dir")
    res: dict[str, Any] = {"bundle": str(Path(out).resolve()), "manifest": manifest}
    if check:
        try:
            res["check"] = check_bundle(out, creative=check_creative)
        except Exception as e:
            raise BundleError(f"bundle {out} does not load with the serving loaders: {e}") from e
        log.info("bundle check: %s", {k: v for k, v in res["check"].items() if not k.endswith("_sample")})
    if register:
        params = {"bundle_id": manifest["bundle_id"], "dataset_hash": manifest["dataset_hash"], "checked": check,
                  "check_creative": check_creative, "aliases": ",".join(aliases)}
        with tracking.step_run("publish", params, parent_run_id=parent,
                               tags={"bundle_id": manifest["bundle_id"]}) as run:
            tracking.log_json(manifest, "bundle.json")
            figs = {"bundle_files": len(manifest["files"]),
                    "bundle_mb": sum(f["bytes"] for f in manifest["files"].values()) / 2**20}
            if "check" in res:
                figs.update({"bundle_items": res["check"]["items"], "bundle_clusters": res["check"]["clusters"],
                             "bundle_creatives": res["check"]["creatives"],
                             "bundle_check_seconds": res["check"]["seconds"]})
            em = manifest.get("item_embeddings") or {}
            figs.update({f"bundle_item_emb_{k}": em[k] for k in ("count", "encoded", "reused_from_bundle",
                                                                  "seconds") if k in em})
            tracking.log_metrics(figs)
            mi = tracking.register_bundle(out, manifest, aliases=aliases)
            res.update({"registered": tracking.MODEL_NAME, "version": str(mi.registered_model_version),
                        "aliases": list(aliases), "publish_run_id": run.info.run_id, "pipeline_run_id": parent})
    return res
