"""dataset-construct: the CoT teacher (DESIGN section 1) over any OpenAI-compatible endpoint.

Per user: (1) Profile from the last N clicked titles (oldest first); (2) Rewrite the title of the
user's next item (the *valid* target of the leave-last-out split, so the test target stays held
out); (3) Filter: (a) the deterministic grounding check, (b) an LLM verification that lists
unsupported claims. Kept rows -> ``train.parquet`` (the reference schema plus extras); every other
row -> ``rejected.parquet`` with the step and the reason; ``summary.json`` with acceptance per stage.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import Field

from hllm_creator.config import StepConfig
from hllm_creator.llm.client import LLMConfig, Request

log = logging.getLogger(__name__)

REFERENCE_COLUMNS = ["user_profile", "original_title", "original_description", "prompt1", "prompt2", "response",
                     "title_list", "item_id_list"]
EXTRA_COLUMNS = ["user_id", "target_item_id", "teacher_model", "prompt_version", "grounding_ok",
                 "grounding_reasons", "verify_ok", "verify_unsupported"]
REJECT_COLUMNS = ["user_id", "target_item_id", "step", "reason", "candidate_title", "raw_reply"]

# tight limits: a 135M model copies whole titles into every field and runs out of tokens otherwise
_STR_LIST = {"type": "array", "items": {"type": "string", "maxLength": 30}, "maxItems": 2}
PROFILE_SCHEMA = {
    "type": "object",
    "properties": {"long_term_interests": _STR_LIST, "short_term_interests": _STR_LIST,
                   "preferences": _STR_LIST, "needs": _STR_LIST,
                   "description": {"type": "string", "minLength": 1, "maxLength": 120}},
    "required": ["long_term_interests", "short_term_interests", "preferences", "needs", "description"],
    "additionalProperties": False,
}
REWRITE_SCHEMA = {"type": "object", "properties": {"title": {"type": "string", "minLength": 3, "maxLength": 160}},
                  "required": ["title"], "additionalProperties": False}
VERIFY_SCHEMA = {"type": "object", "properties": {"unsupported_claims": _STR_LIST},
                 "required": ["unsupported_claims"], "additionalProperties": False}


class ConstructConfig(StepConfig):
    data: str = Field(..., description="dataset dir (hllm-creator data prepare)")
    out: str = Field(..., description="output dir")
    users: int = Field(64, ge=1, description="number of users (deterministic sample)")
    seed: int = 0
    history_len: int = Field(10, ge=1, le=50, description="last N clicked titles fed to the profile step")
    target: str = Field("valid", pattern="^(valid|test)$", description="which split target to rewrite")
    max_new_words: int = Field(8, ge=0, description="rewrite may add at most this many words")
    desc_chars: int = Field(600, ge=0, description="description characters shown to the teacher")
    prompt_version: str = "v1"
    profile_max_tokens: int = 320
    rewrite_max_tokens: int = 64
    verify_max_tokens: int = 64
    llm_verify: bool = Field(True, description="run filter stage (b), the LLM verification call")
    llm: LLMConfig = Field(default_factory=LLMConfig)


def select_users(split_users: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """A deterministic sample of ``n`` users (all when fewer), sorted by user_id."""
    if len(split_users) <= n:
        return split_users.sort_values("user_id").reset_index(drop=True)
    return split_users.sample(n=n, random_state=seed).sort_values("user_id").reset_index(drop=True)


def profile_request(titles: list[str], cfg: ConstructConfig, tag: Any) -> Request:
    from hllm_creator.teacher.prompts import history_block, render_chat

    msgs = render_chat("profile", {"history": history_block(titles)}, cfg.prompt_version)
    return Request(messages=msgs, schema=PROFILE_SCHEMA, name="profile", max_tokens=cfg.profile_max_tokens, tag=tag)


def profile_text(profile: dict) -> str:
    """The profile as the compact JSON text stored in ``user_profile`` (what recon regenerates)."""
    return json.dumps(profile, ensure_ascii=False, separators=(", ", ": "))


def ad_values(item: dict, desc_chars: int) -> dict[str, str]:
    from hllm_creator.teacher.prompts import selling_points_text, untrusted

    return {"title": untrusted(item["title"]), "description": untrusted(item.get("description") or "", desc_chars),
            "selling_points": selling_points_text(item.get("selling_points"))}


def rewrite_request(profile: dict, item: dict, cfg: ConstructConfig, tag: Any) -> Request:
    from hllm_creator.teacher.prompts import render_chat, untrusted

    values = {"profile": untrusted(profile_text(profile), 1500), "max_new_words": cfg.max_new_words,
              **ad_values(item, cfg.desc_chars)}
    return Request(messages=render_chat("rewrite", values, cfg.prompt_version), schema=REWRITE_SCHEMA,
                   name="rewrite", max_tokens=cfg.rewrite_max_tokens, tag=tag)


def verify_request(candidate: str, item: dict, cfg: ConstructConfig, tag: Any) -> Request:
    from hllm_creator.teacher.prompts import render_chat, untrusted

    values = {"candidate": untrusted(candidate, 300), **ad_values(item, cfg.desc_chars)}
    return Request(messages=render_chat("verify", values, cfg.prompt_version), schema=VERIFY_SCHEMA,
                   name="verify", max_tokens=cfg.verify_max_tokens, tag=tag)


def clean_title(title: str) -> str:
    t = " ".join((title or "").split()).strip().strip('"').strip("'").strip()
    return re.sub(r"^(personalized )?title:\s*", "", t, flags=re.I)


def effective_unsupported(claims: list[str], item: dict) -> list[str]:
    """The verifier's claims that the ad's text does not literally contain (a small model sometimes
    lists a phrase that is in the ad: that is the verifier's error, not the title's)."""
    from hllm_creator.teacher.grounding import Ad, normalize, support_text

    src, _ = support_text(Ad.from_item(item))
    out = []
    for c in claims:
        n = normalize(c).strip(" .,:;!-\"'")
        if n and n not in src:
            out.append(c)
    return out


def construct(cfg: ConstructConfig, client=None) -> dict:
    """Run the three CoT steps; write train.parquet, rejected.parquet, summary.json into ``cfg.out``."""
    from hllm_creator.data import leave_last_out, load_dataset
    from hllm_creator.io import atomic_dir, write_json, write_parquet
    from hllm_creator.llm.client import LLMClient, default_cache_path
    from hllm_creator.teacher.grounding import Ad, catalog_names, check_grounding
    from hllm_creator.teacher.prompts import creative_prompts

    t_start = time.perf_counter()
    ds = load_dataset(cfg.data)
    if client is None:
        llm_cfg = cfg.llm if cfg.llm.cache_path else cfg.llm.model_copy(update={"cache_path": default_cache_path()})
        client = LLMClient(llm_cfg)
    items = {r["item_id"]: r for r in ds.items.to_dict("records")}
    split = leave_last_out(ds.interactions)
    users = select_users(split.users, cfg.users, cfg.seed)
    known = catalog_names(ds.items)
    target_col = f"{cfg.target}_target"

    rows: dict[str, dict] = {}
    rejected: list[dict] = []
    timings: dict[str, float] = {}

    def reject(uid, step, reason, cand=None, raw=None):
        rejected.append({"user_id": uid, "target_item_id": rows[uid]["target_item_id"], "step": step,
                         "reason": reason, "candidate_title": cand, "raw_reply": (raw or "")[:2000]})

    for u in users.to_dict("records"):
        hist = list(u["history"]) if cfg.target == "valid" else [*u["history"], u["valid_target"]]
        hist = hist[-cfg.history_len:]
        rows[u["user_id"]] = {"user_id": u["user_id"], "target_item_id": u[target_col], "item_id_list": hist,
                              "title_list": [items[i]["title"] for i in hist]}
    # -- 1. profile
    t0 = time.perf_counter()
    res = client.map([profile_request(r["title_list"], cfg, uid) for uid, r in rows.items()], desc="1/3 profile")
    timings["profile_s"] = time.perf_counter() - t0
    alive = []
    for r in res:
        if r.ok:
            rows[r.tag]["profile"] = r.value
            alive.append(r.tag)
        else:
            reject(r.tag, "profile", r.error, raw=r.raw)
    n_profile = len(alive)
    # -- 2. rewrite
    t0 = time.perf_counter()
    res = client.map([rewrite_request(rows[u]["profile"], items[rows[u]["target_item_id"]], cfg, u) for u in alive],
                     desc="2/3 rewrite")
    timings["rewrite_s"] = time.perf_counter() - t0
    alive = []
    for r in res:
        if not r.ok:
            reject(r.tag, "rewrite", r.error, raw=r.raw)
            continue
        title = clean_title(r.value["title"])
        if not title:
            reject(r.tag, "rewrite", "empty title", raw=r.raw)
            continue
        rows[r.tag]["response"] = title
        alive.append(r.tag)
    n_rewrite = len(alive)
    # -- 3a. deterministic grounding
    t0 = time.perf_counter()
    kept = []
    for u in alive:
        row = rows[u]
        item = items[row["target_item_id"]]
        hist_brands = {items[i]["brand"] for i in row["item_id_list"] if items[i].get("brand")}
        g = check_grounding(row["response"], Ad.from_item(item), known_names=known | hist_brands,
                            max_new_words=cfg.max_new_words)
        row["grounding_ok"], row["grounding_reasons"] = g.ok, g.reasons
        if g.ok:
            kept.append(u)
        else:
            reject(u, "grounding", "; ".join(g.reasons), cand=row["response"])
    timings["grounding_s"] = time.perf_counter() - t0
    n_grounding = len(kept)
    # -- 3b. LLM verification
    alive, kept = kept, []
    if cfg.llm_verify:
        t0 = time.perf_counter()
        res = client.map([verify_request(rows[u]["response"], items[rows[u]["target_item_id"]], cfg, u)
                          for u in alive], desc="3/3 verify")
        timings["verify_s"] = time.perf_counter() - t0
        for r in res:
            row = rows[r.tag]
            if not r.ok:
                reject(r.tag, "verify", r.error, cand=row["response"], raw=r.raw)
                continue
            unsupported = effective_unsupported(r.value["unsupported_claims"], items[row["target_item_id"]])
            row["verify_ok"], row["verify_unsupported"] = not unsupported, unsupported
            if unsupported:
                reject(r.tag, "verify", "unsupported claims: " + "; ".join(unsupported), cand=row["response"],
                       raw=r.raw)
            else:
                kept.append(r.tag)
    else:
        for u in alive:
            rows[u]["verify_ok"], rows[u]["verify_unsupported"] = None, []
        kept = alive
    # -- outputs
    out_rows = []
    for u in sorted(kept):
        row = rows[u]
        item = items[row["target_item_id"]]
        p1, p2 = creative_prompts(item, cfg.prompt_version)
        out_rows.append({
            "user_profile": profile_text(row["profile"]), "original_title": item["title"],
            "original_description": item.get("description") or "", "prompt1": p1, "prompt2": p2,
            "response": row["response"], "title_list": row["title_list"], "item_id_list": row["item_id_list"],
            "user_id": u, "target_item_id": row["target_item_id"], "teacher_model": client.model,
            "prompt_version": cfg.prompt_version, "grounding_ok": row["grounding_ok"],
            "grounding_reasons": row["grounding_reasons"], "verify_ok": row["verify_ok"],
            "verify_unsupported": row["verify_unsupported"]})
    train = pd.DataFrame(out_rows, columns=REFERENCE_COLUMNS + EXTRA_COLUMNS)
    rej = pd.DataFrame(rejected, columns=REJECT_COLUMNS)
    n = len(rows)
    stats = client.stats()
    summary = {
        "users": n, "kept": len(train), "rejected": len(rej),
        "acceptance": {"profile": n_profile / n if n else 0.0,
                       "rewrite": n_rewrite / max(n_profile, 1),
                       "grounding": n_grounding / max(n_rewrite, 1),
                       "verify": len(kept) / max(n_grounding, 1),
                       "overall": len(kept) / n if n else 0.0},
        "rejected_by_step": rej["step"].value_counts().to_dict(),
        "timings_s": {**{k: round(v, 3) for k, v in timings.items()},
                      "total_s": round(time.perf_counter() - t_start, 3)},
        "llm": stats, "teacher_model": client.model, "prompt_version": cfg.prompt_version,
        "dataset": ds.name, "target": cfg.target,
    }
    with atomic_dir(cfg.out) as tmp:
        write_parquet(train, tmp / "train.parquet")
        write_parquet(rej, tmp / "rejected.parquet")
        write_json(summary, tmp / "summary.json")
    log.info("construct: %d users -> %d kept, %d rejected; %d/%d LLM calls from cache", n, len(train), len(rej),
             stats["llm_cache_hits"], stats["llm_calls"])
    return summary


def log_summary(summary: dict, out: str | Path) -> None:
    """Acceptance per stage, token use and timings to the active MLflow run, plus the outputs."""
    from hllm_creator.tracking import log_artifact, log_json, log_metrics, log_table

    m = {f"acceptance_{k}": v for k, v in summary["acceptance"].items()}
    m.update({"users": summary["users"], "kept": summary["kept"], "rejected": summary["rejected"]})
    m.update({f"time_{k}": v for k, v in summary["timings_s"].items()})
    m.update(summary["llm"])
    log_metrics(m)
    log_json(summary, "construct_summary.json")
    out = Path(out)
    train = pd.read_parquet(out / "train.parquet")
    if len(train):
        log_table(train[["user_id", "original_title", "response"]].head(50), "sample_titles")
    for f in ("train.parquet", "rejected.parquet"):
        log_artifact(out / f, "construct")
