"""The one serving runtime without a model: guard middleware (request id, generic 5xx, deadline 504,
429 + Retry-After, bounded metric labels), the batcher's isolation and bounds, and the request
checks added by issue 13 (seed range, temperature floor, nesting depth, JSON-schema subset)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from fastapi import FastAPI

from hllm_creator.serving import metrics
from hllm_creator.serving._openai_protocol import (
    INT64_MAX,
    INT64_MIN,
    Limits,
    OpenAIError,
    parse_chat,
    parse_completion,
    parse_json_body,
)
from hllm_creator.serving.batching import Batcher, MicroBatcher, QueueFull
from hllm_creator.serving.runtime import REQUEST_ID_HEADER, ServingError, install_http_guards

LIM = Limits(max_prompt_tokens=64)


def _app(deadline_s: float = 5.0) -> FastAPI:
    app = FastAPI()

    @app.post("/v2/models/rt/infer")
    async def infer(request_: dict):
        what = request_.get("do")
        if what == "boom":
            raise RuntimeError("secret internal detail /etc/passwd")
        if what == "busy":
            raise ServingError("server busy", 429, retry_after=7, code="queue_full")
        if what == "sleep":
            await asyncio.sleep(30)
        return {"ok": True}

    @app.post("/openai/v1/completions")
    async def oai(request_: dict):
        raise RuntimeError("secret internal detail")

    install_http_guards(app, max_body=10_000, deadline_s=deadline_s)
    return app


def _post(app, path: str, body: dict, headers: dict | None = None) -> httpx.Response:
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                     base_url="http://t") as c:
            return await c.post(path, json=body, headers=headers or {})

    return asyncio.run(go())


def test_request_id_generic_5xx_and_429_retry_after():
    app = _app()
    ok = _post(app, "/v2/models/rt/infer", {"do": "x"}, {REQUEST_ID_HEADER: "abc-123"})
    assert ok.status_code == 200 and ok.headers[REQUEST_ID_HEADER] == "abc-123"
    r = _post(app, "/v2/models/rt/infer", {"do": "boom"}, {REQUEST_ID_HEADER: "bad id with spaces"})
    rid = r.headers[REQUEST_ID_HEADER]
    assert r.status_code == 500 and rid != "bad id with spaces" and len(rid) == 16
    assert "secret" not in r.text and "/etc/passwd" not in r.text and rid in r.json()["error"]
    r = _post(app, "/openai/v1/completions", {})
    assert r.status_code == 500 and "secret" not in r.text
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}  # OpenAI shape on OpenAI routes
    r = _post(app, "/v2/models/rt/infer", {"do": "busy"})
    assert r.status_code == 429 and r.headers["retry-after"] == "7" and r.json() == {"error": "server busy"}


def test_deadline_504_default_and_header():
    app = _app(deadline_s=1.0)
    t0 = time.monotonic()
    r = _post(app, "/v2/models/rt/infer", {"do": "sleep"})
    assert r.status_code == 504 and "deadline of 1 s" in r.json()["error"]
    assert time.monotonic() - t0 < 5
    t0 = time.monotonic()
    r = _post(app, "/v2/models/rt/infer", {"do": "sleep"}, {"x-request-timeout": "0.2"})
    assert r.status_code == 504 and time.monotonic() - t0 < 0.9
    r = _post(app, "/v2/models/rt/infer", {"do": "x"}, {"x-request-timeout": "-1"})
    assert r.status_code == 400 and "x-request-timeout" in r.json()["error"]


def test_metric_labels_only_for_registered_models():
    metrics.register_model("registered-model")
    assert metrics.label_for("registered-model") == "registered-model"
    assert metrics.label_for("random-123") == "unknown"
    before = metrics.ERRORS.labels(model="unknown", kind="bad_request")._value.get()
    for i in range(50):
        metrics.count_status(f"/v2/models/r{i}/infer", 404)
    assert metrics.ERRORS.labels(model="unknown", kind="bad_request")._value.get() == before + 50
    names = {s.labels["model"] for s in metrics.ERRORS.collect()[0].samples}
    assert not any(n.startswith("r") and n[1:].isdigit() for n in names)


def test_batch_failure_is_retried_row_by_row_and_queue_is_bounded():
    calls = []

    def run(items):
        calls.append(list(items))
        if -1 in items:
            raise ValueError("row -1 is poison")
        return [x * 2 for x in items]

    b = Batcher(run, max_batch_size=8, window_ms=50)

    async def main():
        return await asyncio.gather(*(b.submit(x) for x in (1, -1, 3)), return_exceptions=True)

    res = asyncio.run(main())
    assert res[0] == 2 and res[2] == 6 and isinstance(res[1], ValueError)
    assert calls[0] == [1, -1, 3] and [1] in calls and [3] in calls
    b.close()

    mb = MicroBatcher(lambda xs: xs, max_batch=2, max_queue=3)

    async def too_many():
        with pytest.raises(QueueFull) as ei:
            await mb.submit([1, 2, 3, 4])  # all or none
        assert ei.value.retry_after >= 1
        return await mb.submit([1, 2, 3])

    assert asyncio.run(too_many()) == [1, 2, 3]
    mb.close()


def test_batch_sizes_are_bounded_and_cancelled_items_are_not_computed():
    seen = []

    def run(xs):
        if xs == ["block"]:
            time.sleep(0.3)
        seen.extend(xs)
        return xs

    b = Batcher(run, max_batch_size=1, window_ms=0)
    b.batch_sizes.maxlen = 10

    async def main():
        await asyncio.gather(*(b.submit(i) for i in range(30)))
        block = asyncio.ensure_future(b.submit("block"))
        await asyncio.sleep(0.05)  # "block" is running
        gone = asyncio.ensure_future(b.submit("gone"))
        await asyncio.sleep(0.01)  # "gone" is queued
        gone.cancel()  # its client went away
        nxt = await b.submit("next")
        await block
        return nxt

    assert asyncio.run(main()) == "next"
    assert len(b.batch_sizes) == 10 and b.batches == 32
    assert "gone" not in seen and b.dropped >= 1
    b.close()


def _chat(**kw) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw}


def test_seed_range_temperature_floor_and_chars():
    assert parse_chat(_chat(seed=INT64_MAX), "m", LIM).params.seed == INT64_MAX
    assert parse_chat(_chat(seed=INT64_MIN), "m", LIM).params.seed == INT64_MIN
    for bad in (2**64, INT64_MAX + 1, INT64_MIN - 1):
        with pytest.raises(OpenAIError) as ei:
            parse_chat(_chat(seed=bad), "m", LIM)
        assert ei.value.status == 400 and ei.value.param == "seed"
    assert parse_chat(_chat(temperature=1e-40), "m", LIM).params.temperature == 0.0
    assert parse_chat(_chat(temperature=0.5), "m", LIM).params.temperature == 0.5
    with pytest.raises(OpenAIError) as ei:
        parse_completion({"model": "m", "prompt": "x" * (LIM.max_prompt_chars + 1)}, "m", LIM)
    assert ei.value.code == "context_length_exceeded" and "characters" in ei.value.message


def test_nesting_depth_and_recursion_are_400():
    for raw in (b"[" * 100_000, json.dumps({"model": "m", "x": json.loads("[" * 200 + "]" * 200)}).encode()):
        with pytest.raises(OpenAIError) as ei:
            parse_json_body(raw, "application/json", LIM)
        assert ei.value.status == 400


@pytest.mark.parametrize("schema, where", [
    ({"type": "string", "pattern": "(a|b)*a(a|b){14}"}, "pattern"),
    ({"type": "object", "properties": {"a": {"type": "object", "properties": {
        "b": {"type": "string", "pattern": "^x+$"}}}}}, "properties.a.properties.b.pattern"),
    ({"type": "object", "patternProperties": {"^a": {"type": "string"}}}, "patternProperties"),
])
def test_schema_subset_rejects_regular_expressions(schema, where):
    body = _chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    t0 = time.monotonic()
    with pytest.raises(OpenAIError) as ei:
        parse_chat(body, "m", LIM)
    assert time.monotonic() - t0 < 1
    assert ei.value.status == 400 and ei.value.code == "unsupported_schema" and ei.value.param.endswith(where)
    ok = {"type": "object", "properties": {"title": {"type": "string", "maxLength": 60}}}
    assert parse_chat(_chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": ok}}),
                      "m", LIM).params.json_schema == ok


def test_batched_model_answers_429_with_retry_after_when_its_queue_is_full():
    """creative/predictor: more instances waiting than --max-queue -> ServingError 429 (v1 and v2)."""
    import threading

    from hllm_creator.serving.base import BatchedModel
    from hllm_creator.serving.schemas import PredictorInstance

    release = threading.Event()

    class Slow(BatchedModel):  # a real BatchedModel whose model pass waits for the test
        instance_cls = PredictorInstance

        def run_batch(self, insts):
            release.wait(5)
            return [{"n": len(i.user_history)} for i in insts]

    m = Slow("slow", max_batch=1, max_wait_ms=0, max_queue=2)
    m.batcher = MicroBatcher(m.run_batch, max_batch=1, max_wait_s=0, name="slow", max_queue=2)
    inst = {"user_history": ["a b"], "candidate_ad_ids": ["x"]}

    async def main():
        first = asyncio.ensure_future(m.predict({"instances": [inst]}))
        await asyncio.sleep(0.05)  # running
        queued = asyncio.ensure_future(m.predict({"instances": [inst, inst]}))  # fills the queue
        await asyncio.sleep(0.05)
        with pytest.raises(ServingError) as ei:
            await m.predict({"instances": [inst]})
        release.set()
        return ei.value, await first, await queued

    err, first, queued = asyncio.run(main())
    assert err.status == 429 and err.retry_after >= 1 and err.headers()["retry-after"] == str(err.retry_after)
    assert first == {"predictions": [{"n": 1}]} and len(queued["predictions"]) == 2
    m.batcher.close()


def test_readiness_probes_during_load_log_once_per_state_change(caplog):
    """issue 28: KServe's own 503 handlers (real, called as a probe would) log a traceback each; with
    the filter the first not-ready answer is one INFO line, the rest nothing, until ready again."""
    import asyncio
    import logging

    from kserve.errors import ModelNotReady, ServerNotReady, model_not_ready_handler, server_not_ready_handler

    from hllm_creator.serving.runtime import ReadinessLogFilter

    f = ReadinessLogFilter("predictor")
    logger = logging.getLogger("kserve")
    logger.addFilter(f)
    try:
        with caplog.at_level(logging.INFO, logger="kserve"):
            for _ in range(20):
                r = asyncio.run(server_not_ready_handler(None, ServerNotReady()))
                assert r.status_code == 503
            asyncio.run(model_not_ready_handler(None, ModelNotReady("predictor")))
            recs = [r for r in caplog.records if r.name == "kserve"]
            assert len(recs) == 1 and recs[0].levelno == logging.INFO and recs[0].exc_info is None
            assert "predictor not ready yet" in recs[0].getMessage()
            f.ready()  # loaded; a later not-ready state is said again, once
            for _ in range(5):
                asyncio.run(server_not_ready_handler(None, ServerNotReady()))
            assert len([r for r in caplog.records if r.name == "kserve"]) == 2
            try:
                raise RuntimeError("a real fault")
            except RuntimeError:
                logger.exception("Exception:")
            fault = [r for r in caplog.records if r.name == "kserve"][-1]
            assert fault.exc_info is not None and fault.levelno == logging.ERROR  # real faults keep their traceback
    finally:
        logger.removeFilter(f)
