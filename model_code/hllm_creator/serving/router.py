"""A local stand-in for KServe's canary split: ``hllm-creator serve split``.

Two running servers (champion and canary, e.g. ``serve predictor --model-uri
models:/hllm-creator@champion --port 8081`` and ``... @canary --port 8082``) behind one port: each
request goes to the canary with probability ``percent``/100 (as KServe splits between revisions),
or where the ``x-hllm-route: champion|canary`` header says. Every answer carries
``x-hllm-served-by``. ``/v2/health/ready`` is ready when both are.
"""

from __future__ import annotations

import logging
import random

log = logging.getLogger(__name__)

ROUTE_HEADER = "x-hllm-route"
SERVED_BY = "x-hllm-served-by"
_HOP = {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}


def build_app(champion: str, canary: str, percent: int, *, seed: int | None = None, timeout: float = 300.0):
    """The router's ASGI app (FastAPI)."""
    import httpx
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response

    if not 0 <= percent <= 100:
        raise ValueError(f"--percent must be 0..100, got {percent}")
    targets = {"champion": champion.rstrip("/"), "canary": canary.rstrip("/")}
    rng = random.Random(seed)
    app = FastAPI(title="hllm-creator split")
    client = httpx.AsyncClient(timeout=timeout)
    counts = {"champion": 0, "canary": 0}

    @app.get("/v2/health/ready")
    async def ready():
        bad = []
        for k, u in targets.items():
            try:
                if (await client.get(f"{u}/v2/health/ready", timeout=5)).status_code != 200:
                    bad.append(k)
            except httpx.HTTPError:
                bad.append(k)
        if bad:
            return JSONResponse({"ready": False, "not_ready": bad}, status_code=503)
        return {"ready": True}

    @app.get("/split")
    async def split():
        return {"percent": percent, "targets": targets, "served": counts}

    async def proxy(path: str, request: Request):
        want = request.headers.get(ROUTE_HEADER)
        if want is not None and want not in targets:
            return JSONResponse({"error": f"header {ROUTE_HEADER} must be champion or canary, got {want!r}"},
                                status_code=400)
        which = want or ("canary" if rng.random() * 100 < percent else "champion")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP and k.lower() != ROUTE_HEADER}
        try:
            r = await client.request(request.method, f"{targets[which]}/{path}", params=request.query_params,
                                     content=await request.body(), headers=headers)
        except httpx.HTTPError as e:
            return JSONResponse({"error": f"{which} ({targets[which]}) did not answer: {e}"}, status_code=502,
                                headers={SERVED_BY: which})
        counts[which] += 1
        out = {k: v for k, v in r.headers.items() if k.lower() not in _HOP}
        out[SERVED_BY] = which
        return Response(r.content, status_code=r.status_code, headers=out)

    proxy.__annotations__ = {"path": str, "request": Request}  # real classes (postponed annotations)
    app.add_api_route("/{path:path}", proxy, methods=["GET", "POST"])
    return app


def serve_split(champion: str, canary: str, percent: int, host: str, port: int) -> None:
    import uvicorn

    app = build_app(champion, canary, percent)
    log.info("split on http://%s:%d: %d%% -> canary %s, the rest -> champion %s", host, port, percent, canary,
             champion)
    uvicorn.run(app, host=host, port=port, log_level="warning")
