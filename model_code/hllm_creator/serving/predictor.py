"""The ``predictor`` KServe model: user history + candidate ad ids -> user cluster, Item-User match
score per ad, and the pre-generated personalized title for (ad, cluster) when ``match`` selected
that pair (else the original title with the reason).

Under an A/B experiment (``--experiment SALT``, ``hllm_creator.serving.experiment``) each instance with a
``user_id`` is assigned ``personalized`` or ``control`` (control users get the original title),
the prediction carries its ``variant`` and every answered ad an ``exposure_id``, and one exposure
event per ad is appended to the sink (fsynced) before the answer leaves. Clicks come back through
``POST /v1/models/predictor/feedback`` (``{"events": [{"exposure_id": ..., "event": "click"}]}``).
"""

from __future__ import annotations

import logging

import numpy as np

from hllm_creator.creative.copy import is_copy
from hllm_creator.serving.base import BatchedModel, history_reasons
from hllm_creator.serving.experiment import CONTROL, EXPOSURES, FEEDBACK, EventSink, exposure_event
from hllm_creator.serving.runtime import REQUEST_ID
from hllm_creator.serving.schemas import FeedbackRequest, PredictorInstance, format_validation_error
from hllm_creator.tracking.mlflow_utils import _version_for

log = logging.getLogger(__name__)


