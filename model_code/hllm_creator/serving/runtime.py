"""The one runtime of the three servers (llm, creative, predictor) on a KServe ``ModelServer``.

- :func:`import_kserve`: kserve parses ``sys.argv`` at import time; this hides our command line.
- :class:`GuardMiddleware` (pure ASGI, installed on every server by :func:`install_http_guards`):
  a request id (``x-request-id``, taken from the client when it is short and plain, else made up) on
  every response; the body limit counted as bytes arrive (413, also without Content-Length); a
  per-request deadline (``--deadline-s`` by default; a client may shorten it with the
  ``x-request-timeout`` header, in seconds) after which the request is cancelled (its queued or
  running rows are dropped) and the client gets a 504; a client that disconnects has its request
  cancelled the same way; 5xx bodies other than 503/504 replaced by a generic message naming the
  request id (the details go to the log); 4xx/5xx counted per registered model name.
- :class:`ServingError`: raised anywhere on a request path to answer ``status`` (429 with
  ``Retry-After``, 503, 504) on both the v1/v2 and the OpenAI routes.
- :class:`BoundModelServer` binds ``--host`` (KServe 0.21 hard-codes 0.0.0.0), :func:`serve` runs one
  model: listening at once, loading in the background, ready when loaded, exit code 3 on a failed load.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable

from hllm_creator.serving import metrics
from hllm_creator.serving.metrics import register_model

log = logging.getLogger(__name__)

DEFAULT_DEADLINE_S = 300.0
TIMEOUT_HEADER = "x-request-timeout"
REQUEST_ID_HEADER = "x-request-id"
_RID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("hllm_request_id", default="-")
DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("hllm_deadline", default=None)


def import_kserve():
    """Import kserve without letting its import-time argparse read our command line."""
    argv = sys.argv
    sys.argv = argv[:1]
    try:
        import kserve
        import kserve.errors
        import kserve.model_server
    finally:
        sys.argv = argv
    return kserve


class ServingError(Exception):
    """An answer that is not the client's mistake: 429 (+ Retry-After), 503, 504."""

    def __init__(self, message: str, status: int, *, retry_after: int | None = None, code: str | None = None):
        super().__init__(message)
        self.message, self.status, self.retry_after, self.code = message, status, retry_after, code

    def headers(self) -> dict[str, str]:
        return {"retry-after": str(self.retry_after)} if self.retry_after is not None else {}


def is_openai_path(path: str) -> bool:
    return path.startswith("/openai/")


def error_body(path: str, status: int, message: str, code: str | None = None) -> dict:
    """``{"error": {...}}`` OpenAI-style on the OpenAI routes, ``{"error": message}`` elsewhere."""
    if is_openai_path(path):
        typ = {429: "rate_limit_error"}.get(status, "server_error" if status >= 500 else "invalid_request_error")
        return {"error": {"message": message, "type": typ, "param": None, "code": code}}
    return {"error": message}


def time_left() -> float | None:
    """Seconds until this request's deadline (None outside a request)."""
    d = DEADLINE.get()
    return None if d is None else d - time.monotonic()


class _TooLarge(Exception):
    pass


# a refused (too large) body is read and dropped up to this much before the 413 (see drain())
DRAIN_BYTES = 64 * 1024 * 1024
DRAIN_SECONDS = 10.0


