"""The refresh pipeline compiles to KFP YAML with no train step, and its match reads the checked feed."""

from __future__ import annotations

import yaml


def test_refresh_pipeline_compiles_without_training(tmp_path):
    from kfp import compiler

    from hllm_creator_kfp.pipelines.refresh_pipeline import build_refresh_pipeline

    for judge in (0, 4):
        f = tmp_path / f"refresh{judge}.yaml"
        compiler.Compiler().compile(build_refresh_pipeline(judge_samples=judge, local=False), str(f))
        spec = yaml.safe_load(f.read_text())
        tasks = spec["root"]["dag"]["tasks"]
        names = {t for t in tasks if not t.startswith("importer")}
        assert not any("train" in t or "embed" in t or "cluster" in t.split("-")[0] for t in names), names
        assert {"refresh-prepare", "match", "generate", "personalization-eval", "refresh-publish"} <= names
        assert ("gsb-eval" in names) == bool(judge)
        m = tasks["match"]["inputs"]["artifacts"]
        assert m["feed"]["taskOutputArtifact"] == {"outputArtifactKey": "checked_feed",
                                                   "producerTask": "refresh-prepare"}
        assert set(spec["root"]["inputDefinitions"]["parameters"]) >= {"bundle_uri", "feed_uri", "dataset_uri"}
