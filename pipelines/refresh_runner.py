"""``hllm-creator refresh --kfp``: the refresh pipeline on the KFP local SubprocessRunner.

As the main runner (``hllm_creator_kfp.pipelines.local_runner``): one MLflow parent run (``refresh``; tags: the base
bundle, the feed, kfp_run_id), ``HLLM_PARENT_RUN_ID`` exported so every component's step run nests
under it, caching on, KFP's output in ``<run dir>/run.log``. With ``judge_samples`` and no endpoint
it starts the embedded LLM server for the judge, as the main runner does.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any


def run_refresh_local(*, bundle: str | Path, feed: str | Path, data_dir: str | Path, pipeline_root: str | Path,
                      llm_base_url: str | None = None, enable_caching: bool = True, **settings) -> dict[str, Any]:
    import kfp.local

    from hllm_creator import tracking
    from hllm_creator.serving.bundle import read_manifest
    from hllm_creator_kfp.pipelines.local_runner import _env, _latest_run_dir, llm_endpoint, materialize_metrics_outputs
    from hllm_creator_kfp.pipelines.presets import get_preset
    from hllm_creator_kfp.pipelines.refresh_pipeline import REFRESH_PIPELINE_NAME, build_refresh_pipeline

    t0 = time.time()
    root = Path(pipeline_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    man = read_manifest(bundle)
    kfp_run_id = f"local-refresh-{time.strftime('%Y%m%d-%H%M%S')}"
    os.environ["MLFLOW_TRACKING_URI"] = tracking.resolve_tracking_uri()
    tags = {"pipeline": "refresh", "kfp_run_id": kfp_run_id, "base_bundle_id": str(man.get("bundle_id")),
            "runner": "kfp.local.SubprocessRunner", "pipeline_root": str(root)}
    judge = int(settings.get("judge_samples") or 0)
    with tracking.parent_run("refresh", tags=tags) as parent:
        tracking.log_config({**settings, "feed": str(feed), "bundle": str(bundle), "data_dir": str(data_dir)})
        llm = llm_endpoint(get_preset("demo"), llm_base_url, root / "logs") if judge else \
            contextlib.nullcontext((llm_base_url or "", ""))
        with llm as (url, model), _env(HLLM_PARENT_RUN_ID=parent.info.run_id, HLLM_KFP_RUN_ID=kfp_run_id,
                                       OPENAI_BASE_URL=url or None, OPENAI_API_KEY=os.environ.get("OPENAI_API_KEY",
                                                                                                   "none")):
            kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
                           enable_caching=enable_caching)
            materialize_metrics_outputs()
            pipe = build_refresh_pipeline(**settings)
            started = time.time()
            log_path = root / "logs" / f"{kfp_run_id}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            buf = io.StringIO()
            try:
                with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
                    task = pipe(bundle_uri=str(Path(bundle).resolve()), feed_uri=str(Path(feed).resolve()),
                                dataset_uri=str(Path(data_dir).resolve()), llm_base_url=url or "",
                                llm_model=model or "")
            finally:
                log_path.write_text(buf.getvalue())
        run_dir = _latest_run_dir(root, REFRESH_PIPELINE_NAME, started)
        outs = dict(task.outputs) if isinstance(task.outputs, dict) else {}
        bundle_art = outs.get("refresh_publish__bundle")
        new_bundle = Path(bundle_art.path) if bundle_art is not None else None
        res: dict[str, Any] = {"bundle": str(new_bundle), "run_dir": str(run_dir), "log": str(log_path),
                               "parent_run_id": parent.info.run_id, "kfp_run_id": kfp_run_id}
        if new_bundle is not None and (new_bundle / "bundle.json").exists():
            nm = read_manifest(new_bundle)
            res["bundle_id"] = nm["bundle_id"]
            res["version"] = (bundle_art.metadata or {}).get("model_version") or None
            tracking.mlflow_utils._mlflow().MlflowClient().set_tag(
                parent.info.run_id, "dataset_hash", nm.get("dataset_hash", ""))
        pers = outs.get("personalization_eval__report")
        if pers is not None and (Path(pers.path) / "personalization.json").exists():
            res["personalization"] = json.loads((Path(pers.path) / "personalization.json").read_text()).get("metrics")
        res["total_seconds"] = round(time.time() - t0, 1)
        tracking.log_metrics({"refresh_seconds": res["total_seconds"]})
        tracking.log_json(res, "refresh_outputs")
    return res
