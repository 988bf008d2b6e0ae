"""The embedded OpenAI-compatible LLM server: any HF causal LM behind a KServe ModelServer.

``LLMModel`` is a ``kserve.Model`` (v1 ``:predict`` and KServe's health/readiness routes work as for
any KServe model; ready only after the weights loaded). ``register_openai_routes`` adds
``/openai/v1/models``, ``/openai/v1/completions`` and ``/openai/v1/chat/completions`` to a FastAPI app
(KServe's own OpenAI models need vllm, absent here). ``serve`` wires both into ``kserve.ModelServer``
bound to 127.0.0.1 unless told otherwise.

Generation: requests are checked (characters first), tokenized off the event loop (chat template
for chat), checked against the token limits, and queued on the one ``serving.batching.Batcher`` that
drives the engine (``serving.llm_engine``; JSON rows: ``serving.json_constraint``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import Field

from hllm_creator.config import StepConfig
from hllm_creator.llm.backbone import load_causal_lm
from hllm_creator.serving._openai_protocol import (
    Limits,
    OpenAIError,
    ParsedRequest,
    chat_reply,
    check_depth,
    completion_reply,
    model_card,
    parse_chat,
    parse_completion,
    parse_json_body,
)
from hllm_creator.serving.batching import Batcher, QueueFull
from hllm_creator.serving.llm_engine import GenOutput, GenRow, LLMEngine, resolve_dtype
from hllm_creator.serving.runtime import DEFAULT_DEADLINE_S, REQUEST_ID, ServingError, import_kserve
from hllm_creator.serving.runtime import serve as serve_model

kserve = import_kserve()
log = logging.getLogger(__name__)
__all__ = ["LLMModel", "LLMServerConfig", "register_openai_routes", "serve"]


class LLMServerConfig(StepConfig):
    """Everything ``hllm-creator serve llm`` takes."""

    model: str = "smollm2-135m-instruct"
    model_name: str | None = None  # served name; default: --model (a directory's basename)
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    max_batch_size: int = Field(8, ge=1, le=64)
    batch_window_ms: float = Field(20.0, ge=0, le=5000)
    max_prompt_tokens: int = Field(2048, ge=1)
    max_tokens_limit: int = Field(512, ge=1)
    default_max_tokens: int = Field(256, ge=1)
    max_messages: int = Field(64, ge=1)
    max_queue: int = Field(256, ge=1)
    # auto: bfloat16 where the CPU has native bf16 (AMX / AVX512-BF16: batched decoding about 1.5-2x
    # faster here), a CUDA device, else float32
    dtype: str = Field("auto", pattern="^(auto|float32|bfloat16)$")
    json_max_whitespace: int = Field(8, ge=1, le=64)  # consecutive whitespace allowed in constrained JSON
    threads: int = Field(0, ge=0, le=256)  # torch intra-op threads; 0 = torch's default
    json_warmup: bool = True  # build the JSON-constraint token table at start (about 9 s, background)
    scheduler: str = Field("continuous", pattern="^(continuous|static)$")
    # per request; x-request-timeout shortens it. 600 s = the teacher client's own timeout
    # (llm.client.LLMConfig.timeout_s): a longer wait is never useful to it
    deadline_s: float = Field(2 * DEFAULT_DEADLINE_S, gt=0)

    def served_name(self) -> str:
        if self.model_name:
            return self.model_name
        p = Path(self.model).expanduser()
        return p.name if p.is_dir() else self.model

    def limits(self) -> Limits:
        return Limits(max_prompt_tokens=self.max_prompt_tokens, max_tokens_limit=self.max_tokens_limit,
                      default_max_tokens=min(self.default_max_tokens, self.max_tokens_limit),
                      max_messages=self.max_messages)


# -- the KServe model ------------------------------------------------------------------------------

class LLMModel(kserve.Model):
    """A KServe model wrapping an HF causal LM; OpenAI routes and v1 ``:predict`` share one batcher."""

    def __init__(self, cfg: LLMServerConfig):
        super().__init__(cfg.served_name())
        self.cfg = cfg
        self.limits = cfg.limits()
        self.engine: LLMEngine | None = None
        self.batcher: Batcher | None = None
        self.created = int(time.time())
        self._json_warmup: threading.Thread | None = None
        # parsing, chat templates, tokenization, JSON-schema compilation: off the event loop and off the
        # decoding thread; two threads, so a first JSON request building the token table (about 9 s)
        # does not hold up the others
        self.prep = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="llm-prep")

    def load(self) -> bool:
        import torch

        t0 = time.time()
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[resolve_dtype(self.cfg.dtype)]
        backbone = load_causal_lm(self.cfg.model, dtype=dtype)
        self.engine = LLMEngine(backbone, self.limits, json_max_whitespace=self.cfg.json_max_whitespace)
        kw = dict(max_batch_size=self.cfg.max_batch_size, window_ms=self.cfg.batch_window_ms,
                  max_queue=self.cfg.max_queue, name=f"llm-{self.name}", metrics_name=self.name)
        self.batcher = (Batcher(stepper=self.engine, **kw) if self.cfg.scheduler == "continuous"
                        else Batcher(self.engine.generate_batch, **kw))
        if self.cfg.json_warmup:  # the JSON token table, in the background (first JSON request waits
            # on the same lock); a daemon thread, so it never delays shutdown
            self._json_warmup = threading.Thread(target=self.engine.enforcer_tokenizer_data,
                                                 name="json-warmup", daemon=True)
            self._json_warmup.start()
        log.info("loaded %s as %r (%s, %s scheduling) in %.1f s", self.cfg.model, self.name, dtype,
                 self.cfg.scheduler, time.time() - t0)
        self.ready = True
        return self.ready

    def _prepare(self, req: ParsedRequest) -> GenRow:
        ids = self.engine.tokenize(req)
        return GenRow(ids, req.params, self.engine.make_enforcer(req.params))

    # one request, end to end ----------------------------------------------------------------------
    async def run(self, req: ParsedRequest) -> GenOutput:
        if not self.ready or self.engine is None:
            raise OpenAIError("the model is still loading", status=503, type="server_error",
                              code="model_not_ready")
        if self.batcher.pending >= self.batcher.max_queue:  # before tokenizing: cheap 429
            raise OpenAIError(f"server busy: {self.batcher.pending} requests are waiting; retry later",
                              status=429, type="rate_limit_error", code="queue_full",
                              retry_after=self.batcher.retry_after())
        row = await asyncio.get_running_loop().run_in_executor(self.prep, self._prepare, req)
        try:
            return await self.batcher.submit(row)
        except QueueFull as e:
            raise OpenAIError(f"server busy: {e}; retry later", status=429, type="rate_limit_error",
                              code="queue_full", retry_after=e.retry_after) from None

    # KServe v1 :predict ---------------------------------------------------------------------------
    async def predict(self, payload: Any, headers: dict[str, str] | None = None, response_headers=None):
        """v1: ``{"instances": [{"prompt": str} | {"messages": [...]}, ...]}`` + optional OpenAI params
        per instance -> ``{"predictions": [{"text", "finish_reason", "usage"}]}``."""
        if not isinstance(payload, dict) or not isinstance(payload.get("instances"), list) \
                or not payload["instances"]:
            raise kserve.errors.InvalidInput("body must be {'instances': [ {'prompt': ...} | "
                                             "{'messages': [...]}, ... ]} with at least one instance")
        if len(payload["instances"]) > self.cfg.max_batch_size:
            raise kserve.errors.InvalidInput(f"{len(payload['instances'])} instances; the limit is "
                                             f"{self.cfg.max_batch_size}")
        reqs = []
        for k, inst in enumerate(payload["instances"]):
            if not isinstance(inst, dict):
                raise kserve.errors.InvalidInput(f"instances[{k}] must be an object")
            body = {"model": self.name, **inst}
            try:
                check_depth(inst, f"instances[{k}]")
                reqs.append(parse_chat(body, self.name, self.limits) if "messages" in inst
                            else parse_completion(body, self.name, self.limits))
            except OpenAIError as e:
                raise kserve.errors.InvalidInput(f"instances[{k}]: {e.message}") from None
        try:
            outs = await asyncio.gather(*(self.run(r) for r in reqs))
        except OpenAIError as e:
            if e.status in (429, 503, 504):  # back-off signals stay what they are
                raise ServingError(e.message, e.status, retry_after=e.retry_after, code=e.code) from None
            raise kserve.errors.InvalidInput(e.message) from None
        return {"predictions": [{"text": o.text, "finish_reason": o.finish_reason,
                                 "usage": {"prompt_tokens": o.prompt_tokens,
                                           "completion_tokens": o.completion_tokens}} for o in outs]}


# -- OpenAI routes ---------------------------------------------------------------------------------

def register_openai_routes(app, model: LLMModel, prefix: str = "/openai/v1") -> None:
    """Add the OpenAI-compatible routes for ``model`` to a FastAPI app (KServe's, or any)."""
    def err(e: OpenAIError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers())

    async def handle(request: Request, kind: str) -> JSONResponse:
        try:
            raw, ctype = await request.body(), request.headers.get("content-type")
            parse = parse_chat if kind == "chat" else parse_completion

            def _parse():  # JSON, depth and schema checks: off the event loop
                return parse(parse_json_body(raw, ctype, model.limits), model.name, model.limits)

            req = await asyncio.get_running_loop().run_in_executor(model.prep, _parse)
            out = await model.run(req)
        except OpenAIError as e:
            if e.status >= 500:
                log.warning("%s: %s", kind, e.message)
            return err(e)
        except Exception:  # a bug or resource failure, never a client mistake: details only in the log
            rid = REQUEST_ID.get()
            log.exception("%s request %s failed", kind, rid)
            return err(OpenAIError(f"internal error (request id {rid}); the details are in the server log",
                                   status=500, type="server_error", code="internal_error"))
        reply = chat_reply if kind == "chat" else completion_reply
        return JSONResponse(reply(model.name, out.text, out.finish_reason, out.prompt_tokens,
                                  out.completion_tokens))

    async def chat_completions(request: Request):
        return await handle(request, "chat")

    async def completions(request: Request):
        return await handle(request, "completion")

    async def list_models():
        return JSONResponse({"object": "list", "data": [model_card(model.name, model.created)]})

    async def get_model(model_id: str):
        if model_id != model.name:
            return err(OpenAIError(f"The model {model_id!r} does not exist; this server serves "
                                   f"{model.name!r}", status=404, param="model", code="model_not_found"))
        return JSONResponse(model_card(model.name, model.created))

    app.add_api_route(f"{prefix}/chat/completions", chat_completions, methods=["POST"])
    app.add_api_route(f"{prefix}/completions", completions, methods=["POST"])
    app.add_api_route(f"{prefix}/models", list_models, methods=["GET"])
    app.add_api_route(f"{prefix}/models/{{model_id:path}}", get_model, methods=["GET"])


# -- the server process ----------------------------------------------------------------------------

def serve(cfg: LLMServerConfig) -> None:
    """The OpenAI routes + KServe's on one ModelServer (``runtime.serve``: loads in the background,
    ready once the weights are in memory) until SIGTERM."""
    model = LLMModel(cfg)
    if cfg.threads:  # the process's torch threads, before anything runs
        import torch

        torch.set_num_threads(cfg.threads)
    serve_model(model, cfg.host, cfg.port, model.load, max_body=model.limits.max_body_bytes,
                deadline_s=cfg.deadline_s, setup_app=lambda app: register_openai_routes(app, model))
