"""The whole pipeline on tiny models through the real KFP local SubprocessRunner, with the teacher
and judge served by the project's real OpenAI-compatible server (SmolLM2, a few tokens), and the
real MLflow store; then a failing step and a re-run that resumes from the KFP cache.

One test, three runs into one pipeline root, one LLM server (started by the runner's own
``llm_endpoint``) for all three:
1. the full DAG: one parent run with eight nested step runs (embed: one per shard), metrics and
   artifacts, the model registered as ``candidate``, creatives.parquet and the GSB summary; and
   every step's outputs the same as the recorded ones (``data/tiny_pipeline_digest.json``): structure,
   strings and integers exactly, floats within ``pipeline_digest.ATOL``/``RTOL`` (thread counts and
   machines change the order of float sums, not the result). The teacher's and judge's replies come
   from the recorded reply cache, so only the pipeline's code decides the outputs. After an intended
   change of the outputs, re-record: ``.venv/bin/python tests/pipeline_digest.py --record``;
2. the same run with a bad ``generate`` value: fails at generate, every upstream step a cache hit;
3. the value fixed: generate, gsb-eval and personalization-eval run, every upstream step a cache hit again.
"""

from __future__ import annotations

import pandas as pd
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS = {"dataset-construct", "train", "embed", "cluster", "match", "generate", "gsb-eval", "personalization",
         "publish"}


