"""gsb_eval component: python_func call and a KFP local-runner run (the --counts path needs no judge;
the judge path runs against the real embedded SmolLM2 server in the integration test)."""

import json
from pathlib import Path

import pytest
from helpers import kfp_local
from kfp import dsl

from hllm_creator_kfp.components.gsb_eval.component import gsb_eval


def test_python_func_counts(tmp_path):
    report, metrics = dsl.Dataset(uri=str(tmp_path / "r")), dsl.Metrics(uri=str(tmp_path / "m.json"))
    gsb_eval.python_func(report=report, metrics=metrics, counts="353,91,56", bootstrap=500)
    assert round(100 * report.metadata["adv"], 1) == 59.4 and report.metadata["n"] == 500
    assert metrics.metadata["G"] == 353.0 and metrics.metadata["ci_low"] < 0.594 < metrics.metadata["ci_high"]
    assert json.loads((tmp_path / "r" / "gsb_summary.json").read_text())["adv_pct"] == 59.4


def test_local_runner_counts(tmp_path):
    kfp_local(tmp_path)

    @dsl.pipeline(name="gsb-counts-test")
    def pipe(counts: str):
        gsb_eval(counts=counts, bootstrap=300)

    pipe(counts="353,91,56")
    found = list(Path(tmp_path / "kfp").rglob("gsb_summary.json"))
    assert len(found) == 1 and json.loads(found[0].read_text())["adv_pct"] == 59.4


@pytest.mark.integration
def test_local_runner_judge(tmp_path, llm_server):
    import pandas as pd

    base_url, model = llm_server
    samples = tmp_path / "samples"
    samples.mkdir()
    pd.DataFrame({"user_id": ["u1"], "original_title": ["Glass Beaker 250 ml"],
                  "original_description": ["Borosilicate glass beaker, 250 ml."],
                  "title_a": ["Glass Beaker 250 ml for Your Lab"], "title_b": ["Glass Beaker 250 ml"],
                  "title_list": [["Pipette Set 10 ml"]], "user_profile": ['{"description": "lab work"}']}
                 ).to_parquet(samples / "samples.parquet")
    kfp_local(tmp_path)

    @dsl.pipeline(name="gsb-judge-test")
    def pipe(uri: str, base_url: str, model: str):
        s = dsl.importer(artifact_uri=uri, artifact_class=dsl.Dataset, reimport=False)
        gsb_eval(samples=s.output, base_url=base_url, model=model, judge_max_tokens=40,
                 cache_path=str(tmp_path / "cache.sqlite"))

    pipe(uri=str(samples), base_url=base_url, model=model)
    v = pd.read_parquet(next(Path(tmp_path / "kfp").rglob("gsb.parquet")))
    assert {"sample", "verdict_ab", "verdict_ba", "final"} <= set(v.columns)
    assert len(v) == 1 and v.loc[0, "final"] in ("G", "S", "B")
