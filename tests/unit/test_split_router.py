"""``hllm-creator serve split``: the local canary split, in process (httpx ASGI transports: two real
FastAPI upstream apps stand in for the champion and canary servers)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI, Request


def _upstream(name: str):
    app = FastAPI()

    @app.post("/v1/models/predictor:predict")
    async def predict(request: Request):
        return {"served": name, "body": await request.json()}

    @app.get("/v2/health/ready")
    async def ready():
        return {}

    return app


def test_split_follows_percent_and_header(monkeypatch):
    from hllm_creator.serving import router

    ups = {"http://champ": _upstream("champion"), "http://can": _upstream("canary")}

    class Mux(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request):
            base = f"{request.url.scheme}://{request.url.host}"
            return await httpx.ASGITransport(app=ups[base]).handle_async_request(request)

    real = httpx.AsyncClient
    monkeypatch.setattr(httpx, "AsyncClient", lambda **kw: real(transport=Mux(), **kw))
    app = router.build_app("http://champ", "http://can", 20, seed=0)

    async def go():
        async with real(transport=httpx.ASGITransport(app=app), base_url="http://split") as c:
            seen = []
            for _ in range(500):
                r = await c.post("/v1/models/predictor:predict", json={"instances": [1]})
                assert r.status_code == 200 and r.json()["body"] == {"instances": [1]}
                assert r.headers[router.SERVED_BY] == r.json()["served"]
                seen.append(r.json()["served"])
            forced = await c.post("/v1/models/predictor:predict", json={}, headers={router.ROUTE_HEADER: "canary"})
            bad = await c.post("/v1/models/predictor:predict", json={}, headers={router.ROUTE_HEADER: "nope"})
            ready = await c.get("/v2/health/ready")
            return seen, forced, bad, ready

    seen, forced, bad, ready = asyncio.run(go())
    assert 0.15 < seen.count("canary") / len(seen) < 0.25
    assert forced.json()["served"] == "canary" and bad.status_code == 400 and ready.status_code == 200
    with pytest.raises(ValueError, match="0..100"):
        router.build_app("http://a", "http://b", 120)
