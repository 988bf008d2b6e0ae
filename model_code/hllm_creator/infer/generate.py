"""One personalized title per selected (ad, cluster) (paper, Inference step 6).

- The cluster's slot embedding (``slot``: the medoid, i.e. the member nearest the centroid, a real
  user embedding; or the member mean) fills the Creative LLM's user slot; prompts come from
  ``HLLMCreator.build_prompts(ad)`` (the one creative template: the ad's core and its fact phrases).
- Decoding is greedy by default (``do_sample`` false): a served title differs across clusters
  because their slots differ, not because of sampling noise. Sampling stays available (batch b is
  seeded with ``seed + b``, so a run is reproducible).
- Every output is cleaned (``creative.titles.clean_title``) and goes through the one gate
  (``creative.gate.gate``, by ``ground``: every content word from the ad, no claims or other catalog
  brands, no cut number, no repetition, not cut off, within the title budget, a usable title of this product).
- What is served (``title``, with ``source``), by ``select``:
  ``slot`` (default): best of n by the gate and the Creative LLM's slot: of the ad's gate-passing
  compositions ``core - fact``, the one whose fact the cluster's slot points at (largest cosine
  between the slot and the fact's mean word embedding: the slot-fact head trained in train).
  (A first version added the decoder's log-likelihood to that score: it dominated, the decoder
  barely reads the slot after a CPU budget of training, and 3 clusters of an ad got 1.05 distinct
  titles on average.)
  ``generated``: the greedy generation when it passes the gate and is not the original title;
  else, with ``rescore`` on, ``rescored``: the Creative LLM's most likely (lowest NLL per token
  under this cluster's slot) of the ad's gate-passing compositions ``core - fact``;
  else ``original`` (the ad's original title; ``reasons`` say why).
- ``distinct`` (default on): an ad's audiences see different titles where the ad allows it. Per
  ad, in match-rank order, a cluster whose served title repeats a better-ranked cluster's gets the
  slot's pick (as ``slot``) among the ad's gate-passing compositions not yet served for the ad
  (source ``distinct``); with none left (an ad with one fact) it keeps the repeat. The best-ranked
  cluster always keeps its title. Distinct is not personalized: which title goes to which audience
  is what ``hllm-creator personalization``'s audience fit (and its permutation test) measures.
- ``select="predictor"``: of the greedy title (when it passes the gate) and the ad's gate-passing
  compositions, the one the Item-User predictor rates the likeliest click for the cluster (the
  do-no-harm estimate below, used to choose; source ``predictor``).
- **Do no harm** (``harm_rule="both"``, default; the estimates and the check: ``infer.harm``): after
  ``distinct``, a pair serves its personalized title only where the product's own two estimates agree
  that it fits the cluster at least as well as the original; else the original, with the reason. ``predictor`` (``harm_gains``): the Item-User
  predictor's log-odds of a click by the cluster (its member-mean embedding and ID part, as match
  scores it) with the personalized title vs with the original, at least ``harm_threshold``.
  ``content`` (``content_gains``): the Item LLM's cosine of the personalized title to the cluster's
  clicked items (``cluster_content``: the mean of its members' mean clicked-item vectors) minus the
  original's, at least ``content_threshold``. Either rule alone is a setting. ``candidate_title``,
  ``harm_gain`` and ``content_gain`` keep what was decided, so the personalization step draws the
  frontier over thresholds. The evaluation ruler (another encoder, held-out users' next clicks) plays
  no part in it.
- Every title keeps its original (``creative.facts.compositions``: the original within the 150-character
  title budget plus one fact; the teacher's targets and the prompt's ``Product:`` line are the same).
- ``personalized`` is true only when the served title differs from the original (case,
  punctuation, whitespace and plural endings folded).
- ``lookup.parquet``: for each clustered user and each ad: the user's cluster and the title the
  user gets (the served title of a selected pair, else the original title).
"""

from __future__ import annotations

import inspect
import logging
import time
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field
from tqdm.auto import tqdm

from hllm_creator import tracking
from hllm_creator.config import StepConfig
from hllm_creator.creative.copy import is_copy, normalize_title
from hllm_creator.creative.facts import compositions
from hllm_creator.creative.gate import catalog_names, title_reasons
from hllm_creator.creative.prompts import N_FACTS
from hllm_creator.creative.titles import clean_title
from hllm_creator.data import load_dataset
from hllm_creator.data.schema import DataError
from hllm_creator.infer import cluster as cl
from hllm_creator.infer.common import CREATIVES, LOOKUP, MATCHES, resolve_file
from hllm_creator.infer.embed import histories, load_model
from hllm_creator.infer.harm import (
    cluster_content,
    content_gains,
    do_no_harm,
    harm_curve,
    harm_gains,
    item_vectors,
    title_vectors,
)
from hllm_creator.infer.match import MEMBER_ID_PARTS, member_id_parts
from hllm_creator.io import write_json, write_parquet