class GuardMiddleware:
    """See the module docstring. ``max_body`` bytes; ``deadline_s`` for POST requests."""

    def __init__(self, app, max_body: int = 8 * 1024 * 1024, deadline_s: float = DEFAULT_DEADLINE_S):
        self.app, self.max_body, self.deadline_s = app, max_body, deadline_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        path = scope.get("path", "")
        app = scope.get("app")  # a literal route of the app (not a {model_name} template) is known too
        literal = any(getattr(r, "path", None) == path for r in getattr(app, "routes", ()))

        def count_status(p, status):
            metrics.count_status(p, status, literal)

        headers = {k.lower(): v for k, v in (scope.get("headers") or [])}
        rid = headers.get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        rid = rid if _RID_OK.match(rid) else uuid.uuid4().hex[:16]
        st = {"started": False, "status": 0, "too_large": False, "held": None, "done": False}

        async def reply(status: int, message: str, extra: dict[str, str] | None = None, code=None) -> None:
            """Our own error answer (never held back or rewritten)."""
            if st["started"]:
                return
            body = json.dumps(error_body(path, status, message, code)).encode()
            hdrs = {"content-type": "application/json", "content-length": str(len(body)), **(extra or {}),
                    REQUEST_ID_HEADER: rid}
            st["started"], st["status"], st["done"] = True, status, True
            count_status(path, status)
            await send({"type": "http.response.start", "status": status,
                        "headers": [(k.encode(), v.encode()) for k, v in hdrs.items()]})
            await send({"type": "http.response.body", "body": body})

        async def _send(msg):
            if msg["type"] == "http.response.start":
                if st["started"]:
                    return
                status = msg["status"]
                if st["too_large"]:
                    status = 413
                    body = json.dumps(error_body(path, 413, f"request body exceeds the limit of "
                                                            f"{self.max_body} bytes", "body_too_large")).encode()
                    msg = {"type": "http.response.start", "status": 413,
                           "headers": [(b"content-type", b"application/json"),
                                       (b"content-length", str(len(body)).encode())]}
                    st["held"] = ("replace", body)
                    await drain()
                elif status >= 500 and status not in (503, 504):
                    st["held"] = ("generic", [])  # body replaced: details only in the log
                    st["status"] = status
                    return
                st["started"], st["status"] = True, status
                count_status(path, status)
                hs = [(k, v) for k, v in msg.get("headers", []) if k.lower() != REQUEST_ID_HEADER.encode()]
                msg = {**msg, "headers": hs + [(REQUEST_ID_HEADER.encode(), rid.encode())]}
                await send(msg)
                if st["held"] and st["held"][0] == "replace":
                    await send({"type": "http.response.body", "body": st["held"][1]})
                return
            if msg["type"] == "http.response.body":
                if st["held"] is not None:
                    kind, data = st["held"]
                    if kind == "generic":
                        data.append(msg.get("body", b""))
                        if not msg.get("more_body"):
                            detail = b"".join(data)[:2000].decode("utf-8", "replace")
                            log.error("request %s %s answered %d: %s", rid, path, st["status"], detail)
                            st["held"] = None
                            await reply(st["status"], f"internal error (request id {rid}); the details "
                                                      "are in the server log", code="internal_error")
                    return
                if not msg.get("more_body"):
                    st["done"] = True
            await send(msg)

        async def drain() -> None:
            """Read and drop the rest of a refused body (at most DRAIN_BYTES, DRAIN_SECONDS) before the
            413 goes out: a server that answers and closes while the client still sends resets the
            connection, and clients such as urllib and requests then see ECONNRESET, not the 413.
            A client that sent ``Expect: 100-continue`` has sent nothing yet: nothing to drain."""
            if headers.get(b"expect", b"").lower() == b"100-continue":
                return
            got, end = 0, time.monotonic() + DRAIN_SECONDS
            while got <= DRAIN_BYTES:
                try:
                    msg = await asyncio.wait_for(receive(), timeout=max(0.01, end - time.monotonic()))
                except TimeoutError:
                    return
                if msg.get("type") != "http.request":
                    return
                got += len(msg.get("body", b""))
                if not msg.get("more_body"):
                    return

        too_large = f"request body exceeds the limit of {self.max_body} bytes"
        # body size: Content-Length first, then bytes as they arrive
        cl = headers.get(b"content-length")
        if cl is not None:
            try:
                n = int(cl)
            except ValueError:
                return await reply(400, "invalid Content-Length header")
            if n > self.max_body:
                await drain()
                return await reply(413, f"request body of {n} bytes exceeds the limit of {self.max_body} bytes",
                                   code="body_too_large")
        deadline_s = None
        if scope.get("method") == "POST":
            deadline_s = self.deadline_s
            raw = headers.get(TIMEOUT_HEADER.encode())
            if raw is not None:
                try:
                    t = float(raw)
                    if not (t > 0 and t < float("inf")):
                        raise ValueError
                except ValueError:
                    return await reply(400, f"header {TIMEOUT_HEADER} must be a positive number of seconds, "
                                            f"got {raw.decode('latin-1')[:40]!r}", code="invalid_value")
                deadline_s = min(deadline_s, t)
        seen = 0
        disconnected = asyncio.Event()
        watcher: asyncio.Future | None = None

        async def _watch():
            msg = await receive()
            if msg.get("type") == "http.disconnect" and not st["done"]:
                disconnected.set()
            return msg

        async def _receive():
            nonlocal seen, watcher
            if watcher is not None:  # the body is read: the next message is the disconnect
                return await asyncio.shield(watcher)
            msg = await receive()
            if msg.get("type") == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_body:
                    st["too_large"] = True
                    raise _TooLarge()
                if not msg.get("more_body"):
                    watcher = asyncio.ensure_future(_watch())
            elif msg.get("type") == "http.disconnect":
                disconnected.set()
            return msg

        REQUEST_ID.set(rid)
        DEADLINE.set(None if deadline_s is None else time.monotonic() + deadline_s)
        task = asyncio.ensure_future(self.app(scope, _receive, _send))
        gone = asyncio.ensure_future(disconnected.wait())
        try:
            done, _ = await asyncio.wait({task, gone}, timeout=deadline_s, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                exc = task.exception()
                if exc is not None:
                    raise exc
                return
            if gone in done and st["done"]:  # the answer went out just now
                await asyncio.gather(task, return_exceptions=True)
                return
            task.cancel()  # deadline or client gone: queued/running rows of this request are dropped
            await asyncio.gather(task, return_exceptions=True)
            if gone in done:
                log.info("request %s %s: client disconnected; request cancelled", rid, path)
                metrics.CANCELLED.labels(reason="disconnect").inc()
                return
            metrics.CANCELLED.labels(reason="deadline").inc()
            log.warning("request %s %s: deadline of %.1f s exceeded; request cancelled", rid, path, deadline_s)
            if not st["started"]:
                await reply(504, f"the request did not finish within its deadline of {deadline_s:g} s "
                                 f"(request id {rid}); retry later, or with a smaller request",
                            code="deadline_exceeded")
        except _TooLarge:
            if not st["started"]:
                await drain()
                await reply(413, too_large, code="body_too_large")
        except Exception:
            log.exception("request %s %s failed", rid, path)
            if not st["started"]:
                st["held"] = None
                await reply(500, f"internal error (request id {rid}); the details are in the server log",
                            code="internal_error")
        finally:
            gone.cancel()
            if watcher is not None:
                watcher.cancel()
            if not task.done():
                task.cancel()


async def _validation_handler(request, exc):
    """FastAPI rejects a v2 body it cannot parse with 422; the contract says 400 + what is wrong."""
    from fastapi.responses import JSONResponse

    parts = []
    for e in list(exc.errors())[:10]:
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.get("loc", ()) if p != "body")
        loc = "body" + loc
        msg = e.get("msg", "invalid")
        if e.get("type") == "json_invalid":
            ctx = e.get("ctx") or {}
            loc, msg = "body", f"malformed JSON ({ctx.get('error', 'cannot parse')})"
        parts.append(f"{loc}: {msg}")
    return JSONResponse(status_code=400, content={"error": "; ".join(parts) or "invalid request body"})


