"""One personalized title per selected (ad, cluster) (paper, Inference step 6).

- The cluster's member-mean embedding (the centroid for L2 k-means) fills the Creative LLM's user
  slot; prompts come from ``HLLMCreator.build_prompts(ad)``.
- Generation is batched (``HLLMCreator.generate``, left padding); sampling defaults as in the
  reference: temperature 0.8, top_p 0.95, top_k 50, at most 128 new tokens; batch b is seeded with
  ``seed + b``, so a run is reproducible.
- The candidate title is the first non-empty line of the output, stripped of quotes and a leading
  ``Title:``. Every candidate goes through ``teacher.grounding.check_grounding``; a failing one is
  replaced by the ad's original title (``grounded`` false, ``reasons`` say why): a fallback. Every
  emitted title (``title``) therefore passes the grounding check or is the original.
- ``lookup.parquet``: for each clustered user and each ad: the user's cluster and the title the
  user gets (personalized when the pair was selected and grounded, else the original title).
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from hllm_creator.config import StepConfig
from hllm_creator.data.schema import DataError

log = logging.getLogger(__name__)
GENERATE_META = "generate_meta.json"


class GenerateConfig(StepConfig):
    """Config of ``hllm-creator generate``."""

    model_dir: str
    data_dir: str
    matches: str
    clusters_dir: str
    batch_size: int = Field(16, ge=1, description="(ad, cluster) pairs per generate call.")
    do_sample: bool = True
    temperature: float = Field(0.8, gt=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    top_k: int = Field(50, ge=0)
    max_new_tokens: int = Field(128, ge=1)
    seed: int = 0
    max_pairs: int | None = Field(None, ge=1, description="Only the first N selected pairs (smoke runs).")
    bf16: bool = Field(False, description="bf16 autocast for the Creative LLM (faster on AMX CPUs and GPUs).")


_QUOTES = "\"'“”‘’`*"


def clean_title(text: str) -> str:
    """First non-empty line, without a leading ``Title:``/list marker and surrounding quotes."""
    for line in (text or "").splitlines():
        line = line.strip().strip(_QUOTES).strip()
        line = re.sub(r"^([-*•]|\d+[.)])\s+", "", line).strip().strip(_QUOTES).strip()
        line = re.sub(r"^(personalized\s+)?(ad\s+)?title\s*[:\-]\s*", "", line, flags=re.I)
        line = line.strip().strip(_QUOTES).strip()
        if line:
            return line
    return ""


def ad_of(item: dict) -> dict:
    sp = item.get("selling_points")
    return {"title": item["title"], "description": item.get("description") or "",
            "selling_points": list(sp) if sp is not None else [], "brand": item.get("brand") or None}


def ground(title: str, ad: dict) -> tuple[bool, list[str]]:
    """The checks every emitted title passes: grounded in the ad, and usable as a title of it."""
    from hllm_creator.teacher.grounding import Ad, check_grounding, title_quality

    if not title.strip():
        return False, ["empty output"]
    res = check_grounding(title, Ad(**ad))
    reasons = [str(r) for r in res.reasons] + title_quality(title, ad["title"])
    return not reasons, reasons


def generate_pairs(model, pairs: pd.DataFrame, items: pd.DataFrame, user_slot: np.ndarray,
                   cfg: GenerateConfig, *, progress: bool = True) -> pd.DataFrame:
    """pairs (item_id, cluster_id, score) -> creatives (one generation per row, grounding-checked)."""
    import torch
    from tqdm.auto import tqdm

    by_id = {r["item_id"]: r for r in items.to_dict("records")}
    ads = {iid: ad_of(by_id[iid]) for iid in pairs["item_id"].unique()}
    prompts = {iid: model.build_prompts({k: ad[k] for k in ("title", "description", "selling_points")})
               for iid, ad in ads.items()}
    rows = pairs.reset_index(drop=True)
    raw: list[str] = []
    import inspect

    # the whole chunk in one generate batch (when the model's generate takes a batch size)
    params = inspect.signature(model.generate).parameters
    extra = {"batch_size": cfg.batch_size} if "batch_size" in params else {}
    if cfg.bf16 and "autocast_bf16" in params:
        extra["autocast_bf16"] = True
    with tqdm(total=len(rows), desc="generate titles", unit="title", disable=not progress) as bar:
        for b, s in enumerate(range(0, len(rows), cfg.batch_size)):
            chunk = rows.iloc[s:s + cfg.batch_size]
            u = torch.from_numpy(np.ascontiguousarray(user_slot[chunk["cluster_id"].to_numpy()], dtype=np.float32))
            p1 = [prompts[i][0] for i in chunk["item_id"]]
            p2 = [prompts[i][1] for i in chunk["item_id"]]
            with torch.inference_mode():
                outs = model.generate(u, p1, p2, do_sample=cfg.do_sample, temperature=cfg.temperature,
                                      top_p=cfg.top_p, top_k=cfg.top_k, max_new_tokens=cfg.max_new_tokens,
                                      seed=cfg.seed + b, **extra)
            if len(outs) != len(chunk):
                raise RuntimeError(f"generate returned {len(outs)} outputs for {len(chunk)} prompts")
            raw += list(outs)
            bar.update(len(chunk))
    recs = []
    for r, out in zip(rows.to_dict("records"), raw):
        ad = ads[r["item_id"]]
        cand = clean_title(out)
        ok, reasons = ground(cand, ad)
        recs.append({"item_id": r["item_id"], "cluster_id": int(r["cluster_id"]), "original_title": ad["title"],
                     "llm_output": cand, "raw_output": out, "score": float(r["score"]), "grounded": ok,
                     "reasons": reasons, "title": cand if ok else ad["title"]})
    cols = ["item_id", "cluster_id", "original_title", "llm_output", "raw_output", "score", "grounded",
            "reasons", "title"]
    return pd.DataFrame(recs, columns=cols).astype({"cluster_id": "int64", "score": "float32", "grounded": bool})


def lookup(assignments: pd.DataFrame, creatives: pd.DataFrame, items: pd.DataFrame,
           ad_ids: list[str]) -> pd.DataFrame:
    """user -> cluster -> title per ad (personalized for selected + grounded pairs, else original)."""
    titles = dict(zip(items["item_id"], items["title"]))
    pers = {(r.item_id, int(r.cluster_id)): r.title for r in creatives[creatives["grounded"]].itertuples()}
    u = assignments["user_id"].astype(str).to_numpy()
    c = assignments["cluster_id"].to_numpy().astype(np.int64)
    parts = []
    for iid in ad_ids:
        t = [pers.get((iid, int(k))) for k in c]
        parts.append(pd.DataFrame({"user_id": u, "cluster_id": c, "item_id": iid,
                                   "title": [x if x is not None else titles[iid] for x in t],
                                   "personalized": [x is not None for x in t]}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["user_id", "cluster_id", "item_id", "title", "personalized"])


def load_matches(path: str | Path) -> pd.DataFrame:
    from hllm_creator.infer.common import MATCHES, resolve_file

    f = resolve_file(path, MATCHES)
    m = pd.read_parquet(f)
    for col in ("item_id", "cluster_id", "score", "rank", "selected"):
        if col not in m.columns:
            raise DataError(f"missing column {col!r}; found {list(m.columns)}", file=str(f), column=col)
    return m


def run(cfg: GenerateConfig, out: str | Path, *, progress: bool = True, model=None) -> dict:
    """The step: generate for the selected pairs; write creatives.parquet, lookup.parquet, meta."""
    from hllm_creator import tracking
    from hllm_creator.data import load_dataset
    from hllm_creator.infer import cluster as cl
    from hllm_creator.infer.common import CREATIVES, LOOKUP
    from hllm_creator.infer.embed import load_model
    from hllm_creator.io import write_json, write_parquet

    t0 = time.time()
    ds = load_dataset(cfg.data_dir)
    _, user_slot, asg, _ = cl.load(cfg.clusters_dir)
    m = load_matches(cfg.matches)
    known = set(ds.items["item_id"])
    for k, (iid, cid) in enumerate(zip(m["item_id"], m["cluster_id"])):
        if iid not in known:
            raise DataError(f"item_id {iid!r} is not an item of the dataset", file=str(cfg.matches),
                            column="item_id", row=k)
        if not 0 <= int(cid) < len(user_slot):
            raise DataError(f"cluster_id {cid} outside 0..{len(user_slot) - 1} of the cluster dir",
                            file=str(cfg.matches), column="cluster_id", row=k)
    ad_ids = m["item_id"].drop_duplicates().tolist()
    pos = {a: k for k, a in enumerate(ad_ids)}
    pairs = m[m["selected"]].assign(_ad=lambda d: d["item_id"].map(pos))
    pairs = pairs.sort_values(["_ad", "rank"], kind="stable").drop(columns="_ad").reset_index(drop=True)
    if cfg.max_pairs:
        pairs = pairs.head(cfg.max_pairs)
    model = model if model is not None else load_model(cfg.model_dir)
    with tracking.step_run("generate", cfg):
        t1 = time.time()
        cr = generate_pairs(model, pairs, ds.items, user_slot, cfg, progress=progress)
        gen_s = time.time() - t1
        lk = lookup(asg, cr, ds.items, ad_ids)
        out = Path(out)
        write_parquet(cr, out / CREATIVES)
        write_parquet(lk, out / LOOKUP)
        n = len(cr)
        fallbacks = int((~cr["grounded"]).sum())
        reasons = pd.Series([r for rs in cr.loc[~cr["grounded"], "reasons"] for r in rs]).value_counts()
        meta = {"generations": n, "grounded": n - fallbacks, "fallbacks": fallbacks,
                "fallback_rate": fallbacks / n if n else 0.0,
                "fallback_reasons": {str(k): int(v) for k, v in reasons.head(20).items()},
                "ads": len(ad_ids), "users": int(len(asg)), "lookup_rows": int(len(lk)),
                "personalized_share": float(lk["personalized"].mean()) if len(lk) else 0.0,
                "changed_titles": int((cr["grounded"] & (cr["title"] != cr["original_title"])).sum()),
                "generate_seconds": round(gen_s, 2), "total_seconds": round(time.time() - t0, 2),
                "titles_per_second": round(n / max(gen_s, 1e-9), 3), "model_hash": model.model_hash}
        write_json(meta, out / GENERATE_META)
        tracking.log_metrics({k: v for k, v in meta.items() if isinstance(v, (int, float))})
        table = cr[["cluster_id", "item_id", "original_title", "llm_output", "title", "grounded", "score"]].copy()
        table["reasons"] = cr["reasons"].map(lambda r: "; ".join(r))
        tracking.log_table(table.sort_values(["cluster_id", "item_id"]), "titles_per_cluster")
        tracking.log_json(meta, GENERATE_META)
    return meta
