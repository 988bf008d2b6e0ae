"""One MLflow run named ``recommendation`` with both of the predictor's tables (issue 27): the warm
recommendation benchmark (``quality.recommendation``'s JSON) and the cold-start benchmark
(``quality.cold_start``'s JSON), side by side, for a reviewer comparing runs in the MLflow UI.

What the run holds:

- metrics ``warm_<ranker>_<metric>`` and ``cold_<ranker>_<metric>`` (the mean, ``..._ci_lo`` /
  ``..._ci_hi`` its bootstrap 95% CI), ``warm_hllm_minus_<baseline>_<metric>`` and
  ``cold_<ranker>_minus_best_content_<metric>`` (the paired differences, with their CIs);
- params: the strongest warm baseline, the best cold content baseline, the model dirs, the sizes;
- artifacts: both JSONs, both tables (``warm_table.json`` / ``cold_table.json``, MLflow tables), and
  ``recall_with_ci.png`` (warm Recall@10 and cold audience Recall@100 per ranker, 95% CIs).

Each benchmark logs its own table with these names too (``warm_metrics`` / ``cold_metrics``); this
script puts the two recorded tables into one run:

    python -m benchmarks.quality.rec_report [--warm benchmarks/results/recommendation_cpu_preset.json]
        [--cold benchmarks/results/cold_start.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks._common import RECORDED

WARM_METRICS = ("recall@10", "ndcg@10", "mrr")


def _key(s: str) -> str:
    return s.replace("@", "_at_")


def _with_ci(prefix: str, r: dict, metrics) -> dict[str, float]:
    out = {}
    for k in metrics:
        if k in r and isinstance(r[k], dict) and "mean" in r[k]:
            out[f"{prefix}_{_key(k)}"] = r[k]["mean"]
            if "ci" in r[k]:
                out[f"{prefix}_{_key(k)}_ci_lo"], out[f"{prefix}_{_key(k)}_ci_hi"] = r[k]["ci"]
    return out


def warm_metrics(res: dict) -> dict[str, float]:
    """The recommendation benchmark's JSON -> flat MLflow metrics (prefix ``warm_``)."""
    m = {}
    for name, r in res["rankers"].items():
        m.update(_with_ci(f"warm_{name}", r, WARM_METRICS))
    for key, val in res.items():
        # hllm_minus / hllm_as_trained_minus: {baseline: {metric: diff}}; hllm_refit_minus_sasrec_refit: {metric: diff}
        pairs = ({f"{key}_{b}": d for b, d in val.items()} if key.endswith("_minus") else
                 {key: val} if "_minus_" in key else {})
        for name, d in pairs.items():
            for k, v in d.items():
                m[f"warm_{name}_{_key(k)}"] = v["diff"]
                m[f"warm_{name}_{_key(k)}_ci_lo"], m[f"warm_{name}_{_key(k)}_ci_hi"] = v["diff_ci"]
    return m


def cold_metrics(res: dict) -> dict[str, float]:
    """The cold-start benchmark's JSON -> flat MLflow metrics (prefix ``cold_``)."""
    m = {}
    for name, r in res["rankers"].items():
        keys = [k for k in r if isinstance(r[k], dict) and "mean" in r[k]]
        m[f"cold_{name}_seconds"] = r["seconds"]
        m.update(_with_ci(f"cold_{name}", r, keys))
        for k in keys:
            if "diff" in r[k]:
                m[f"cold_{name}_minus_best_content_{_key(k)}"] = r[k]["diff"]
                m[f"cold_{name}_minus_best_content_{_key(k)}_ci_lo"], \
                    m[f"cold_{name}_minus_best_content_{_key(k)}_ci_hi"] = r[k]["diff_ci"]
    return m


def table(res: dict, metrics=None):
    """One row per ranker: mean and 95% CI of each metric (a DataFrame for ``tracking.log_table``)."""
    import pandas as pd

    rows = []
    for name, r in res["rankers"].items():
        keys = metrics or [k for k in r if isinstance(r[k], dict) and "mean" in r[k]]
        row = {"ranker": name}
        for k in keys:
            if k in r:
                row[k] = round(r[k]["mean"], 4)
                row[f"{k} 95% CI"] = f"[{r[k]['ci'][0]:.4f}, {r[k]['ci'][1]:.4f}]"
        rows.append(row)
    return pd.DataFrame(rows)


