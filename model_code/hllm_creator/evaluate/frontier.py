"""Do no harm's frontier: the audience fit vs the original at each threshold of the product's own
estimates (generate's ``harm_gain`` and ``content_gain``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hllm_creator.creative.copy import is_copy
from hllm_creator.stats import boot_mean

HARM_THRESHOLDS = (-np.inf, -1.0, -0.5, -0.25, -0.1, 0.0, 0.1, 0.25, 0.5, 1.0, np.inf)


def harm_frontier(pairs: pd.DataFrame, units: pd.DataFrame, *, thresholds=HARM_THRESHOLDS, bootstrap: int = 2000,
                  seed: int = 0) -> list[dict]:
    """Do no harm, over its threshold: at threshold t a pair serves its personalized title (its
    ``candidate_title``, the title before the check) when the product's estimate ``harm_gain`` >= t,
    else the original (rule ``predictor``); where the creatives carry the Item LLM's ``content_gain``,
    the same thresholds with ``content_gain`` >= 0 as well (rule ``both``, generate's default) and the
    content estimate alone (rule ``content``). Per point: the share of pairs that serve a personalized
    title and the audience fit vs the original over the units (the ruler: the evaluation, not the
    rule). Empty when the creatives carry no ``harm_gain`` (a run without the check)."""
    if units.empty or "harm_gain" not in units.columns or units["harm_gain"].isna().all():
        return []
    pers = np.array([not is_copy(c, o) for c, o in zip(pairs["candidate_title"], pairs["original_title"])])
    g_pairs = pairs["harm_gain"].to_numpy(dtype=float)
    u_pers = np.array([not is_copy(c, o) for c, o in zip(units["candidate_title"], units["original_title"])])
    g = units["harm_gain"].to_numpy(dtype=float)
    has_content = "content_gain" in units.columns and units["content_gain"].notna().any() \
        and "content_gain" in pairs.columns and pairs["content_gain"].notna().any()
    c_pairs = pairs["content_gain"].to_numpy(dtype=float) if has_content else None
    c_units = units["content_gain"].to_numpy(dtype=float) if has_content else None

    def point(rule: str, label: str, t: float, serve_u: np.ndarray, serve_p: np.ndarray) -> dict:
        fit = boot_mean(np.where(serve_u, units["fit_candidate"], 0.0), units["user_id"], bootstrap=bootstrap,
                        seed=seed)
        return {"rule": rule, "threshold": float(t), "label": label,
                "personalized_share": float(serve_p.mean()), "fit_original": fit}

    out = []
    rules = [("predictor", None)] + ([("both", 0.0)] if has_content else [])
    for rule, c0 in rules:
        for t in thresholds:
            if rule == "both" and not np.isfinite(t):
                continue  # no check and always the original are the predictor curve's ends
            label = "no check" if t == -np.inf else "always the original" if t == np.inf else f"gain >= {t:+.2f}"
            su, sp = u_pers & (g >= t), pers & (g_pairs >= t)
            if c0 is not None:
                su, sp, label = su & (c_units >= c0), sp & (c_pairs >= c0), label + ", content >= 0"
            out.append(point(rule, label, t, su, sp))
    if has_content:
        out.append(point("content", "content >= 0", -np.inf, u_pers & (c_units >= 0), pers & (c_pairs >= 0)))
    return out


def frontier_figure(frontier: list[dict]):
    """Do no harm's frontier: audience fit vs the original (95% CI) against the share of pairs that
    serve a personalized title, one point per threshold of the product's estimate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colours = {"predictor": "#264653", "both": "#e76f51", "content": "#2a9d8f"}
    for rule in ("predictor", "both", "content"):
        pts = [p for p in frontier if p.get("rule", "predictor") == rule and p["fit_original"].get("mean") is not None]
        if not pts:
            continue
        x = [100 * p["personalized_share"] for p in pts]
        y = [p["fit_original"]["mean"] for p in pts]
        err = [[v - p["fit_original"]["ci_low"] for v, p in zip(y, pts)],
               [p["fit_original"]["ci_high"] - v for v, p in zip(y, pts)]]
        names = {"predictor": "predictor gain >= t", "both": "predictor >= t and content >= 0",
                 "content": "content >= 0"}
        ax.errorbar(x, y, yerr=err, fmt="o-" if len(pts) > 1 else "s", capsize=3, color=colours[rule],
                    label=names[rule])
        for xi, yi, p in zip(x, y, pts):
            if rule == "predictor":
                ax.annotate(p["label"], (xi, yi), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("served titles that are personalized (%)")
    ax.set_ylabel("audience fit vs the original (ruler)")
    ax.set_title("do no harm: the product's estimates and their thresholds", fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig
