"""The ``predictor`` KServe model: user history + candidate ad ids -> user cluster, Item-User match
score per ad, and the pre-generated personalized title for (ad, cluster) when ``match`` selected
that pair (else the original title with the reason).
"""

from __future__ import annotations

import logging

import numpy as np

from hllm_creator.serving.base import BatchedModel, history_reasons  # noqa: F401 (re-exported)
from hllm_creator.serving.schemas import PredictorInstance

log = logging.getLogger(__name__)


class Predictor(BatchedModel):
    instance_cls = PredictorInstance
    default_wait_ms = 3.0

    def warmup(self) -> None:
        ids = list(self.assets.items)[:2]
        if ids:
            self.run_batch([PredictorInstance(user_history=ids, candidate_ad_ids=ids[:1])])

    def run_batch(self, insts: list[PredictorInstance]) -> list[dict]:
        import torch

        a = self.assets
        user_emb, infos = a.user_embeddings([i.user_history for i in insts])
        cids = a.assign(user_emb)
        cond = a.conditioning(user_emb, cids, [i.score_with for i in insts], for_scoring=True)
        known = sorted({x for i in insts for x in i.candidate_ad_ids if x in a.items})
        col = {x: j for j, x in enumerate(known)}
        scores = np.full((len(insts), len(known)), np.nan, np.float32)
        ok = np.nonzero(np.isfinite(cond).all(axis=1))[0]
        if len(known) and len(ok):
            item_emb = a.item_embeddings([a.item_text_of(x) for x in known])
            with torch.no_grad():
                s = a.model.score(torch.from_numpy(cond[ok]), torch.from_numpy(item_emb))
            scores[ok] = s.detach().float().cpu().numpy()
        out = []
        for r, (inst, info) in enumerate(zip(insts, infos)):
            cid = int(cids[r])
            reasons = history_reasons(info, cid, a.centroids is not None)
            ads = []  # fallbacks are counted per ad answer
            for ad in inst.candidate_ad_ids:
                ads.append(self._ad(ad, cid, scores[r, col[ad]] if ad in col else np.nan, info.used == 0))
            out.append({"cluster_id": cid if cid >= 0 else None, "history_used": info.used,
                        "reasons": reasons, "ads": ads})
        return out

    def _ad(self, ad: str, cid: int, score: float, cold: bool) -> dict:
        a = self.assets
        if ad not in a.items:
            self.fallback("unknown_ad")
            return {"ad_id": ad, "score": None, "original_title": None, "title": None, "personalized": False,
                    "reasons": [f"unknown ad id {ad!r}: not in the item catalog"]}
        original = str(a.items[ad]["title"])
        sc = float(score) if np.isfinite(score) else None
        base = {"ad_id": ad, "score": sc, "original_title": original}
        if cold:
            self.fallback("cold_start")
            return base | {"title": original, "personalized": False,
                           "reasons": ["cold start: original title"]}
        if cid < 0:
            self.fallback("no_cluster")
            return base | {"title": original, "personalized": False,
                           "reasons": ["no cluster: original title"]}
        key = (ad, cid)
        if key not in a.selected:
            self.fallback("not_selected")
            why = (f"(ad {ad}, cluster {cid}) was not among the top clusters selected for this ad"
                   if ad in a.matched_items else f"ad {ad} was not matched to any cluster offline")
            return base | {"title": original, "personalized": False, "reasons": [why + ": original title"]}
        row = a.creatives.get(key)
        if row is None:
            self.fallback("no_creative")
            return base | {"title": original, "personalized": False,
                           "reasons": [f"no pre-generated title for (ad {ad}, cluster {cid}): original title"]}
        from hllm_creator.creative.titles import same_title

        rs = row.get("reasons")
        rs = [str(x) for x in rs] if rs is not None and not isinstance(rs, str) else ([rs] if rs else [])
        if isinstance(row.get("title"), str) and "source" in row:
            # generate's served title (generated, or rescored from the ad's gated compositions, or the
            # original); personalized only when it differs from the original
            text = row["title"]
            if not text.strip() or same_title(text, original):
                self.fallback("not_grounded")
                return base | {"title": original, "personalized": False,
                               "reasons": ["no personalized title passed the gate for this pair: original title", *rs]}
            return base | {"title": text, "personalized": True, "reasons": [], "source": str(row["source"])}
        grounded = bool(row.get("grounded", True))  # creatives.parquet written before served titles existed
        text = row.get("llm_output")
        if not grounded or not isinstance(text, str) or not text.strip() or same_title(text, original):
            self.fallback("not_grounded")
            return base | {"title": original, "personalized": False,
                           "reasons": ["pre-generated title failed the grounding check: original title", *rs]}
        return base | {"title": text, "personalized": True, "reasons": []}
