"""benchmarks/quality/rec_report.py: both of the predictor's tables (warm recommendation, cold start)
in ONE MLflow run named ``recommendation`` (the embedded sqlite store under a temporary work dir)."""

from __future__ import annotations

import mlflow
import pytest

from benchmarks.quality import rec_report


def _m(mean, lo, hi, **kw):
    return {"mean": mean, "ci": [lo, hi], **kw}


WARM = {"strongest_baseline": "sasrec", "n_users": 100, "data": "D",
        "rankers": {"sasrec": {"recall@10": _m(0.11, 0.10, 0.12), "ndcg@10": _m(0.08, 0.07, 0.09),
                               "mrr": _m(0.07, 0.06, 0.08), "config": "x"},
                    "hllm": {"recall@10": _m(0.12, 0.11, 0.13), "ndcg@10": _m(0.082, 0.077, 0.087),
                             "mrr": _m(0.074, 0.07, 0.078)}},
        "hllm_minus": {"sasrec": {"recall@10": {"diff": 0.0087, "diff_ci": [0.003, 0.015]}}},
        "hllm_refit_minus_sasrec_refit": {"ndcg@10": {"diff": -0.003, "diff_ci": [-0.007, 0.001]}}}
COLD = {"best_content": "content_fusion", "n_ads": 5, "n_users": 50,
        "split": {"params": {"share": 0.1, "min_clicks": 5}},
        "rankers": {"content_fusion": {"seconds": 0.9, "recall@100": _m(0.23, 0.21, 0.25)},
                    "hllm": {"seconds": 60.0, "model_dir": "M",
                             "recall@100": _m(0.13, 0.12, 0.15, diff=-0.10, diff_ci=[-0.12, -0.08])}}}


def test_flat_metrics_keep_means_cis_and_paired_differences():
    w = rec_report.warm_metrics(WARM)
    assert w["warm_hllm_recall_at_10"] == 0.12 and w["warm_hllm_recall_at_10_ci_lo"] == 0.11
    assert w["warm_hllm_minus_sasrec_recall_at_10"] == 0.0087
    assert w["warm_hllm_minus_sasrec_recall_at_10_ci_hi"] == 0.015
    assert w["warm_hllm_refit_minus_sasrec_refit_ndcg_at_10_ci_lo"] == -0.007
    assert not any("config" in k for k in w)
    c = rec_report.cold_metrics(COLD)
    assert c["cold_hllm_recall_at_100"] == 0.13 and c["cold_hllm_seconds"] == 60.0
    assert c["cold_hllm_minus_best_content_recall_at_100"] == -0.10
    assert c["cold_hllm_minus_best_content_recall_at_100_ci_lo"] == -0.12
    assert "cold_content_fusion_minus_best_content_recall_at_100" not in c


def test_one_run_holds_both_tables(monkeypatch, tmp_path):
    from hllm_creator import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("HLLM_PARENT_RUN_ID", raising=False)
    monkeypatch.setenv("HLLM_WORKDIR", str(tmp_path / "wd"))
    run_id = rec_report.log_run(WARM, COLD, params={"model": "F"})
    run = mlflow.MlflowClient(tracking_uri=tracking.resolve_tracking_uri()).get_run(run_id)
    assert run.info.run_name == "recommendation" and run.data.tags["tables"] == "warm+cold"
    assert run.data.metrics["warm_hllm_recall_at_10"] == pytest.approx(0.12)
    assert run.data.metrics["cold_hllm_minus_best_content_recall_at_100"] == pytest.approx(-0.10)
    assert run.data.params["cold_best_content"] == "content_fusion" and run.data.params["model"] == "F"
    assert run.data.params["warm_strongest_baseline"] == "sasrec"
    arts = {p.name for p in (tmp_path / "wd" / "mlartifacts").rglob("*") if p.is_file()}
    assert {"recommendation.json", "cold_start.json", "warm_table.json", "cold_table.json",
            "recall_with_ci.png"} <= arts
    # one table alone is a run too; none is an error
    assert mlflow.MlflowClient(tracking_uri=tracking.resolve_tracking_uri()).get_run(
        rec_report.log_run(None, COLD)).data.tags["tables"] == "cold"
    with pytest.raises(ValueError, match="warm table, the cold table or both"):
        rec_report.log_run(None, None)


def test_cli_names_a_missing_file(tmp_path):
    with pytest.raises(SystemExit, match="no such file"):
        rec_report.main(["--warm", str(tmp_path / "nope.json"), "--cold", ""])