log = logging.getLogger(__name__)
GENERATE_META = "generate_meta.json"
SOURCES = ("generated", "slot", "rescored", "predictor", "distinct", "original")


class GenerateConfig(StepConfig):
    """Config of ``hllm-creator generate``."""

    model_dir: str
    data_dir: str
    matches: str
    clusters_dir: str
    batch_size: int = Field(16, ge=1, description="(ad, cluster) pairs per generate call.")
    do_sample: bool = Field(False, description="sample (temperature/top-p/top-k) instead of greedy decoding; "
                            "served titles are greedy by default, so they differ across clusters because the "
                            "slots differ, not by chance")
    temperature: float = Field(0.8, gt=0.0, description="sampling temperature")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="nucleus sampling mass")
    top_k: int = Field(50, ge=0, description="top-k sampling")
    max_new_tokens: int = Field(64, ge=1, description="longest generated title in tokens (the 150-character title "
                                "budget is about 40)")
    seed: int = Field(0, description="batch b is sampled with seed + b")
    slot: Literal["medoid", "mean"] = Field("medoid", description="cluster slot: the member nearest the centroid "
                                            "(medoid) or the mean member embedding")
    rescore: bool = Field(True, description="when a generation fails the gate or copies the original, serve the "
                          "Creative LLM's most likely gate-passing composition of the ad's core and one fact")
    select: Literal["generated", "slot", "predictor"] = Field(
        "generated", description="what is served: 'generated' = the Creative LLM's greedy title (the slot reaches it "
        "through the decoder and the fact-copy head) when it passes the gate, else the rescored composition "
        "(the original + one fact); 'slot' = of the ad's gate-passing compositions, the one whose fact the cluster's "
        "slot points at (the slot-fact head; the default before the fact-copy head); 'predictor' = of the greedy "
        "title (when it passes the gate) and the ad's gate-passing compositions, the one the Item-User predictor "
        "rates the likeliest click for the cluster (the do-no-harm estimate)")
    distinct: bool = Field(True, description="per ad, in match-rank order, a cluster whose served title repeats a "
                           "better-ranked cluster's gets the slot's pick among the ad's gate-passing compositions "
                           "not yet served for the ad (source 'distinct'); off: repeats are served as they are")
    harm_rule: Literal["both", "predictor", "content", "none"] = Field(
        "both", description="do no harm: serve the personalized title only where the product's own estimates say it "
        "fits the cluster at least as well as the original title, else the original (source 'original', reason "
        "'do no harm'). 'predictor' = the Item-User predictor's log-odds of a click by the cluster with the "
        "personalized title minus with the original, at least harm_threshold; 'content' = the Item LLM's cosine of "
        "the personalized title to the cluster's clicked items minus the original's, at least content_threshold; "
        "'both' (default) = both estimates agree (a predictor trained on little data rates titles by little more "
        "than item popularity: the demo's ranks no better than popularity by AUC); 'none' = no check")
    harm_threshold: float = Field(0.0, description="the predictor's log-odds gain a personalized title needs to be "
                                  "served (0: at least as likely a click as the original)")
    content_threshold: float = Field(0.0, description="the Item-LLM cosine gain (to the cluster's clicked items) a "
                                     "personalized title needs under harm_rule 'content' or 'both' (0: at least as "
                                     "close as the original)")
    max_pairs: int | None = Field(None, ge=1, description="only the first N selected pairs (smoke runs)")
    bf16: bool = Field(False, description="bf16 autocast for the Creative LLM (faster prefill on AMX CPUs and GPUs; "
                       "benchmarks/speed/batched_generation.py measures both)")


def ad_of(item: dict) -> dict:
    sp, cats = item.get("selling_points"), item.get("categories")
    return {"title": item["title"], "description": item.get("description") or "",
            "selling_points": list(sp) if sp is not None else [], "brand": item.get("brand") or None,
            "categories": list(cats) if cats is not None else []}


def ground(title: str, ad: dict, known_names=None) -> tuple[bool, list[str]]:
    """(servable, reasons) of ``title_reasons``: the gate every served title passes."""
    reasons = title_reasons(title, ad, known_names)
    return not reasons, reasons


