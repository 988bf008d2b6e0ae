"""The personalization report: flat ``pers_*`` metrics, the headline lines, the figures, the files
and the MLflow logging."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hllm_creator import tracking
from hllm_creator.evaluate.frontier import frontier_figure
from hllm_creator.io import atomic_path, write_json, write_parquet
from hllm_creator.tracking.plots import table_figure as wrapped

REPORT = "personalization.json"
PER_AD = "per_ad.parquet"

DEFINITIONS = {
    "copy_rate": "share of served titles (creatives.title) equal to the original after NFKC + casefold + "
                 "punctuation/whitespace folding; CI resampling ads",
    "distinct_per_ad": "distinct normalized served titles per ad across its selected clusters (the original "
                       "counts as one); mean over ads, CI resampling ads",
    "swap_changed": "greedy title with the cluster's own slot vs another selected cluster's slot for the same "
                    "ad: share of pairs whose cleaned title changes; CI resampling ads",
    "nll_diff": "held-out teacher rows: mean per-token response NLL with a shuffled user's embedding minus "
                "with the own user's (> 0: the slot carries the user); CI resampling rows",
    "fit_other": "ruler cos(title_c, next click of held-out member m of c) minus the mean cos of the ad's other "
                 "served titles to the same next click; CI resampling members",
    "fit_original": "ruler cos(title_c, next_m) minus cos(original title, next_m); CI resampling members",
    "fit_other_permutation": "fit_other of the served assignment against the same titles dealt to each ad's clusters "
                             "at random: p = share of random deals with a mean fit_other at least as high (one-sided, "
                             "add-one); null mean and 95% range",
    "xgsb": "judge: c's served title (a) vs another cluster's served title (b) for a held-out member of c, "
            "both orders, flip = Same; Adv = (G - B) / n, CI resampling samples",
}


def metrics_of(res: dict) -> dict[str, float]:
    """Flat ``pers_*`` metrics (value, ci_low, ci_high, n) of every figure that was measured."""
    out: dict[str, float] = {}

    def put(name, d):
        if d and d.get("mean") is not None:
            out[f"pers_{name}"] = d["mean"]
            out[f"pers_{name}_ci_low"] = d["ci_low"]
            out[f"pers_{name}_ci_high"] = d["ci_high"]
            out[f"pers_{name}_n"] = d["n"]

    put("copy_rate", res["copy"]["copy_rate"])
    put("distinct_per_ad", res["copy"]["distinct_per_ad"])
    put("swap_changed", res["slot_swap"].get("swap_changed"))
    put("nll_diff", res["nll"].get("nll_diff"))
    put("fit_other", res["audience_fit"].get("fit_other"))
    put("fit_original", res["audience_fit"].get("fit_original"))
    for k in ("fit_other", "fit_original"):
        d = res["audience_fit"].get(k) or {}
        if d.get("mde") is not None:
            out[f"pers_{k}_mde"] = d["mde"]
    if res["audience_fit"].get("served_personalized_share") is not None:
        out["pers_served_personalized_share"] = res["audience_fit"]["served_personalized_share"]
    pm = res["audience_fit"].get("fit_other_permutation") or {}
    if pm.get("p_value") is not None:
        out.update({"pers_fit_other_perm_p": pm["p_value"], "pers_fit_other_null_mean": pm["null_mean"],
                    "pers_fit_other_null_high": pm["null_high"]})
    x = res.get("xgsb") or {}
    if x.get("n"):
        out.update({"pers_xgsb_adv": x["adv"], "pers_xgsb_adv_ci_low": x["ci_low"],
                    "pers_xgsb_adv_ci_high": x["ci_high"], "pers_xgsb_n": x["n"],
                    "pers_xgsb_judge_failure_rate": x["judge_failure_rate"]})
    if "nll_own" in res["nll"]:
        out["pers_nll_own"], out["pers_nll_shuffled"] = res["nll"]["nll_own"], res["nll"]["nll_shuffled"]
    out["pers_ads"] = res["copy"]["ads"]
    out["pers_pairs"] = res["copy"]["pairs"]
    out["pers_heldout_members"] = res["heldout_members_used"]
    return {k: float(v) for k, v in out.items() if v is not None}


def _fmt(d: dict | None, pct: bool = False, digits: int = 3) -> str:
    if not d or d.get("mean") is None:
        return "not measured"
    f = (lambda x: f"{100 * x:.1f}%") if pct else (lambda x: f"{x:.{digits}f}")
    mde = f", MDE {f(d['mde'])}" if d.get("mde") is not None else ""
    return f"{f(d['mean'])} (95% CI {f(d['ci_low'])} .. {f(d['ci_high'])}, n={d['n']}{mde})"


def _perm(p: dict | None) -> str:
    if not p or p.get("p_value") is None:
        return ""
    return (f"; random deals of the same titles: {p['null_mean']:.4f} (95% {p['null_low']:.4f} .. "
            f"{p['null_high']:.4f}), p = {p['p_value']:.3f}")


def headline(res: dict) -> list[str]:
    """The headline figures, one line each (the demo's closing summary prints them)."""
    lines = [f"copy rate (served = original): {_fmt(res['copy']['copy_rate'], pct=True)}",
             f"distinct served titles per ad: {_fmt(res['copy']['distinct_per_ad'], digits=2)}",
             "greedy titles that change when the slot is swapped: "
             f"{_fmt(res['slot_swap'].get('swap_changed'), pct=True)}",
             f"NLL shuffled - own user (held-out rows): {_fmt(res['nll'].get('nll_diff'), digits=4)}",
             f"audience fit vs the ad's other titles: {_fmt(res['audience_fit'].get('fit_other'), digits=4)}"
             + _perm(res['audience_fit'].get('fit_other_permutation')),
             f"audience fit vs the original title: {_fmt(res['audience_fit'].get('fit_original'), digits=4)}"
             + (f"; {100 * res['audience_fit']['served_personalized_share']:.0f}% of the served titles personalized"
                if res['audience_fit'].get('served_personalized_share') is not None else "")]
    x = res.get("xgsb") or {}
    if x.get("n"):
        lines.append(f"cross-cluster GSB: G={x['G']} S={x['S']} B={x['B']} Adv {x['adv_pct']:.1f}% (95% CI "
                     f"{100 * x['ci_low']:.1f}% .. {100 * x['ci_high']:.1f}%), judge failures "
                     f"{100 * x['judge_failure_rate']:.0f}%")
    return lines


def summary_lines(res: dict, per_ad: pd.DataFrame, max_ads: int = 20) -> list[str]:
    """Per ad: the original once, then each selected cluster's top interests and its SERVED title;
    then the headline figures."""
    lines = []
    for k, (ad, grp) in enumerate(per_ad.groupby("item_id", sort=False)):
        if k >= max_ads:
            lines.append(f"... {per_ad['item_id'].nunique() - max_ads} more ads in per_ad.parquet")
            break
        lines.append(f"ad {ad}: original  {grp['original_title'].iloc[0]!r}")
        for r in grp.itertuples():
            tag = ("original" if r.source == "original" else "copy") if r.copy else r.source
            interests = ", ".join(list(r.interests)) or "-"
            lines.append(f"  cluster {r.cluster_id:>3} [{interests}]  ->  {r.title!r} ({tag})")
    lines.append("personalization (held-out users):")
    lines += [f"  {x}" for x in res["headline"]]
    return lines


def figure(res: dict):
    """Bar chart of the figures with their 95% intervals (one panel per scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("share", [("copy rate", res["copy"]["copy_rate"]),
                         ("swap changed", res["slot_swap"].get("swap_changed"))]),
              ("difference", [("fit vs other", res["audience_fit"].get("fit_other")),
                              ("fit vs original", res["audience_fit"].get("fit_original")),
                              ("NLL shuf - own", res["nll"].get("nll_diff"))]),
              ("titles", [("distinct / ad", res["copy"]["distinct_per_ad"])])]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.4), gridspec_kw={"width_ratios": [2, 3, 1]})
    for ax, (ylabel, items) in zip(axes, panels):
        names = [n for n, _ in items]
        vals = [d["mean"] if d and d.get("mean") is not None else np.nan for _, d in items]
        lo = [v - d["ci_low"] if d and d.get("mean") is not None else 0 for v, (_, d) in zip(vals, items)]
        hi = [d["ci_high"] - v if d and d.get("mean") is not None else 0 for v, (_, d) in zip(vals, items)]
        ax.bar(names, np.nan_to_num(vals), yerr=[lo, hi], capsize=4, color="#2a9d8f")
        ax.axhline(0, color="black", lw=0.6)
        pm = res["audience_fit"].get("fit_other_permutation") or {}
        if "fit vs other" in names and pm.get("p_value") is not None:  # where random deals of the same titles land
            x = names.index("fit vs other")
            ax.fill_between([x - 0.45, x + 0.45], pm["null_low"], pm["null_high"], color="grey", alpha=0.3,
                            label=f"random deals, 95% (p = {pm['p_value']:.2f})")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_ylabel(ylabel)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle("personalization on held-out users (95% bootstrap CIs)", fontsize=10)
    fig.tight_layout()
    return fig


def table_figure(per_ad: pd.DataFrame, max_rows: int = 30):
    """The per-ad table (ad, cluster, interests, served title, source) as an image, titles wrapped
    whole (they differ at their end: the original plus one selling point)."""
    t = per_ad.head(max_rows)
    return wrapped(["ad", "cluster", "top interests", "served title", "source"],
                   [[r.item_id, r.cluster_id, ", ".join(list(r.interests)), r.title,
                     ("original" if r.source == "original" else "copy") if r.copy else r.source]
                    for r in t.itertuples()], [6, 7, 30, 60, 9])


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, float) and not np.isfinite(o):
        return None
    return o


def write_outputs(res: dict, per_ad: pd.DataFrame, out: str | Path, *, fit_df=None, swap_df=None, nll_df=None,
                  xgsb_df=None) -> Path:
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(_jsonable({k: v for k, v in res.items() if k != "per_ad"}), out / REPORT)
    write_parquet(per_ad.reset_index(drop=True), out / PER_AD)
    for name, df in (("audience_fit", fit_df), ("slot_swap", swap_df), ("nll", nll_df), ("xgsb", xgsb_df)):
        if df is not None and len(df):
            write_parquet(df.reset_index(drop=True), out / f"{name}.parquet")
    for name, fig in (("personalization.png", figure(res)), ("per_ad.png", table_figure(per_ad))):
        with atomic_path(out / name) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
    return out


def log_personalization(res: dict, per_ad: pd.DataFrame, out: str | Path | None) -> None:
    """Into the active step run: pers_* metrics, the report, the bar chart, the per-ad table."""
    tracking.log_metrics(res["metrics"])
    tracking.log_json(_jsonable({k: v for k, v in res.items() if k != "per_ad"}), REPORT)
    tracking.log_figure(figure(res), "personalization.png")
    tracking.log_figure(table_figure(per_ad), "per_ad.png")
    frontier = res["audience_fit"].get("harm_frontier") or []
    if frontier:
        tracking.log_figure(frontier_figure(frontier), "do_no_harm_frontier.png")
        tracking.log_table(pd.DataFrame([{"rule": p.get("rule", "predictor"), "label": p["label"],
                                          "personalized_share": p["personalized_share"],
                                          **{f"fit_original_{k}": p["fit_original"].get(k)
                                             for k in ("mean", "ci_low", "ci_high", "n")}} for p in frontier]),
                           "do_no_harm_frontier")
    tab = per_ad.assign(interests=per_ad["interests"].map(lambda x: ", ".join(list(x))))
    tracking.log_table(tab, "per_ad")
    if out is not None:
        for f in sorted(Path(out).glob("*.parquet")):
            tracking.log_artifact(f, "personalization")
