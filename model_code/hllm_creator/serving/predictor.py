"""The ``predictor`` KServe model: user history + candidate ad ids -> user cluster, Item-User match
score per ad, and the pre-generated personalized title for (ad, cluster) when ``match`` selected
that pair (else the original title with the reason).

Also home of :class:`BatchedModel`, the base of ``predictor`` and ``creative``: v1/v2 parsing,
400s for bad bodies, counters, background loading and micro-batching of concurrent requests.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from kserve import Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from hllm_creator.serving import metrics as M
from hllm_creator.serving.loading import MicroBatcher, ServingAssets, load_assets, resolve_model_dir
from hllm_creator.serving.schemas import InvalidRequest, PredictorInstance, parse_v1, parse_v2

log = logging.getLogger(__name__)


class BatchedModel(Model):
    """Shared request path: parse (v1 dict | v2 InferRequest) -> typed instances -> micro-batch."""

    instance_cls: type = None
    default_wait_ms: float = 5.0

    def __init__(self, name: str, *, model_dir: str | Path | None = None, model_uri: str | None = None,
                 artifacts: str | Path | None = None, items: str | Path | None = None,
                 max_batch: int = 32, max_wait_ms: float | None = None, device: str = "cpu"):
        super().__init__(name)
        self.ready = False
        self.model_dir, self.model_uri = model_dir, model_uri
        self.artifacts, self.items, self.device = artifacts, items, device
        self.max_batch = max_batch
        self.max_wait_s = (self.default_wait_ms if max_wait_ms is None else max_wait_ms) / 1000.0
        self.assets: ServingAssets | None = None
        self.batcher: MicroBatcher | None = None

    # -- loading
    def load(self) -> bool:
        d = resolve_model_dir(self.model_dir and str(self.model_dir), self.model_uri)
        self.assets = load_assets(d, self.artifacts, self.items, device=self.device)
        self.batcher = MicroBatcher(self.run_batch, max_batch=self.max_batch, max_wait_s=self.max_wait_s,
                                    name=self.name, group_key=self.group_key)
        self.warmup()
        self.ready = True
        return True

    def warmup(self) -> None:
        """One pass before ready, so the first request does not pay for lazy initialisation."""

    def group_key(self, inst: Any) -> Any:
        return None

    def run_batch(self, instances: list) -> list:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- request path
    async def predict(self, payload: Any, headers: dict | None = None) -> Any:
        v2 = isinstance(payload, InferRequest)
        M.REQUESTS.labels(model=self.name, protocol="v2" if v2 else "v1").inc()
        try:
            instances = parse_v2(payload, self.instance_cls) if v2 else parse_v1(payload, self.instance_cls)
        except InvalidRequest as e:
            raise InvalidInput(str(e)) from None
        results = await self.batcher.submit(instances)
        M.INSTANCES.labels(model=self.name).inc(len(results))
        if not v2:
            return {"predictions": results}
        data = [orjson.dumps(r).decode() for r in results]
        out = InferOutput(name="predictions", shape=[len(data)], datatype="BYTES", data=data)
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=[out])

    def fallback(self, reason: str) -> None:
        M.FALLBACKS.labels(model=self.name, reason=reason).inc()


def history_reasons(info, cluster_id: int, have_clusters: bool) -> list[str]:
    r = []
    if info.unknown_ids:
        r.append(f"{info.unknown_ids} unknown item id(s) in the history ignored")
    if info.used == 0:
        r.append("cold start: no usable history (empty or only unknown item ids)")
    elif not have_clusters:
        r.append("no clusters loaded (--artifacts without centroids.npy): no cluster id")
    return r


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
        cond = a.conditioning(user_emb, cids, [i.score_with for i in insts])
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
        grounded = bool(row.get("grounded", True))
        text = row.get("llm_output")
        if not grounded or not isinstance(text, str) or not text.strip():
            self.fallback("not_grounded")
            rs = row.get("reasons")
            rs = [str(x) for x in rs] if rs is not None and not isinstance(rs, str) else ([rs] if rs else [])
            return base | {"title": original, "personalized": False,
                           "reasons": ["pre-generated title failed the grounding check: original title", *rs]}
        return base | {"title": text, "personalized": True, "reasons": []}
