"""HTTP guards of the serving app (in-process ASGI, no model): body limit -> 413, FastAPI's 422 -> 400
with a message, every 4xx/5xx on a model route counted."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI
from pydantic import BaseModel

from hllm_creator.serving.metrics import ERRORS
from hllm_creator.serving.runtime import GuardMiddleware, install_http_guards


class Body(BaseModel):
    inputs: list[int]


def make_app(limit: int | None = None) -> FastAPI:
    app = FastAPI()

    @app.post("/v2/models/guarded/infer")
    async def infer(body: Body):
        return {"n": len(body.inputs)}

    install_http_guards(app)
    if limit is not None:  # a second, smaller limit on top (the default is 8 MiB)
        app.add_middleware(GuardMiddleware, max_body=limit)
    return app


def post(app, **kw) -> httpx.Response:
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.post("/v2/models/guarded/infer", **kw)

    return asyncio.run(go())


def errors(kind: str) -> float:
    return ERRORS.labels(model="guarded", kind=kind)._value.get()


def test_422_becomes_400_with_what_is_wrong():
    app = make_app()
    before = errors("bad_request")
    r = post(app, content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"].startswith("body: malformed JSON")
    r = post(app, json={"inputs": ["a"]})
    assert r.status_code == 400 and "body.inputs[0]" in r.json()["error"]
    r = post(app, json={"inputs": [1, 2]})
    assert r.status_code == 200 and r.json() == {"n": 2}
    assert errors("bad_request") == before + 2


def test_body_limit_413_before_parsing():
    app = make_app(limit=1000)
    r = post(app, content=b"[" + b"1," * 2000 + b"1]", headers={"content-type": "application/json"})
    assert r.status_code == 413 and "exceeds the limit of 1000 bytes" in r.json()["error"]

    async def chunks():  # no Content-Length: counted while streaming
        for _ in range(50):
            yield b"x" * 100

    r = post(app, content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert post(app, json={"inputs": [1]}).status_code == 200


def test_large_body_413_is_readable_over_real_http_with_urllib_and_httpx():
    """issue 28: over a real socket (uvicorn on 127.0.0.1), a body far over the limit gets the 413
    and its JSON, not a connection reset: the guard reads and drops a bounded amount first."""
    import json
    import threading
    import time
    import urllib.error
    import urllib.request

    import uvicorn

    from hllm_creator.process import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(make_app(limit=1024 * 1024), host="127.0.0.1", port=port,
                                           log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/v2/models/guarded/infer"
        body = b'{"inputs": [' + b"1," * (15 * 1024 * 1024) + b"1]}"  # 30 MB
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
        try:
            urllib.request.urlopen(req, timeout=60)
            raise AssertionError("no 413")
        except urllib.error.HTTPError as e:
            assert e.code == 413 and "exceeds the limit of 1048576 bytes" in json.loads(e.read())["error"]
        r = httpx.post(url, content=body, headers={"Content-Type": "application/json"}, timeout=60)
        assert r.status_code == 413 and "exceeds the limit" in r.json()["error"]

        def chunks():  # no Content-Length: refused as the bytes arrive
            for _ in range(30):
                yield b"1," * (512 * 1024)

        r = httpx.post(url, content=chunks(), headers={"Content-Type": "application/json"}, timeout=60)
        assert r.status_code == 413 and "exceeds the limit" in r.json()["error"], r.text[:200]
        assert httpx.post(url, json={"inputs": [1]}, timeout=10).json() == {"n": 1}  # still serving
    finally:
        server.should_exit = True
        t.join(timeout=10)