class Predictor(BatchedModel):
    instance_cls = PredictorInstance
    default_wait_ms = 3.0
    required_artifacts = ("clusters", "matches", "creatives")

    def __init__(self, name: str, *, experiment=None, sink_dir=None, **kw):
        super().__init__(name, **kw)
        self.experiment = experiment          # hllm_creator.serving.experiment.Experiment | None
        self.sink_dir = sink_dir
        self.exposures = self.feedback_sink = None
        self.model_version: str | None = None

    def load(self) -> bool:
        if self.experiment is not None:  # open the sink first: a server that cannot log does not turn ready
            self.exposures = EventSink(self.sink_dir, EXPOSURES)
            self.feedback_sink = EventSink(self.sink_dir, FEEDBACK)
            log.info("A/B experiment %r (personalized share %.2f): events in %s", self.experiment.salt,
                     self.experiment.share, self.sink_dir)
        self.model_version = _version_of(self.model_uri, self.bundle)
        ok = super().load()
        if self.model_version is None and self.bundle:
            self.model_version = f"bundle:{self.bundle.get('bundle_id')}"
        return ok

    async def after_batch(self, instances: list, results: list) -> list:
        if self.experiment is None:
            return results
        import asyncio

        events = []
        for inst, res in zip(instances, results):
            if inst.user_id is None:
                res["variant"] = None
                res["reasons"] = [*res["reasons"], "no user_id: not in the A/B experiment"]
                continue
            v = self.experiment.variant(inst.user_id)
            res["variant"] = v
            for ad in res["ads"]:
                if ad["title"] is None:
                    continue  # an unknown ad: nothing was shown
                if v == CONTROL and ad["personalized"]:
                    ad.update(title=ad["original_title"], personalized=False,
                              reasons=["A/B control group: original title"])
                    ad.pop("source", None)
                ev = exposure_event(experiment=self.experiment.salt, user_id=inst.user_id, ad_id=ad["ad_id"],
                                    cluster_id=res["cluster_id"], variant=v, title=ad["title"],
                                    personalized=ad["personalized"], model_version=self.model_version,
                                    bundle_id=(self.bundle or {}).get("bundle_id"), request_id=REQUEST_ID.get())
                ad["exposure_id"] = ev["exposure_id"]
                events.append(ev)
        if events:
            await asyncio.to_thread(self.exposures.write, events)  # durable before the answer leaves
        return results

    def setup_app(self, app) -> None:
        """``POST /v1/models/<name>/feedback``: clicks on answered exposures (400 on a bad body)."""
        from fastapi import Request
        from fastapi.responses import JSONResponse

        async def feedback(request: Request):
            import asyncio
            import time

            import orjson
            from pydantic import ValidationError

            if self.feedback_sink is None:
                return JSONResponse({"error": f"model {self.name} runs no A/B experiment (--experiment): "
                                              "no feedback is recorded"}, status_code=409)
            try:
                body = orjson.loads(await request.body())
                req = FeedbackRequest.model_validate(body)
            except orjson.JSONDecodeError as e:
                return JSONResponse({"error": f"body: malformed JSON ({e})"}, status_code=400)
            except ValidationError as e:
                return JSONResponse({"error": format_validation_error(e, "body")}, status_code=400)
            now = time.time()
            rows = [{"exposure_id": e.exposure_id, "event": e.event, "ts": e.ts if e.ts is not None else now,
                     "received": now, "experiment": self.experiment.salt,
                     "user_id": None if e.user_id is None else str(e.user_id),
                     "ad_id": None if e.ad_id is None else str(e.ad_id)} for e in req.events]
            n = await asyncio.to_thread(self.feedback_sink.write, rows)
            return {"accepted": n}

        feedback.__annotations__ = {"request": Request}  # a real class, not this module's postponed string
        app.add_api_route(f"/v1/models/{self.name}/feedback", feedback, methods=["POST"])

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
        known = sorted({x for i in insts for x in i.candidate_ad_ids if a.scorable(x)})
        col = {x: j for j, x in enumerate(known)}
        scores = np.full((len(insts), len(known)), np.nan, np.float32)
        ok = np.nonzero(np.isfinite(cond).all(axis=1))[0]
        if len(known) and len(ok):
            item_emb = a.catalog_embeddings(known)  # precomputed rows (a bundle's) or the load-time cache
            # the hybrid predictor's ID parts (None without ID embeddings): as match scored them
            parts = a.id_parts([i.user_history for i in insts], cids, [i.score_with for i in insts])
            with torch.no_grad():
                s = a.model.score(torch.from_numpy(cond[ok]), torch.from_numpy(item_emb),
                                  user_id_part=None if parts is None else torch.from_numpy(parts[ok]),
                                  item_index=a.model.item_index(known))
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
        if not a.scorable(ad):  # in the catalog, no precomputed vector: never encoded on the request path
            self.fallback("not_in_bundle")
            return base | {"title": original, "personalized": False,
                           "reasons": [f"ad {ad} is not among this bundle's embedded ads (not scored; "
                                       "add it with `hllm-creator refresh --feed`): original title"]}
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

        rs = row.get("reasons")
        rs = [str(x) for x in rs] if rs is not None and not isinstance(rs, str) else ([rs] if rs else [])
        if isinstance(row.get("title"), str) and "source" in row:
            # generate's served title (generated, or rescored from the ad's gated compositions, or the
            # original); personalized only when it differs from the original
            text = row["title"]
            if not text.strip() or is_copy(text, original):
                self.fallback("not_grounded")
                return base | {"title": original, "personalized": False,
                               "reasons": ["no personalized title passed the gate for this pair: original title", *rs]}
            return base | {"title": text, "personalized": True, "reasons": [], "source": str(row["source"])}
        grounded = bool(row.get("grounded", True))  # creatives.parquet written before served titles existed
        text = row.get("llm_output")
        if not grounded or not isinstance(text, str) or not text.strip() or is_copy(text, original):
            self.fallback("not_grounded")
            return base | {"title": original, "personalized": False,
                           "reasons": ["pre-generated title failed the grounding check: original title", *rs]}
        return base | {"title": text, "personalized": True, "reasons": []}


def _version_of(model_uri: str | None, bundle: dict | None) -> str | None:
    """The registry version behind ``models:/NAME@ALIAS`` (exposures name the version they saw)."""
    if not model_uri or not str(model_uri).startswith("models:/"):
        return None
    try:
        return str(_version_for(model_uri).version)
    except Exception as e:  # noqa: BLE001 - serving does not depend on it; the URI is logged instead
        log.warning("could not resolve the version of %s: %s", model_uri, e)
        return model_uri