def candidate_titles(ad: dict, known_names=None, *, with_facts: bool = False):
    """The ad's gate-passing compositions ``base - fact`` (``creative.facts.compositions``: the original
    within the title budget plus one fact; what a rescored title is chosen from);
    ``with_facts``: (titles, their facts)."""
    _, all_facts, composed = compositions(ad, N_FACTS)
    out, facts = [], []
    for f, t in zip(all_facts, composed):
        if ground(t, ad, known_names)[0] and not is_copy(t, ad["title"]):
            out.append(t)
            facts.append(f)
    return (out, facts) if with_facts else out


def rescore(model, slot: np.ndarray, prompt: tuple[str, str], candidates: list[str], bf16: bool = False) -> int:
    """Index of the candidate with the lowest NLL per token under ``slot`` (the decoder's choice)."""
    import torch

    n = len(candidates)
    b = model.creative_batch([prompt[0]] * n, [prompt[1]] * n, candidates)
    u = torch.from_numpy(np.repeat(np.asarray(slot, dtype=np.float32)[None], n, 0)).to(model.device)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        nll, cnt = model.response_nll(model.slot_embedding(u), b)
    return int(torch.argmin(nll.float() / cnt.clamp(min=1)).item())


def slot_pick(model, slot: np.ndarray, facts: list[str]) -> int:
    """Index of the fact the cluster's slot points at: the argmax of ``HLLMCreator.fact_pointer``
    (cosine of the slot, ``projector(std_user(u))``, with the mean input embedding of each fact's
    words), the slot-fact head trained in train (``slot_fact_loss``)."""
    import torch

    from hllm_creator.model.collate import fact_batch  # torch at import

    fb = fact_batch(model.tokenizers["creative"], [list(facts)])
    with torch.inference_mode():
        s = model.slot_embedding(torch.from_numpy(np.asarray(slot, dtype=np.float32)[None]).to(model.device))
        return int(model.fact_pointer(s, fb.to(model.device)).argmax(-1).item())


def make_distinct(model, recs: list[dict], ads: dict, user_slot: np.ndarray, known_names=None,
                  cands: dict | None = None) -> int:
    """In place, per ad in match-rank order (``score`` descending, stable): a record whose served
    ``title`` repeats (``creative.copy.normalize_title``) a better-ranked cluster's gets the slot's
    pick (``slot_pick``) among the ad's gate-passing compositions not yet served for the ad, with
    ``source`` "distinct"; with none left it keeps the repeat. Returns how many records changed."""
    cands = {} if cands is None else cands
    by_ad: dict[str, list[int]] = {}
    for k, r in enumerate(recs):
        by_ad.setdefault(r["item_id"], []).append(k)
    changed = 0
    for iid, ks in by_ad.items():
        used: set[str] = set()
        for k in sorted(ks, key=lambda k: -recs[k]["score"]):
            r = recs[k]
            key = normalize_title(r["title"])
            if key in used:
                if iid not in cands:
                    cands[iid] = candidate_titles(ads[iid], known_names, with_facts=True)
                titles_, facts_ = cands[iid]
                free = [j for j, t in enumerate(titles_) if normalize_title(t) not in used]
                if free:
                    j = free[slot_pick(model, user_slot[int(r["cluster_id"])], [facts_[x] for x in free])
                             if len(free) > 1 else 0]
                    r.update(title=titles_[j], source="distinct",
                             personalized=not is_copy(titles_[j], ads[iid]["title"]))
                    key = normalize_title(titles_[j])
                    changed += 1
            used.add(key)
    return changed


def pick_by_predictor(model, recs: list[dict], ads: dict, items: pd.DataFrame, cluster_emb: np.ndarray,
                      id_parts: np.ndarray | None, known_names=None, cands: dict | None = None, *,
                      bf16: bool = False) -> None:
    """In place (``select="predictor"``): each record serves, of its greedy title (when it passed the
    gate) and the ad's gate-passing compositions, the one with the largest ``harm_gains`` for its
    cluster (source "predictor")."""
    cands = {} if cands is None else cands
    options = []
    for r in recs:
        if r["item_id"] not in cands:
            cands[r["item_id"]] = candidate_titles(ads[r["item_id"]], known_names, with_facts=True)
        opts = list(dict.fromkeys(([r["llm_output"]] if r["grounded"] else []) + cands[r["item_id"]][0]))
        options.append(opts)
    flat = [{"item_id": r["item_id"], "cluster_id": r["cluster_id"], "title": t} for r, o in zip(recs, options)
            for t in o]
    gains = harm_gains(model, flat, items, cluster_emb, id_parts, bf16=bf16) if flat else np.zeros(0)
    k = 0
    for r, opts in zip(recs, options):
        if opts:
            j = int(np.argmax(gains[k:k + len(opts)]))
            r.update(title=opts[j], source="predictor", personalized=not is_copy(opts[j], r["original_title"]))
        k += len(opts)


