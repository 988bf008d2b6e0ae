"""dataset-construct: the chain-of-thought teacher (paper: CoT dataset construction), built so that
even a 135M embedded teacher yields personalized, CONTRASTIVE and grounded rows.

For each ad (the most-clicked items, the same list ``match`` offers by default), per step:

1. **Interests** (deterministic, ``creative.interests``): each candidate user's interests from the
   click history: idf- and recency-weighted words of the clicked titles and leaf categories, plus top
   categories and brands. The JSON profile that recon/align regenerate is built from them.
2. **Which fact** (deterministic): the ad's fact phrases (``creative.facts.fact_phrases``, short
   phrases copied from the ad's own text that add a content word to the original title); each user
   is matched to the phrase that carries most of their interest weight. For every phrase, the users
   it fits best (by margin over the ad's other phrases) are taken: the same ad, users of different
   interests, different targets. That contrast is what teaches the Creative LLM's user slot.
3. **The title** (the teacher LLM, optional): the LLM phrases the original + featured fact as a title;
   its reply must pass the gate (every content word from the ad, no claims, no repetition, within the
   title budget of 150 characters) and keep 80% of what the original says and the fact. A reply that
   does not is replaced by the deterministic composition ``base - Fact`` (``creative.facts.compositions``:
   the original within the budget plus the fact; ``title_source`` says which, the LLM's reason is in
   ``rejected.parquet``).
4. **Filter**: every kept title passes the gate and adds a content word beyond the original title,
   else the row is rejected (``copy``, ``grounding``).

Users in the evaluation hold-out (``creative.holdout``) never get ``split == "train"`` rows; a few
of them get ``split == "heldout"`` rows for the slot-sensitivity evaluation. No user's last click
(test target) is read. Outputs: ``train.parquet`` (reference columns + extras), ``rejected.parquet``
(step, reason), ``summary.json`` (acceptance per step, copy rate, titles per ad, timings).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from hllm_creator.config import StepConfig
from hllm_creator.creative import interests as I
from hllm_creator.creative.facts import compose, compositions, content_words
from hllm_creator.creative.gate import TITLE_MAX_CHARS, TITLE_MAX_WORDS, catalog_names, title_reasons
from hllm_creator.creative.holdout import is_heldout
from hllm_creator.creative.prompts import VERSION, creative_prompts
from hllm_creator.creative.titles import clean_title
from hllm_creator.data import leave_last_out, load_dataset
from hllm_creator.infer.match import default_ads
from hllm_creator.io import atomic_dir, write_json, write_parquet
from hllm_creator.llm.client import LLMClient, LLMConfig, Request, default_cache_path
from hllm_creator.prompts import render_chat, untrusted
from hllm_creator.tracking import log_artifact, log_json, log_metrics, log_table

log = logging.getLogger(__name__)

REFERENCE_COLUMNS = ["user_profile", "original_title", "original_description", "prompt1", "prompt2", "response",
                     "title_list", "item_id_list"]
EXTRA_COLUMNS = ["user_id", "target_item_id", "split", "facts", "fact_index", "featured_fact", "fit",
                 "interests", "title_source", "teacher_model", "prompt_version", "grounding_ok", "grounding_reasons"]
REJECT_COLUMNS = ["user_id", "target_item_id", "step", "reason", "candidate_title", "raw_reply"]
REWRITE_SCHEMA = {"type": "object", "properties": {"title": {"type": "string", "minLength": 3, "maxLength": TITLE_MAX_CHARS}},
                  "required": ["title"], "additionalProperties": False}


class ConstructConfig(StepConfig):
    data: str = Field(..., description="dataset dir (hllm-creator data prepare)")
    out: str = Field(..., description="output dir")
    ads: int = Field(60, ge=1, description="ads to write for: the N most-clicked items (match's default list)")
    users_per_fact: int = Field(3, ge=1, description="train users per (ad, fact phrase): the users that phrase fits "
                                "best; several phrases per ad give the contrast")
    heldout_per_ad: int = Field(2, ge=0, description="rows per ad for held-out users (split=heldout: eval only)")
    candidate_users: int = Field(4000, ge=10, description="train users scored per ad (seeded sample of the train pool)")
    max_facts: int = Field(4, ge=1, le=8, description="fact phrases per ad")
    history_len: int = Field(10, ge=1, le=50, description="last N clicked titles kept in title_list")
    max_history: int = Field(50, ge=1, description="item_id_list keeps the last N clicks")
    seed: int = 0
    llm_title: bool = Field(True, description="the teacher LLM phrases each title (gated; the deterministic "
                            "composition 'core - Fact' when it fails)")
    rewrite_max_tokens: int = Field(48, ge=8)
    max_title_words: int = Field(TITLE_MAX_WORDS, ge=3, description="the title budget in words (the gate's)")
    max_title_chars: int = Field(TITLE_MAX_CHARS, ge=20, description="the title budget in characters (the "
                                 "gate's): a composition keeps the original within it (creative.facts.keep_original)")
    prompt_version: str = "v2"
    llm: LLMConfig = Field(default_factory=LLMConfig)


def adds_content_word(title: str, original: str) -> bool:
    return bool(set(content_words(title)) - set(content_words(original)))


def keeps_product_and_fact(title: str, core: str, fact: str) -> list[str]:
    t = set(content_words(title))
    reasons = []
    core_w = set(content_words(core))
    if core_w and len(t & core_w) < max(1, int(0.8 * len(core_w))):
        reasons.append("drops what the original title says (keep at least 80% of its words)")
    if not set(content_words(fact)) <= t:
        reasons.append("leaves out the featured fact")
    return reasons


def title_request(core: str, fact: str, interests: list[str], cfg: ConstructConfig, tag) -> Request:
    values = {"core": untrusted(core, 160), "fact": untrusted(fact, 80),
              "interests": untrusted(", ".join(interests) or "varied products", 120)}
    return Request(messages=render_chat("rewrite", values, cfg.prompt_version), schema=REWRITE_SCHEMA,
                   name="title", max_tokens=cfg.rewrite_max_tokens, tag=tag)


def _pick_users(fits: np.ndarray, per_fact: int) -> list[tuple[int, int]]:
    """[(user row, fact index)]: per fact, the users whose best fact it is, by margin, fit > 0."""
    n, k = fits.shape
    best = fits.argmax(1)
    if k > 1:
        other = np.where(np.eye(k, dtype=bool)[best], -np.inf, fits).max(1)
        margin = fits[np.arange(n), best] - other
    else:
        margin = fits[:, 0]
    out = []
    for j in range(k):
        cand = np.where((best == j) & (fits[:, j] > 0))[0]
        cand = cand[np.argsort(-margin[cand], kind="stable")][:per_fact]
        out += [(int(u), j) for u in cand]
    return out


def construct(cfg: ConstructConfig, client=None) -> dict:
    """Run the four steps; write train.parquet, rejected.parquet, summary.json into ``cfg.out``."""

    t_start = time.perf_counter()
    ds = load_dataset(cfg.data)
    items = {r["item_id"]: r for r in ds.items.to_dict("records")}
    split = leave_last_out(ds.interactions)
    vocab = I.Vocabulary(list(items.values()))
    known = catalog_names(ds.items)
    ad_ids = default_ads(ds.items, ds.interactions, cfg.ads)
    users = split.users.reset_index(drop=True)
    held = users["user_id"].map(lambda u: is_heldout(str(u))).to_numpy()
    rng = np.random.default_rng(cfg.seed)
    pools = {}
    for name, mask in (("train", ~held), ("heldout", held)):
        idx = np.where(mask)[0]
        if name == "train" and len(idx) > cfg.candidate_users:
            idx = np.sort(rng.choice(idx, size=cfg.candidate_users, replace=False))
        pools[name] = idx
    # 1. interests of every candidate user (history only: the valid and test targets are not read)
    t0 = time.perf_counter()
    hist = {int(i): [str(x) for x in users.at[i, "history"]] for p in pools.values() for i in p}
    intr = {i: I.interests([items[x] for x in h], vocab) for i, h in hist.items()}
    clicked = {i: set(h) | {str(users.at[i, "valid_target"]), str(users.at[i, "test_target"])} for i, h in hist.items()}
    timings = {"interests_s": time.perf_counter() - t0}

    rejected: list[dict] = []
    rows: list[dict] = []
    n_facts_total = n_facts_kept = 0
    ads_contrast = 0
    pending: dict[tuple[str, int], dict] = {}  # (ad, fact) -> title job
    t0 = time.perf_counter()
    for ad in ad_ids:
        item = items[ad]
        core, all_facts, composed = compositions(item, cfg.max_facts, max_chars=cfg.max_title_chars,
                                                 max_words=cfg.max_title_words)
        facts = []
        for f, t in zip(all_facts, composed):
            n_facts_total += 1
            why = title_reasons(t, item, known)
            if why:
                rejected.append({"user_id": None, "target_item_id": ad, "step": "fact", "reason": "; ".join(why),
                                 "candidate_title": t, "raw_reply": ""})
            else:
                facts.append(f)
        n_facts_kept += len(facts)
        if not facts:
            rejected.append({"user_id": None, "target_item_id": ad, "step": "fact",
                             "reason": "the ad has no fact phrase beyond its title", "candidate_title": None,
                             "raw_reply": ""})
            continue
        for name in ("train", "heldout"):
            # users who clicked the ad (at any time, test target included) are not written for: a row
            # pairing a user with their own future click would leak it into training
            pool = [int(i) for i in pools[name] if ad not in clicked[int(i)]]
            if not pool:
                continue
            fits = np.array([[I.fit(f, intr[i]) for f in facts] for i in pool])
            if name == "train":
                picks = _pick_users(fits, cfg.users_per_fact)
            else:  # a few held-out users, different best facts first
                picks = _pick_users(fits, 1)[:cfg.heldout_per_ad]
            used_facts = set()
            for u, j in picks:
                i = pool[u]
                used_facts.add(j)
                pending.setdefault((ad, j), {"core": core, "fact": facts[j], "interests": set()})
                pending[(ad, j)]["interests"].update(
                    w for w in intr[i].top_words(8) if w in set(I.content_words(facts[j])))
                rows.append({"ad": ad, "user": i, "split": name, "facts": facts, "fact_index": j,
                             "fit": float(fits[u, j])})
            if name == "train" and len(used_facts) >= 2:
                ads_contrast += 1
    timings["facts_and_users_s"] = time.perf_counter() - t0

    # 3. the title of each (ad, fact): the teacher LLM phrases it, the gate decides
    titles: dict[tuple[str, int], tuple[str, str]] = {}
    n_llm_ok = n_llm = 0
    t0 = time.perf_counter()
    if cfg.llm_title and pending:
        if client is None:
            llm_cfg = cfg.llm if cfg.llm.cache_path else cfg.llm.model_copy(update={"cache_path": default_cache_path()})
            client = LLMClient(llm_cfg)
        keys = list(pending)
        res = client.map([title_request(pending[k]["core"], pending[k]["fact"], sorted(pending[k]["interests"]),
                                        cfg, n) for n, k in enumerate(keys)], desc="teacher titles")
        for r in res:
            k = keys[r.tag]
            n_llm += 1
            item = items[k[0]]
            if not r.ok:
                why = [f"teacher reply unusable: {r.error}"]
                cand = None
            else:
                cand = clean_title(r.value["title"])
                why = title_reasons(cand, item, known) + keeps_product_and_fact(cand, pending[k]["core"],
                                                                              pending[k]["fact"])
                if not why and not adds_content_word(cand, item["title"]):
                    why = ["copy: adds no content word beyond the original title"]
            if why:
                rejected.append({"user_id": None, "target_item_id": k[0], "step": "llm_title",
                                 "reason": "; ".join(why) + " (template used instead)", "candidate_title": cand,
                                 "raw_reply": (r.raw or "")[:2000]})
            else:
                titles[k] = (cand, "llm")
                n_llm_ok += 1
    for k, job in pending.items():
        titles.setdefault(k, (compose(job["core"], job["fact"]), "template"))
    timings["titles_s"] = time.perf_counter() - t0

    # 4. filter + rows
    out_rows = []
    for r in rows:
        item = items[r["ad"]]
        title, source = titles[(r["ad"], r["fact_index"])]
        uid = str(users.at[r["user"], "user_id"])
        why = title_reasons(title, item, known)
        if not adds_content_word(title, item["title"]):
            why.append("copy: adds no content word beyond the original title")
        if why:
            rejected.append({"user_id": uid, "target_item_id": r["ad"], "step": "grounding" if not why[-1].startswith(
                "copy") else "copy", "reason": "; ".join(why), "candidate_title": title, "raw_reply": ""})
            continue
        h = hist[r["user"]][-cfg.max_history:]
        it = intr[r["user"]]
        p1, p2 = creative_prompts(item, facts=r["facts"])
        out_rows.append({
            "user_profile": I.profile_text(I.profile(it)), "original_title": item["title"],
            "original_description": item.get("description") or "", "prompt1": p1, "prompt2": p2,
            "response": title, "title_list": [items[x]["title"] for x in h[-cfg.history_len:]],
            "item_id_list": h, "user_id": uid, "target_item_id": r["ad"], "split": r["split"],
            "facts": list(r["facts"]), "fact_index": int(r["fact_index"]),
            "featured_fact": r["facts"][r["fact_index"]], "fit": r["fit"], "interests": it.top_words(5),
            "title_source": source, "teacher_model": client.model if client is not None else "deterministic",
            "prompt_version": VERSION, "grounding_ok": True, "grounding_reasons": []})
    train = pd.DataFrame(out_rows, columns=REFERENCE_COLUMNS + EXTRA_COLUMNS)
    rej = pd.DataFrame(rejected, columns=REJECT_COLUMNS)
    tr = train[train["split"] == "train"] if len(train) else train
    per_ad = tr.groupby("target_item_id")["response"].nunique() if len(tr) else pd.Series(dtype=float)
    stats = client.stats() if client is not None else {}
    summary = {
        "ads": len(ad_ids), "ads_with_contrast": ads_contrast, "kept": len(train),
        "kept_train": int((train["split"] == "train").sum()), "kept_heldout": int((train["split"] == "heldout").sum()),
        "rejected": len(rej), "distinct_titles_per_ad": float(per_ad.mean()) if len(per_ad) else 0.0,
        "copy_rate": float(np.mean([not adds_content_word(t, o) for t, o in
                                    zip(train["response"], train["original_title"])])) if len(train) else 0.0,
        "title_source": train["title_source"].value_counts().to_dict() if len(train) else {},
        "acceptance": {"fact": n_facts_kept / max(n_facts_total, 1),
                       "llm_title": n_llm_ok / max(n_llm, 1) if cfg.llm_title else 0.0,
                       "overall": len(train) / max(len(rows), 1)},
        "rejected_by_step": rej["step"].value_counts().to_dict(),
        "timings_s": {**{k: round(v, 3) for k, v in timings.items()},
                      "total_s": round(time.perf_counter() - t_start, 3)},
        "llm": stats, "teacher_model": client.model if client is not None else "deterministic",
        "prompt_version": VERSION, "dataset": ds.name,
    }
    with atomic_dir(cfg.out) as tmp:
        write_parquet(train, tmp / "train.parquet")
        write_parquet(rej, tmp / "rejected.parquet")
        write_json(summary, tmp / "summary.json")
    log.info("construct: %d ads -> %d rows (%d train, %d held-out), %.2f distinct titles per ad, %d rejected",
             len(ad_ids), len(train), summary["kept_train"], summary["kept_heldout"],
             summary["distinct_titles_per_ad"], len(rej))
    return summary


def log_summary(summary: dict, out: str | Path) -> None:
    """Acceptance per step, copy rate, token use and timings to the active MLflow run, plus the outputs."""

    m = {f"acceptance_{k}": v for k, v in summary["acceptance"].items()}
    m.update({k: summary[k] for k in ("ads", "ads_with_contrast", "kept", "kept_train", "kept_heldout", "rejected",
                                      "distinct_titles_per_ad", "copy_rate")})
    m.update({f"time_{k}": v for k, v in summary["timings_s"].items()})
    m.update({k: v for k, v in summary["llm"].items() if isinstance(v, (int, float))})
    log_metrics(m)
    log_json(summary, "construct_summary.json")
    out = Path(out)
    train = pd.read_parquet(out / "train.parquet")
    if len(train):
        log_table(train[["target_item_id", "user_id", "split", "interests", "featured_fact", "response",
                         "title_source"]].head(200).astype(str), "sample_titles")
    for f in ("train.parquet", "rejected.parquet"):
        log_artifact(out / f, "construct")