def figure(warm: dict | None, cold: dict | None):
    """Warm Recall@10 and cold audience Recall@100 per ranker, with their 95% CIs (horizontal bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(t, res, k) for t, res, k in (("warm: Recall@10 (leave-last-out, all users)", warm, "recall@10"),
                                            ("cold: audience Recall@100 (held-out ads)", cold, "recall@100"))
              if res is not None]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, (title, res, k) in zip(axes[0], panels):
        names = [n for n, r in res["rankers"].items() if k in r]
        mean = [res["rankers"][n][k]["mean"] for n in names]
        lo = [m - res["rankers"][n][k]["ci"][0] for n, m in zip(names, mean)]
        hi = [res["rankers"][n][k]["ci"][1] - m for n, m in zip(names, mean)]
        colors = ["tab:red" if n.startswith("hllm") else "tab:gray" for n in names]
        ax.barh(range(len(names)), mean, xerr=[lo, hi], color=colors, capsize=3)
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(k)
    fig.tight_layout()
    return fig


def log_run(warm: dict | None, cold: dict | None, *, tags: dict | None = None, params: dict | None = None) -> str:
    """One MLflow run ``recommendation`` with whichever of the two tables is given (+ ``params``).
    Returns its run id."""
    from hllm_creator import tracking

    if warm is None and cold is None:
        raise ValueError("log_run needs the warm table, the cold table or both")
    params = dict(params or {})
    if warm is not None:
        params.update({"warm_strongest_baseline": warm.get("strongest_baseline"), "warm_n_users": warm.get("n_users"),
                       "warm_data": warm.get("data")})
    if cold is not None:
        hl = cold["rankers"].get("hllm", {})
        params.update({"cold_best_content": cold["best_content"], "cold_n_ads": cold["n_ads"],
                       "cold_n_users": cold["n_users"], "cold_model_dir": hl.get("model_dir", ""),
                       "cold_share": cold["split"]["params"]["share"],
                       "cold_min_clicks": cold["split"]["params"]["min_clicks"]})
    tables = "+".join(n for n, r in (("warm", warm), ("cold", cold)) if r is not None)
    with tracking.step_run("recommendation", tags={"benchmark": "recommendation", "tables": tables,
                                                   **(tags or {})}) as run:
        tracking.log_params({k: v for k, v in params.items() if v is not None})
        if warm is not None:
            tracking.log_metrics(warm_metrics(warm))
            tracking.log_json(warm, "recommendation.json")
            tracking.log_table(table(warm, WARM_METRICS), "warm_table.json")
        if cold is not None:
            tracking.log_metrics(cold_metrics(cold))
            tracking.log_json(cold, "cold_start.json")
            tracking.log_table(table(cold), "cold_table.json")
        tracking.log_figure(figure(warm, cold), "recall_with_ci.png")
        return run.info.run_id


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--warm", default=str(RECORDED / "recommendation_cpu_preset.json"),
                    help="the recommendation benchmark's JSON ('' = none)")
    ap.add_argument("--cold", default=str(RECORDED / "cold_start.json"), help="the cold-start benchmark's JSON ('' = none)")
    a = ap.parse_args(argv)
    res = {}
    for name, path in (("warm", a.warm), ("cold", a.cold)):
        if path:
            if not Path(path).exists():
                raise SystemExit(f"--{name} {path}: no such file (run the benchmark first, or pass '' to leave it out)")
            res[name] = json.loads(Path(path).read_text())
    run_id = log_run(res.get("warm"), res.get("cold"), tags={"sources": " ".join(filter(None, (a.warm, a.cold)))})
    print(f"logged the run 'recommendation' ({run_id}): {', '.join(res)} tables")
    return run_id


if __name__ == "__main__":
    main()