def generate_pairs(model, pairs: pd.DataFrame, items: pd.DataFrame, user_slot: np.ndarray,
                   cfg: GenerateConfig, *, progress: bool = True, known_names=None,
                   cluster_emb: np.ndarray | None = None, id_parts: np.ndarray | None = None,
                   content: np.ndarray | None = None) -> pd.DataFrame:
    """pairs (item_id, cluster_id, score) -> creatives (one generation per row, gated, served title).
    ``cluster_emb`` (+ ``id_parts``): what the predictor scores a cluster with; ``content``: what its
    members click (``cluster_content``); for the do-no-harm check (``harm_rule``); None: that estimate
    is not made."""
    import torch

    by_id = {r["item_id"]: r for r in items.to_dict("records")}
    ads = {iid: ad_of(by_id[iid]) for iid in pairs["item_id"].unique()}
    prompts = {iid: model.build_prompts(ad) for iid, ad in ads.items()}
    rows = pairs.reset_index(drop=True)
    raw: list[str] = []
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
    cands: dict[str, tuple[list[str], list[str]]] = {}
    recs = []
    for r, out in zip(rows.to_dict("records"), raw):
        iid = r["item_id"]
        ad = ads[iid]
        cand = clean_title(out)
        ok, reasons = ground(cand, ad, known_names)
        if ok and is_copy(cand, ad["title"]):
            ok, reasons = False, ["copy: the generation is the original title"]
        title, source = (cand, "generated") if ok else (ad["title"], "original")
        use_slot = cfg.select == "slot"
        if (use_slot or (not ok and cfg.rescore)) and hasattr(model, "response_nll"):
            if iid not in cands:
                cands[iid] = candidate_titles(ad, known_names, with_facts=True)
            titles_, facts_ = cands[iid]
            if titles_:
                if use_slot:
                    k = slot_pick(model, user_slot[int(r["cluster_id"])], facts_) if len(titles_) > 1 else 0
                else:
                    k = rescore(model, user_slot[int(r["cluster_id"])], prompts[iid], titles_, cfg.bf16)
                title, source = titles_[k], ("slot" if use_slot else "rescored")
        recs.append({"item_id": iid, "cluster_id": int(r["cluster_id"]), "original_title": ad["title"],
                     "llm_output": cand, "raw_output": out, "score": float(r["score"]), "grounded": ok,
                     "reasons": reasons, "title": title, "source": source,
                     "personalized": not is_copy(title, ad["title"])})
    if cfg.select == "predictor" and cluster_emb is not None:
        pick_by_predictor(model, recs, ads, items, cluster_emb, id_parts, known_names, cands, bf16=cfg.bf16)
    if cfg.distinct and hasattr(model, "fact_pointer"):
        make_distinct(model, recs, ads, user_slot, known_names, cands)
    use_pred = cfg.harm_rule in ("predictor", "both") and cluster_emb is not None and hasattr(model, "score")
    use_content = cfg.harm_rule in ("content", "both") and content is not None
    vectors = title_vectors(model, recs, items, bf16=cfg.bf16) if (use_pred or use_content) and recs else None
    gains = harm_gains(model, recs, items, cluster_emb, id_parts, bf16=cfg.bf16, vectors=vectors) if use_pred \
        else np.zeros(len(recs))
    cg = content_gains(model, recs, items, content, bf16=cfg.bf16, vectors=vectors) if use_content else None
    do_no_harm(recs, gains, cfg.harm_threshold if use_pred else -np.inf, cg, cfg.content_threshold)
    cols = ["item_id", "cluster_id", "original_title", "llm_output", "raw_output", "score", "grounded",
            "reasons", "title", "source", "personalized", "candidate_title", "harm_gain", "content_gain"]
    return pd.DataFrame(recs, columns=cols).astype({"cluster_id": "int64", "score": "float32", "grounded": bool,
                                                    "personalized": bool, "harm_gain": "float64",
                                                    "content_gain": "float64"})


def lookup(assignments: pd.DataFrame, creatives: pd.DataFrame, items: pd.DataFrame,
           ad_ids: list[str]) -> pd.DataFrame:
    """user -> cluster -> title per ad (personalized for selected + grounded pairs, else original)."""
    titles = dict(zip(items["item_id"], items["title"]))
    pers = {(r.item_id, int(r.cluster_id)): r.title for r in creatives.itertuples()
            if getattr(r, "personalized", r.grounded)}
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
    f = resolve_file(path, MATCHES)
    m = pd.read_parquet(f)
    for col in ("item_id", "cluster_id", "score", "rank", "selected"):
        if col not in m.columns:
            raise DataError(f"missing column {col!r}; found {list(m.columns)}", file=str(f), column=col)
    return m