def _children(client, parent_id):
    p = client.get_run(parent_id)
    return client.search_runs([p.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")


def _step_names(runs):
    # tolerate either spelling of the step tag (dataset_construct / dataset-construct)
    return {r.data.tags["step"].replace("_", "-") for r in runs}


from pipeline_digest import RECORDED_PORT  # noqa: E402  the LLM server's port when the replies were recorded


def test_tiny_pipeline_end_to_end_then_fail_and_resume(tmp_path, bundled_dataset, monkeypatch):
    import json
    import os
    import shutil
    import warnings
    from pathlib import Path

    import mlflow
    from helpers import small_dataset
    from pipeline_digest import Deviation, compare, digest

    from hllm_creator import tracking
    from hllm_creator_kfp.pipelines.local_runner import llm_endpoint, run_local
    from hllm_creator_kfp.pipelines.presets import get_preset

    root = tmp_path / "pipeline_root"
    src = getattr(bundled_dataset, "path", bundled_dataset)
    data = small_dataset(tmp_path / "data", n_users=40, source=src).path  # a real slice of the bundled data
    preset = get_preset("tiny")
    client = mlflow.MlflowClient(tracking_uri=tracking.resolve_tracking_uri())
    golden = Path(__file__).parent / "data" / "tiny_pipeline_digest.json"
    cache = Path(os.environ["HLLM_WORKDIR"]) / "llm_cache" / "replies.sqlite"
    cache.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(golden.with_suffix(".replies.sqlite"), cache)  # the recorded teacher/judge replies
    monkeypatch.setenv("HLLM_LLM_PORT", str(RECORDED_PORT))
    with llm_endpoint(preset, None, tmp_path / "logs") as (url, _model):
        # 1. the whole DAG
        res = run_local(preset, pipeline_root=root, data_dir=data, llm_base_url=url, run_name="tiny-ci")
        # the same step outputs as before the move (the replies are keyed by the endpoint's URL)
        if url.startswith(f"http://127.0.0.1:{RECORDED_PORT}/"):
            dev = Deviation()
            changed = compare(json.loads(golden.read_text()), digest(res.run_dir), dev)
            # the steps' torch threads: OMP_NUM_THREADS, which the KFP subprocesses inherit (torch's default
            # when unset: the cores); `OMP_NUM_THREADS=1 make test PYTEST_ARGS=tests/integration/test_pipeline.py`
            threads = os.environ.get("OMP_NUM_THREADS", "unset")
            print(f"digest (OMP_NUM_THREADS={threads}): largest float difference {dev.abs:.3g} "
                  f"({dev.ratio:.2f} of the tolerance) at {dev.where}")
            assert not changed, ("step outputs changed (after an intended change: .venv/bin/python "
                                 "tests/pipeline_digest.py --record):\n" + "\n".join(changed[:40]))
        else:
            warnings.warn(f"LLM server on {url}, not the recorded port: step outputs not compared", stacklevel=1)
        parent = client.get_run(res.parent_run_id)
        assert parent.info.status == "FINISHED"
        for tag in ("kfp_run_id", "git_sha", "dataset_hash", "config_hash"):
            assert parent.data.tags.get(tag), tag
        kids = _children(client, res.parent_run_id)
        assert _step_names(kids) == STEPS, _step_names(kids)
        assert sum(r.data.tags["step"] == "embed" for r in kids) == preset.n_embed_shards
        for r in kids:
            assert r.info.status == "FINISHED" and r.data.params, r.data.tags["step"]
        by_step = {r.data.tags["step"].replace("_", "-"): r for r in kids}
        assert by_step["train"].data.metrics and by_step["cluster"].data.metrics and by_step["gsb-eval"].data.metrics
        assert any(a.path.endswith(".png") for a in client.list_artifacts(by_step["cluster"].info.run_id))
        # the run registers one version, its serving bundle (publish), not the bare model dir (train)
        cand = client.get_model_version_by_alias(tracking.MODEL_NAME, "candidate")
        assert cand.run_id == by_step["publish"].info.run_id
        assert len(client.search_model_versions(f"name = '{tracking.MODEL_NAME}'")) == 1
        assert Path(res.summary["paths"]["publish__bundle"], "bundle.json").exists()
        # what `hllm-creator run` prints: creatives, GSB summary, titles side by side
        creatives = pd.read_parquet(res.summary["creatives"])
        assert len(creatives) == res.summary["n_creatives"] > 0
        assert {"original_title", "llm_output", "grounded"} <= set(creatives.columns)
        assert res.summary["samples"] and res.summary.get("gsb")
        assert any(k.startswith("gsb") for k in client.get_run(res.parent_run_id).data.metrics)
        # the personalization step: its figures on the parent run, the closing summary's lines
        assert "pers_copy_rate" in client.get_run(res.parent_run_id).data.metrics
        assert res.summary["personalization"]["lines"][-1].startswith("  audience fit vs the original")

        # 2. a step fails: generate gets an invalid value; everything before it comes from the cache
        bad = get_preset("tiny", {"generate.batch_size": 0})
        with pytest.raises(RuntimeError, match="generate"):
            run_local(bad, pipeline_root=root, data_dir=data, llm_base_url=url, run_name="tiny-fail")
        run_dirs = sorted((p for p in root.glob("hllm-creator-*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
        fail_dir = run_dirs[-1]
        executed = {p.name for p in fail_dir.iterdir() if p.is_dir()}
        # cached tasks leave no folder in the new run's dir: only generate ran (and failed)
        assert "generate" in executed and not executed & {"train", "cluster", "match", "dataset-construct"}, executed
        failed = client.search_runs([parent.info.experiment_id], filter_string="attributes.run_name = 'tiny-fail'")[0]
        assert failed.info.status == "FAILED"
        assert _step_names(_children(client, failed.info.run_id)) <= {"generate"}

        # 3. fixed: resumes from the cache, only generate and gsb-eval run
        fixed = get_preset("tiny", {"generate.batch_size": 2})
        res3 = run_local(fixed, pipeline_root=root, data_dir=data, llm_base_url=url, run_name="tiny-resume")
        executed = {p.name for p in res3.run_dir.iterdir() if p.is_dir()}
        assert {"generate", "gsb-eval", "personalization-eval", "publish"} <= executed, executed
        assert not executed & {"train", "cluster", "match"}, executed
        assert _step_names(_children(client, res3.parent_run_id)) == {"generate", "gsb-eval", "personalization",
                                                                       "publish"}
        assert pd.read_parquet(res3.summary["creatives"]).shape[0] > 0
