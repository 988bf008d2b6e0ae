"""GSB evaluation: an LLM judge compares a personalized title (a) with the original (b) for one user.

Both orders are asked; a verdict that flips with the order counts as Same. G = personalized wins,
B = original wins. Adv = (G - B) / (G + S + B), with a bootstrap 95% interval over samples.

Input (``gsb.parquet``-ready): a parquet with ``title_a`` (personalized), ``title_b`` (original) and
the ad (``original_title``, ``original_description``) plus the user (``title_list`` history,
``user_profile``): e.g. construct's ``train.parquet`` with a ``title_a`` column. Or creatives-like
input (``item_id, cluster_id, original_title`` + the served ``title``, or ``llm_output``) with a
dataset dir for the ad text and, optionally, ``assignments.parquet`` to pick the cluster member
nearest the centroid as the user.

Only what is SERVED is judged: creatives' ``title`` column (older files: ``llm_output`` where
``grounded``, else the original). A row whose served title equals the original after normalization
(NFKC, casefold, punctuation/whitespace folded) is counted as not personalized and not judged: a copy
can neither win nor lose against itself, and judging ``llm_output`` of a row that fell back would
grade a title no user sees.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from hllm_creator.config import StepConfig
from hllm_creator.creative.copy import normalize_title
from hllm_creator.data import leave_last_out, load_dataset
from hllm_creator.data.schema import DataError
from hllm_creator.io import atomic_path, write_json, write_parquet
from hllm_creator.llm.client import LLMClient, LLMConfig, Request, default_cache_path
from hllm_creator.prompts import history_block, render_chat, untrusted
from hllm_creator.stats import share_diff_ci
from hllm_creator.tracking import log_artifact, log_figure, log_json, log_metrics

log = logging.getLogger(__name__)

JUDGE_SCHEMA = {"type": "object",
                "properties": {"verdict": {"type": "string", "enum": ["a", "b", "same"]},
                               "reason": {"type": "string", "maxLength": 400}},
                "required": ["verdict", "reason"], "additionalProperties": False}


class GSBConfig(StepConfig):
    input: str | None = Field(None, description="samples parquet (or creatives.parquet)")
    out: str | None = None
    data: str | None = Field(None, description="dataset dir (needed for creatives-like input)")
    assignments: str | None = Field(None, description="assignments.parquet (creatives-like input)")
    samples: int | None = Field(None, ge=1, description="evaluate at most this many rows")
    history_len: int = 10
    desc_chars: int = 400
    judge_max_tokens: int = 96
    prompt_version: str = "v1"
    bootstrap: int = Field(2000, ge=100, description="bootstrap resamples for the 95% interval")
    seed: int = 0
    llm: LLMConfig = Field(default_factory=LLMConfig)


# a reply cut at max_tokens after its verdict: '{"verdict": "a", "reason": "The ad does not have a title that
# states facts the ad does not have a ti' (the 135M judge of the demo rambles in its reason)
_CUT_VERDICT = re.compile(r'^\s*\{\s*"verdict"\s*:\s*"(a|b|same)"\s*,', re.I)
CUT_REASON = "(the reply was cut at max_tokens after its verdict; the verdict counts, the reason is lost)"


def judge_verdict(r) -> tuple[str | None, str | None]:
    """A judge ``Result``'s (verdict, reason). A reply cut at max_tokens whose verdict was complete (the
    schema asks for it first) counts with that verdict and ``CUT_REASON``; any other invalid reply is a
    judge failure: (None, the error)."""
    if r.ok:
        return r.value["verdict"], r.value.get("reason")
    m = _CUT_VERDICT.match(r.raw or "") if "cut at max_tokens" in (r.error or "") else None
    return (m.group(1).lower(), CUT_REASON) if m else (None, r.error)


def final_verdict(verdict_ab: str | None, verdict_ba: str | None) -> str:
    """Combine the two orders into G (personalized better), S, or B, from the personalized title's side.

    ``verdict_ab``: the judge saw (a=personalized, b=original); ``verdict_ba``: the swapped order,
    (a=original, b=personalized). Agreement wins; a flip, a "same", or a missing verdict gives S.
    """
    if verdict_ab == "a" and verdict_ba == "b":
        return "G"
    if verdict_ab == "b" and verdict_ba == "a":
        return "B"
    return "S"


def gsb_stats(g: int, s: int, b: int, *, bootstrap: int = 2000, seed: int = 0, ci: float = 0.95) -> dict:
    """G, S, B counts -> Adv = (G - B) / (G + S + B) and a bootstrap ``ci`` interval (resampling samples)."""
    for k, v in (("G", g), ("S", s), ("B", b)):
        if not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"count {k} must be a non-negative integer, got {v!r}")
    n = g + s + b
    if n == 0:
        raise ValueError("no samples: G + S + B = 0")
    adv = (g - b) / n
    lo, hi = share_diff_ci(g, s, b, bootstrap=bootstrap, seed=seed, ci=ci)
    return {"G": int(g), "S": int(s), "B": int(b), "n": int(n), "adv": float(adv),
            "adv_pct": round(100 * adv, 1), "ci_low": lo, "ci_high": hi, "ci": ci,
            "bootstrap": bootstrap}


def parse_counts(text: str) -> tuple[int, int, int]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"--counts must be three non-negative integers 'G,S,B', got {text!r}")
    g, s, b = (int(p) for p in parts)
    return g, s, b


def judge_request(sample: dict, a: str, b: str, cfg: GSBConfig, tag) -> Request:
    values = {"history": history_block(list(sample["title_list"])[-cfg.history_len:]),
              "profile": untrusted(sample.get("user_profile") or "(none)", 1500),
              "title": untrusted(sample["original_title"]),
              "description": untrusted(sample.get("original_description") or "", cfg.desc_chars),
              "title_a": untrusted(a, 300), "title_b": untrusted(b, 300)}
    return Request(messages=render_chat("judge", values, cfg.prompt_version), schema=JUDGE_SCHEMA, name="judge",
                   max_tokens=cfg.judge_max_tokens, tag=tag)


def _as_list(v) -> list:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return []
    return list(v.tolist() if hasattr(v, "tolist") else v)


def load_samples(cfg: GSBConfig) -> pd.DataFrame:
    """Normalize the input into columns: sample, user_id, title_list, user_profile, original_title,
    original_description, title_a, title_b."""
    path = Path(cfg.input)
    if not path.exists():
        raise DataError("input parquet not found", file=str(path))
    df = pd.read_parquet(path)
    if ({"item_id", "cluster_id"} <= set(df.columns) and ({"llm_output", "title"} & set(df.columns))
            and "title_a" not in df.columns):
        df = _from_creatives(df, cfg, str(path))
    else:
        if "title_a" not in df.columns and "response" in df.columns:
            df = df.assign(title_a=df["response"])
        if "title_b" not in df.columns and "original_title" in df.columns:
            df = df.assign(title_b=df["original_title"])
        need = ["title_a", "title_b", "original_title"]
        missing = [c for c in need if c not in df.columns]
        if missing:
            raise DataError(f"missing column(s) {missing}: need title_a (personalized), title_b (original), "
                            f"original_title (+ title_list, user_profile, original_description), or "
                            f"creatives columns item_id, cluster_id, original_title, llm_output", file=str(path),
                            column=missing[0])
        for c, default in (("title_list", None), ("user_profile", ""), ("original_description", ""),
                           ("user_id", None)):
            if c not in df.columns:
                df[c] = [[] for _ in range(len(df))] if c == "title_list" else default
        df = df.assign(sample=[str(x) for x in (df["user_id"] if df["user_id"].notna().all() else range(len(df)))])
    for i, (a, b) in enumerate(zip(df["title_a"], df["title_b"])):  # (none when every served title is a copy)
        for col, v in (("title_a", a), ("title_b", b)):
            if not isinstance(v, str) or not v.strip():
                raise DataError("empty or non-string title", file=str(path), column=col, row=i)
    df["title_list"] = df["title_list"].map(_as_list)
    df = df.reset_index(drop=True)
    if cfg.samples is not None:
        df = df.head(cfg.samples)
    return df


def _from_creatives(df: pd.DataFrame, cfg: GSBConfig, file: str) -> pd.DataFrame:
    if not cfg.data:
        raise DataError("creatives-like input needs --data DATASET_DIR for the ad text and user histories",
                        file=file)
    ds = load_dataset(cfg.data)
    items = {r["item_id"]: r for r in ds.items.to_dict("records")}
    rep: dict[int, str] = {}
    hist: dict[str, list[str]] = {}
    if cfg.assignments:
        asg = pd.read_parquet(cfg.assignments)
        for c in ("user_id", "cluster_id", "distance"):
            if c not in asg.columns:
                raise DataError(f"missing column {c}", file=cfg.assignments, column=c)
        best = asg.sort_values(["cluster_id", "distance", "user_id"]).groupby("cluster_id").head(1)
        rep = dict(zip(best["cluster_id"].astype(int), best["user_id"].astype(str)))
        split = leave_last_out(ds.interactions)
        hist = {u: list(h) for u, h in zip(split.users["user_id"], split.users["history"])}
    rows, empty, copies = [], [], []
    has_title = "title" in df.columns
    for i, r in enumerate(df.to_dict("records")):
        if r["item_id"] not in items:
            raise DataError(f"item_id {r['item_id']!r} not in the dataset", file=file, column="item_id", row=i)
        served = _served(r, has_title)
        if served is None:
            # the Creative LLM wrote nothing: generate already fell back to the original title for
            # this pair; there is nothing to judge. Counted and reported, never silently dropped.
            empty.append(i)
            continue
        if _norm(served) == _norm(r["original_title"]):
            copies.append(i)  # served = the original: not personalized, nothing to judge
            continue
        item = items[r["item_id"]]
        uid = rep.get(int(r["cluster_id"]))
        rows.append({"sample": f"{r['item_id']}:{r['cluster_id']}", "user_id": uid,
                     "title_list": [items[x]["title"] for x in hist.get(uid, [])][-cfg.history_len:],
                     "user_profile": "", "original_title": item["title"],
                     "original_description": item.get("description") or "",
                     "title_a": served, "title_b": r["original_title"]})
    if empty:
        log.warning("%s: %d rows with an empty llm_output (rows %s) are not judged", file, len(empty), empty[:10])
    if copies:
        log.info("%s: %d rows serve the original title (not personalized): not judged", file, len(copies))
    if not rows and not copies:
        raise DataError(f"every llm_output is empty ({len(empty)} rows): nothing to judge", file=file,
                        column="llm_output")
    out = pd.DataFrame(rows, columns=["sample", "user_id", "title_list", "user_profile", "original_title",
                                      "original_description", "title_a", "title_b"])
    out.attrs["skipped_empty_llm_output"] = len(empty)
    out.attrs["not_personalized"] = len(copies)
    out.attrs["served_rows"] = len(df)
    return out


def _norm(s) -> str:
    return normalize_title(s)


def _served(r: dict, has_title: bool) -> str | None:
    """The title a user is served for a creatives row (None: nothing was generated)."""
    if has_title:
        t = r.get("title")
        return t if isinstance(t, str) and t.strip() else None
    out = r.get("llm_output")
    if not isinstance(out, str) or not out.strip():
        return None
    if "grounded" in r and not bool(r["grounded"]):
        return r["original_title"]  # generate fell back: the original is served
    return out


def run_gsb(cfg: GSBConfig, client=None) -> tuple[pd.DataFrame, dict]:
    """Judge every sample in both orders; returns (per-sample verdicts, summary)."""

    df = load_samples(cfg)
    if len(df) == 0:  # every served title is the original: nothing personalized, nothing judged
        summary = {"G": 0, "S": 0, "B": 0, "n": 0, "adv": 0.0, "adv_pct": 0.0, "ci_low": 0.0, "ci_high": 0.0,
                   "ci": 0.95, "bootstrap": cfg.bootstrap, "flips": 0, "judge_failures": 0,
                   "judge_failure_rate": 0.0, "prompt_version": cfg.prompt_version,
                   "note": "every served title equals the original: nothing to judge (Adv 0, no evidence)"}
        summary.update(_served_counts(df))
        return pd.DataFrame(columns=["sample", "user_id", "title_a", "title_b", "verdict_ab", "verdict_ba", "final",
                                     "reason_ab", "reason_ba", "judge_failed"]), summary
    if client is None:
        llm_cfg = cfg.llm if cfg.llm.cache_path else cfg.llm.model_copy(update={"cache_path": default_cache_path()})
        client = LLMClient(llm_cfg)
    recs = df.to_dict("records")
    reqs = []
    for i, s in enumerate(recs):
        reqs.append(judge_request(s, s["title_a"], s["title_b"], cfg, (i, "ab")))
        reqs.append(judge_request(s, s["title_b"], s["title_a"], cfg, (i, "ba")))
    res = client.map(reqs, desc="gsb judge")
    got: dict[tuple[int, str], tuple[str | None, str | None]] = {}
    for r in res:
        got[r.tag] = judge_verdict(r)
    out = []
    for i, s in enumerate(recs):
        vab, rab = got[(i, "ab")]
        vba, rba = got[(i, "ba")]
        out.append({"sample": s["sample"], "user_id": s.get("user_id"), "title_a": s["title_a"],
                    "title_b": s["title_b"], "verdict_ab": vab, "verdict_ba": vba,
                    "final": final_verdict(vab, vba), "reason_ab": rab, "reason_ba": rba,
                    "judge_failed": vab is None or vba is None})
    verdicts = pd.DataFrame(out)
    c = verdicts["final"].value_counts()
    summary = gsb_stats(int(c.get("G", 0)), int(c.get("S", 0)), int(c.get("B", 0)), bootstrap=cfg.bootstrap,
                        seed=cfg.seed)
    summary.update(_served_counts(df))
    summary["judge_failure_rate"] = float(verdicts["judge_failed"].mean()) if len(verdicts) else 0.0
    summary.update({"judge_model": client.model, "prompt_version": cfg.prompt_version,
                    "flips": int(((verdicts["verdict_ab"] == verdicts["verdict_ba"])
                                  & verdicts["verdict_ab"].isin(["a", "b"])).sum()),
                    "judge_failures": int(verdicts["judge_failed"].sum()),
                    "judge_cut_verdicts": int((verdicts["reason_ab"] == CUT_REASON).sum()
                                              + (verdicts["reason_ba"] == CUT_REASON).sum()),
                    "llm": client.stats()})
    return verdicts, summary


def _served_counts(df: pd.DataFrame) -> dict:
    """How many served rows there were, how many were copies of the original (not judged)."""
    out = {"skipped_empty_llm_output": int(df.attrs.get("skipped_empty_llm_output", 0))}
    if "served_rows" in df.attrs:
        served, copies = int(df.attrs["served_rows"]), int(df.attrs["not_personalized"])
        out.update({"served_rows": served, "not_personalized": copies,
                    "personalized_share": (served - copies - out["skipped_empty_llm_output"]) / served
                    if served else 0.0})
    return out


def bar_chart(summary: dict, title: str = "GSB: personalized vs original"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    keys = ["G", "S", "B"]
    vals = [summary[k] for k in keys]
    ax.bar(keys, vals, color=["#2a9d8f", "#adb5bd", "#e76f51"])
    for k, v in zip(keys, vals):
        ax.text(k, v, str(v), ha="center", va="bottom")
    ax.set_title(f"{title}\nAdv {summary['adv_pct']:.1f}% "
                 f"[{100 * summary['ci_low']:.1f}, {100 * summary['ci_high']:.1f}] (n={summary['n']})", fontsize=9)
    ax.set_ylabel("samples")
    fig.tight_layout()
    return fig


def write_outputs(verdicts: pd.DataFrame | None, summary: dict, out: str | Path) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if verdicts is not None:
        write_parquet(verdicts, out / "gsb.parquet")
    write_json(summary, out / "gsb_summary.json")
    fig = bar_chart(summary)
    with atomic_path(out / "gsb.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)


def log_gsb(summary: dict, out: str | Path | None) -> None:
    log_metrics({k: summary[k] for k in ("G", "S", "B", "n", "adv", "ci_low", "ci_high")})
    # the evidence `promote` reads (namespaced, so no other step's ci_low can be mistaken for it)
    fail = summary.get("judge_failure_rate")
    if fail is None and summary.get("n") and "judge_failures" in summary:
        fail = summary["judge_failures"] / summary["n"]
    log_metrics({"gsb_adv": summary["adv"], "gsb_ci_low": summary["ci_low"], "gsb_ci_high": summary["ci_high"],
                 "gsb_n": summary["n"], **({"gsb_judge_failure_rate": fail} if fail is not None else {}),
                 **{f"gsb_{k}": summary[k] for k in ("not_personalized", "personalized_share") if k in summary}})
    if "llm" in summary:
        log_metrics(summary["llm"])
    log_json({k: v for k, v in summary.items()}, "gsb_summary.json")
    log_figure(bar_chart(summary), "gsb_bar.png")
    if out is not None and (Path(out) / "gsb.parquet").exists():
        log_artifact(Path(out) / "gsb.parquet", "gsb")


def summary_line(summary: dict) -> str:
    return (f"G={summary['G']} S={summary['S']} B={summary['B']} n={summary['n']}  "
            f"Adv={summary['adv_pct']:.1f}% (95% CI {100 * summary['ci_low']:.1f}% .. "
            f"{100 * summary['ci_high']:.1f}%)")


def _json(o) -> str:
    return json.dumps(o, indent=2, default=str)