async def _serving_error_handler(request, exc: ServingError):
    from fastapi.responses import JSONResponse

    return JSONResponse(error_body(request.url.path, exc.status, exc.message, exc.code), status_code=exc.status,
                        headers=exc.headers())


async def _recursion_handler(request, exc):
    from fastapi.responses import JSONResponse

    return JSONResponse(error_body(request.url.path, 400, "request body is nested too deeply"),
                        status_code=400)


def install_http_guards(app, max_body: int = 8 * 1024 * 1024, deadline_s: float = DEFAULT_DEADLINE_S) -> None:
    """The 422 -> 400 handler, ServingError / RecursionError handlers and :class:`GuardMiddleware`, once."""
    from fastapi.exceptions import RequestValidationError

    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(ServingError, _serving_error_handler)
    app.add_exception_handler(RecursionError, _recursion_handler)
    if not getattr(app.state, "hllm_guard", False):
        app.add_middleware(GuardMiddleware, max_body=max_body, deadline_s=deadline_s)
        app.state.hllm_guard = True


kserve = import_kserve()


class BoundModelServer(kserve.ModelServer):
    """``kserve.ModelServer`` that binds ``host`` (KServe 0.21 hard-codes 0.0.0.0 in RESTServer's
    uvicorn.Config; the config object is read when uvicorn binds, after ``_serve`` starts)."""

    def __init__(self, *, host: str = "127.0.0.1", **kwargs):
        super().__init__(**kwargs)
        self.host = host

    async def _serve(self):
        if self._rest_server is not None:
            self._rest_server.config.host = self.host
        if self._rest_multiprocess_server is not None:  # pragma: no cover (workers > 1 not used)
            self._rest_multiprocess_server.config.host = self.host
        await super()._serve()


class ReadinessLogFilter(logging.Filter):
    """KServe logs a full traceback for every 503 "not ready" answer: one per readiness probe while
    a model loads (78 tracebacks, 1,359 lines for an 86 s load). On the ``kserve`` logger this
    filter keeps one line per state change: the first not-ready answer after start (or after
    :meth:`ready`) becomes an INFO line without traceback; the rest are dropped until the model is
    ready and then not ready again. Every other record (real faults with their tracebacks) passes."""

    def __init__(self, name: str = "") -> None:
        super().__init__()
        self.model = name
        self.said_not_ready = False

    def ready(self) -> None:
        self.said_not_ready = False

    def filter(self, record: logging.LogRecord) -> bool:
        from kserve.errors import ModelNotReady, ServerNotReady

        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, (ModelNotReady, ServerNotReady)):
            return True
        if self.said_not_ready:
            return False
        self.said_not_ready = True
        record.msg, record.args, record.exc_info, record.exc_text = (
            "%s not ready yet (%s): readiness probes get 503 until it is (said once)", (self.model or "model", exc),
            None, None)
        record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def serve(model, host: str, port: int, load: Callable[[], object], *, max_body: int = 8 * 1024 * 1024,
          deadline_s: float = DEFAULT_DEADLINE_S, setup_app: Callable[[object], None] | None = None) -> None:
    """Run a KServe ModelServer for ``model`` on host:port until SIGTERM.

    Listens at once (liveness); ``load()`` runs in the background and the model (and
    ``/v2/health/ready``) turns ready only when it returns; a failed load ends the process with
    exit code 3 so Kubernetes restarts it. ``setup_app(app)`` adds routes (the OpenAI ones).
    """
    import kserve.model_server as ms

    register_model(model.name)
    install_http_guards(ms.app, max_body=max_body, deadline_s=deadline_s)
    if setup_app is not None:
        setup_app(ms.app)
    # per-request latency log lines off (KServe's Prometheus histograms carry the same figures)
    server = BoundModelServer(host=host, http_port=port, enable_grpc=False, workers=1,
                              enable_latency_logging=False)
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    server.register_model(model)

    async def _ready() -> bool:  # /v2/health/ready follows the model: 503 until loaded
        return bool(model.ready)

    server.dataplane.ready = _ready

    readiness = ReadinessLogFilter(model.name)
    logging.getLogger("kserve").addFilter(readiness)

    def _bg():
        try:
            load()
            readiness.ready()
            log.info("model %s loaded: ready", model.name)
        except (ValueError, FileNotFoundError) as e:  # bad input (a path, a URI, a file): one line
            log.error("loading model %s failed: %s", model.name, " ".join(str(e).split()))
            os._exit(3)
        except BaseException:  # a real fault: the traceback
            log.exception("loading model %s failed", model.name)
            os._exit(3)

    threading.Thread(target=_bg, name=f"load-{model.name}", daemon=True).start()
    log.info("serving %r on http://%s:%d", model.name, host, port)
    server.start([])
