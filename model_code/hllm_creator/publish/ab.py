"""The readout of the online A/B test of personalized titles (the assignment and the sink the
predictor writes to: ``serving.experiment``).

- :func:`ab_report`: CTR per variant (Wilson 95% CI), relative lift with a user-level bootstrap
  95% CI, logged to MLflow under the served model version, with a plot.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from hllm_creator import tracking
from hllm_creator.io import write_json
from hllm_creator.serving.experiment import CONTROL, EXPOSURES, FEEDBACK, PERSONALIZED, VARIANTS, read_events
from hllm_creator.stats import ratio_lift_ci

log = logging.getLogger(__name__)


def wilson(k: float, n: float, z: float = 1.959964) -> tuple[float, float]:
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return float(c - h), float(c + h)


def _frames(exposures: list[dict], feedback: list[dict], experiment: str | None):
    import pandas as pd

    ex = pd.DataFrame(exposures)
    if ex.empty:
        raise ValueError("no exposure events: nothing to read out")
    if experiment is not None:
        ex = ex[ex["experiment"] == experiment]
        if ex.empty:
            raise ValueError(f"no exposure events of experiment {experiment!r}")
    ex = ex.drop_duplicates("exposure_id")
    fb = pd.DataFrame(feedback)
    clicked = set()
    if not fb.empty:
        fb = fb[fb.get("event", "click") == "click"] if "event" in fb else fb
        clicked = set(fb["exposure_id"].dropna().astype(str))
    ex["click"] = ex["exposure_id"].astype(str).isin(clicked).astype(int)  # one click per exposure at most
    return ex


def ab_summary(ex, *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """CTR per variant (Wilson CI) and the relative lift personalized/control - 1 with a bootstrap CI
    that resamples users (a user's exposures are not independent)."""
    out: dict[str, Any] = {"variants": {}}
    per_user = {}
    for v in VARIANTS:
        d = ex[ex["variant"] == v]
        n, k = len(d), int(d["click"].sum())
        lo, hi = wilson(k, n)
        out["variants"][v] = {"exposures": n, "clicks": k, "users": int(d["user_id"].nunique()),
                              "ctr": k / n if n else float("nan"), "ctr_ci_low": lo, "ctr_ci_high": hi}
        g = d.groupby("user_id")["click"].agg(["sum", "count"])
        per_user[v] = (g["sum"].to_numpy(float), g["count"].to_numpy(float))
    p, c = out["variants"][PERSONALIZED], out["variants"][CONTROL]
    if not (p["exposures"] and c["exposures"]) or c["clicks"] == 0:
        out.update({"lift": float("nan"), "lift_ci_low": float("nan"), "lift_ci_high": float("nan"),
                    "note": "a variant has no exposures or control has no clicks: no lift"})
        return out
    lift = p["ctr"] / c["ctr"] - 1
    lo, hi = ratio_lift_ci(*per_user[PERSONALIZED], *per_user[CONTROL], n_boot=n_boot, seed=seed)
    out.update({"lift": float(lift), "lift_ci_low": float(lo), "lift_ci_high": float(hi),
                "ctr_diff": p["ctr"] - c["ctr"], "bootstrap": n_boot,
                "significant": bool(lo > 0 or hi < 0)})
    return out


def plot_summary(s: dict[str, Any], title: str = "A/B readout"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    vs = list(VARIANTS)
    ctr = [s["variants"][v]["ctr"] * 100 for v in vs]
    err = [[(s["variants"][v]["ctr"] - s["variants"][v]["ctr_ci_low"]) * 100 for v in vs],
           [(s["variants"][v]["ctr_ci_high"] - s["variants"][v]["ctr"]) * 100 for v in vs]]
    a1.bar(vs, ctr, yerr=err, capsize=6, color=["tab:orange", "tab:gray"])
    a1.set_ylabel("CTR (%)")
    a1.set_title("CTR per variant (95% CI)")
    for i, v in enumerate(vs):
        a1.text(i, 0, f"n={s['variants'][v]['exposures']}", ha="center", va="bottom", fontsize=8)
    lift = s.get("lift", float("nan"))
    if np.isfinite(lift):
        a2.errorbar([0], [lift * 100], yerr=[[(lift - s["lift_ci_low"]) * 100], [(s["lift_ci_high"] - lift) * 100]],
                    fmt="o", capsize=8)
    a2.axhline(0, color="k", lw=0.8)
    a2.set_xticks([])
    a2.set_ylabel("relative lift (%)")
    a2.set_title("personalized vs control (95% CI)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def ab_report(sink_dir: str | Path, *, experiment: str | None = None, model_version: str | None = None,
              log_to_mlflow: bool = True, out_dir: str | Path | None = None, n_boot: int = 2000,
              seed: int = 0) -> dict[str, Any]:
    """Read the sink, compute the readout, log it (run ``ab-report``, tagged with the model version;
    the version gets tags ``ab_lift`` ...), write ``ab_report.json`` + ``ab_report.png`` to ``out_dir``."""
    exposures, torn_e = read_events(sink_dir, EXPOSURES)
    feedback, torn_f = read_events(sink_dir, FEEDBACK)
    ex = _frames(exposures, feedback, experiment)
    if model_version is not None:  # a canary and its champion log to the same sink: read one version
        ex = ex[ex["model_version"].astype(str) == str(model_version)]
        if ex.empty:
            raise ValueError(f"no exposure events served by model version {model_version!r}")
    s = ab_summary(ex, n_boot=n_boot, seed=seed)
    versions = sorted({str(v) for v in ex["model_version"].dropna()}) if "model_version" in ex else []
    s.update({"experiment": experiment or ",".join(sorted(set(ex["experiment"]))), "sink": str(sink_dir),
              "model_versions": versions, "torn_lines": torn_e + torn_f,
              "feedback_events": len(feedback),
              "feedback_unmatched": len({str(f.get("exposure_id")) for f in feedback} - set(ex["exposure_id"].astype(str)))})
    mv = model_version or (versions[0] if len(versions) == 1 else None)
    s["model_version"] = mv
    fig = plot_summary(s, f"A/B readout: {s['experiment']} (model version {mv})")
    if out_dir is not None:
        od = Path(out_dir)
        od.mkdir(parents=True, exist_ok=True)
        write_json(s, od / "ab_report.json")
        fig.savefig(od / "ab_report.png", dpi=110)
    if log_to_mlflow:
        flat = {"ab_lift": s["lift"], "ab_lift_ci_low": s["lift_ci_low"], "ab_lift_ci_high": s["lift_ci_high"]}
        for v in VARIANTS:
            for k in ("ctr", "ctr_ci_low", "ctr_ci_high", "exposures", "clicks", "users"):
                flat[f"ab_{v}_{k}"] = s["variants"][v][k]
        tags = {"experiment": s["experiment"], "model_version": str(mv)}
        with tracking.step_run("ab-report", parent_run_id=_pipeline_run_of_version(mv), tags=tags) as run:
            tracking.log_metrics(flat)
            tracking.log_json(s, "ab_report.json")
            tracking.log_figure(fig, "ab_report.png")
            s["mlflow_run_id"] = run.info.run_id
        if mv is not None:
            client = tracking.mlflow_utils._mlflow().MlflowClient()
            for k in ("ab_lift", "ab_lift_ci_low", "ab_lift_ci_high"):
                client.set_model_version_tag(tracking.MODEL_NAME, mv, k, f"{flat[k]:.6g}")
            client.set_model_version_tag(tracking.MODEL_NAME, mv, "ab_report_run_id", run.info.run_id)
    else:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return s


def _pipeline_run_of_version(version: str | None) -> str | None:
    if version is None:
        return None
    try:
        mv = tracking.mlflow_utils._mlflow().MlflowClient().get_model_version(tracking.MODEL_NAME, str(version))
    except Exception:  # noqa: BLE001 - a version from another store: the readout is logged top-level
        return None
    return mv.tags.get("pipeline_run_id") or None
