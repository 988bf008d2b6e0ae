"""The base of the ``predictor`` and ``creative`` KServe models: v1/v2 parsing, 400s for bad bodies,
counters, background loading and micro-batching of concurrent requests (``serving.batching``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from hllm_creator.serving import metrics as M  # noqa: I001
from hllm_creator.serving.batching import MicroBatcher, QueueFull
from hllm_creator.serving.loading import ServingAssets, load_assets, resolve_source
from hllm_creator.serving.runtime import ServingError, kserve  # kserve imported without our argv
from hllm_creator.serving.schemas import InvalidRequest, parse_v1, parse_v2

Model = kserve.Model
InvalidInput = kserve.errors.InvalidInput

log = logging.getLogger(__name__)


class BatchedModel(Model):
    """Shared request path: parse (v1 dict | v2 InferRequest) -> typed instances -> micro-batch."""

    instance_cls: type = None
    default_wait_ms: float = 5.0
    # inference outputs without which the model does not turn ready (serving.loading.REQUIRED_FILES)
    required_artifacts: tuple[str, ...] = ()

    def __init__(self, name: str, *, model_dir: str | Path | None = None, model_uri: str | None = None,
                 artifacts: str | Path | None = None, items: str | Path | None = None,
                 max_batch: int = 32, max_wait_ms: float | None = None, device: str = "cpu",
                 max_queue: int = 1024):
        super().__init__(name)
        self.ready = False
        self.model_dir, self.model_uri = model_dir, model_uri
        self.artifacts, self.items, self.device = artifacts, items, device
        self.max_batch, self.max_queue = max_batch, max_queue
        self.max_wait_s = (self.default_wait_ms if max_wait_ms is None else max_wait_ms) / 1000.0
        self.assets: ServingAssets | None = None
        self.bundle: dict | None = None  # the serving bundle's manifest, when one was loaded
        self.batcher: MicroBatcher | None = None

    # -- loading
    def load(self) -> bool:
        d, art, items, self.bundle = resolve_source(self.model_dir and str(self.model_dir), self.model_uri,
                                                    self.artifacts, self.items)
        self.assets = load_assets(d, art, items, device=self.device, require=self.required_artifacts)
        self.batcher = MicroBatcher(self.run_batch, max_batch=self.max_batch, max_wait_s=self.max_wait_s,
                                    name=self.name, group_key=self.group_key, max_queue=self.max_queue)
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
        if self.batcher is None:
            raise ServingError(f"model {self.name} is still loading", 503, code="model_not_ready")
        try:
            results = await self.batcher.submit(instances)
        except QueueFull as e:
            raise ServingError(f"server busy: {e}; retry later", 429, retry_after=e.retry_after,
                               code="queue_full") from None
        results = await self.after_batch(instances, results)
        M.INSTANCES.labels(model=self.name).inc(len(results))
        if not v2:
            return {"predictions": results}
        data = [orjson.dumps(r).decode() for r in results]
        out = InferOutput(name="predictions", shape=[len(data)], datatype="BYTES", data=data)
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=[out])

    async def after_batch(self, instances: list, results: list) -> list:
        """Per request, in its context (request id), after the batch ran: the A/B variant and the
        exposure log of the predictor (``serving.predictor``)."""
        return results

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