def run(cfg: GenerateConfig, out: str | Path, *, progress: bool = True, model=None) -> dict:
    """The step: generate for the selected pairs; write creatives.parquet, lookup.parquet, meta."""
    t0 = time.time()
    ds = load_dataset(cfg.data_dir)
    _, cluster_emb, asg, cmeta = cl.load(cfg.clusters_dir)
    user_slot = cl.load_slots(cfg.clusters_dir, cfg.slot)
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
        id_parts = content = None
        hist = None
        if cfg.harm_rule in ("predictor", "both") and getattr(model, "predictor_items", None):
            mdir = Path(cfg.matches) if Path(cfg.matches).is_dir() else Path(cfg.matches).parent
            if (mdir / MEMBER_ID_PARTS).exists():
                id_parts = np.load(mdir / MEMBER_ID_PARTS)
            else:
                hist = histories(ds.interactions, cmeta.get("history") or "no-test")
                id_parts = member_id_parts(model, asg, hist, len(cluster_emb))
        if cfg.harm_rule in ("content", "both"):
            hist = hist if hist is not None else histories(ds.interactions, cmeta.get("history") or "no-test")
            hist.index = hist.index.astype(str)
            members = set(asg["user_id"].astype(str))
            needed = {str(i) for u, h in hist.items() if u in members for i in h}
            vecs = item_vectors(model, cfg.model_dir, ds.items, needed, bf16=cfg.bf16)
            content = cluster_content(vecs, asg, hist, len(cluster_emb)) if vecs else None
        cr = generate_pairs(model, pairs, ds.items, user_slot, cfg, progress=progress,
                            known_names=catalog_names(ds.items), cluster_emb=cluster_emb, id_parts=id_parts,
                            content=content)
        gen_s = time.time() - t1
        lk = lookup(asg, cr, ds.items, ad_ids)
        out = Path(out)
        write_parquet(cr, out / CREATIVES)
        write_parquet(lk, out / LOOKUP)
        n = len(cr)
        fallbacks = int((cr["source"] == "original").sum())
        reasons = pd.Series([r for rs in cr.loc[~cr["grounded"], "reasons"] for r in rs]).value_counts()
        # distinct as the personalization step counts it (a case or plural difference is no other title)
        per_ad = cr.assign(_n=cr["title"].map(normalize_title)).groupby("item_id")["_n"].nunique() if n \
            else pd.Series(dtype=float)
        meta = {"generations": n, "grounded": int(cr["grounded"].sum()), "fallbacks": fallbacks,
                "fallback_rate": fallbacks / n if n else 0.0,
                **{f"source_{k}": int((cr["source"] == k).sum()) for k in SOURCES},
                "copy_rate": float((~cr["personalized"]).mean()) if n else 0.0,
                "distinct_titles_per_ad": float(per_ad.mean()) if n else 0.0,
                "fallback_reasons": {str(k): int(v) for k, v in reasons.head(20).items()},
                "ads": len(ad_ids), "users": int(len(asg)), "lookup_rows": int(len(lk)),
                "personalized_share": float(lk["personalized"].mean()) if len(lk) else 0.0,
                "changed_titles": int(cr["personalized"].sum()),
                "harm_rule": cfg.harm_rule, "harm_threshold": cfg.harm_threshold,
                "content_threshold": cfg.content_threshold,
                "served_personalized_share": float(cr["personalized"].mean()) if n else 0.0,
                "do_no_harm_original": int(cr["reasons"].map(lambda rs: any(str(x).startswith("do no harm")
                                                                            for x in rs)).sum()) if n else 0,
                "harm_curve": harm_curve(cr),
                "generate_seconds": round(gen_s, 2), "total_seconds": round(time.time() - t0, 2),
                "titles_per_second": round(n / max(gen_s, 1e-9), 3), "model_hash": model.model_hash}
        write_json(meta, out / GENERATE_META)
        tracking.log_metrics({k: v for k, v in meta.items() if isinstance(v, (int, float))})
        table = cr[["cluster_id", "item_id", "original_title", "llm_output", "title", "source", "grounded",
                    "score"]].copy()
        table["reasons"] = cr["reasons"].map(lambda r: "; ".join(r))
        tracking.log_table(table.sort_values(["cluster_id", "item_id"]), "titles_per_cluster")
        tracking.log_json(meta, GENERATE_META)
    return meta
