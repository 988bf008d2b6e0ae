"""The embedded OpenAI-compatible LLM server: any HF causal LM behind a KServe ModelServer.

``LLMModel`` is a ``kserve.Model`` (v1 ``:predict`` and KServe's health/readiness routes work as for
any KServe model; ready only after the weights loaded). ``register_openai_routes`` adds
``/openai/v1/models``, ``/openai/v1/completions`` and ``/openai/v1/chat/completions`` to a FastAPI app
(KServe's own OpenAI models need vllm, absent here). ``serve`` wires both into ``kserve.ModelServer``
bound to 127.0.0.1 unless told otherwise.

Generation: requests are tokenized (chat template for chat), checked against the limits, and queued
on a ``DynamicBatcher``; each batch is ONE ``model.generate`` call over left-padded rows. Per-row
settings (temperature, top_p, seed, max_tokens, stop, ignore_eos, a JSON schema) are honoured inside
that one call: a logits processor picks each row's next token (greedy, or seeded sampling with
temperature/top_p, masked by the row's lm-format-enforcer JSON constraint) and a per-row stopping
criterion ends each row at its own max_tokens / eos / stop string.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import Field
from transformers import LogitsProcessor, StoppingCriteria

from hllm_creator.config import StepConfig
from hllm_creator.serving._openai_protocol import (
    GenParams,
    Limits,
    OpenAIError,
    ParsedRequest,
    chat_reply,
    completion_reply,
    model_card,
    parse_chat,
    parse_completion,
    parse_json_body,
)
from hllm_creator.serving.batching import DynamicBatcher, QueueFull


def _import_kserve():
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


kserve = _import_kserve()
log = logging.getLogger(__name__)


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

    def served_name(self) -> str:
        if self.model_name:
            return self.model_name
        p = Path(self.model).expanduser()
        return p.name if p.is_dir() else self.model

    def limits(self) -> Limits:
        return Limits(max_prompt_tokens=self.max_prompt_tokens, max_tokens_limit=self.max_tokens_limit,
                      default_max_tokens=min(self.default_max_tokens, self.max_tokens_limit),
                      max_messages=self.max_messages)


@dataclass
class GenRow:
    """One tokenized request, ready for a batch."""

    prompt_ids: list[int]
    params: GenParams
    enforcer: JsonConstraint | None = None  # for JSON rows


@dataclass
class GenOutput:
    text: str
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int
    token_ids: list[int] = field(default_factory=list)


# -- JSON constraint (lm-format-enforcer) ----------------------------------------------------------

def build_enforcer_tokenizer_data(tokenizer):
    """lm-format-enforcer's token table for an HF tokenizer, plus the ids of whitespace-only tokens.

    Same logic as ``lmformatenforcer.integrations.transformers.build_token_enforcer_tokenizer_data``;
    that module cannot be imported with transformers 5 (it imports ``transformers.tokenization_utils``,
    which no longer exists), so the 10 lines are here. About 9 s for a 49k vocabulary.
    """
    from lmformatenforcer import TokenEnforcerTokenizerData

    vocab_size = len(tokenizer)
    token_0 = tokenizer.encode("0", add_special_tokens=False)[-1]
    special = set(tokenizer.all_special_ids)
    regular, ws_only = [], []
    for i in range(vocab_size):
        if i in special:
            continue
        after_0 = tokenizer.decode([token_0, i])[1:]
        alone = tokenizer.decode([i])
        regular.append((i, after_0, len(after_0) > len(alone)))
        if alone and not alone.strip():
            ws_only.append((i, len(alone)))

    def decode(tokens: list[int]) -> str:
        return tokenizer.decode(tokens).rstrip("\ufffd")

    return TokenEnforcerTokenizerData(regular, decode, tokenizer.eos_token_id, False, vocab_size), ws_only


@dataclass
class JsonConstraint:
    """One row's JSON constraint: the lm-format-enforcer state machine + a whitespace cap.

    lm-format-enforcer's own ``max_consecutive_whitespaces`` is not applied in every parser state (a
    random or small model still emits endless tab/CR runs between tokens), so once the generated text
    would end in more than ``max_ws`` whitespace characters, whitespace-only tokens that would
    extend the run are masked as well.
    """

    enforcer: Any
    ws_only: list[tuple[int, int]]  # (token id, length of its whitespace text)
    max_ws: int

    def whitespace_ban(self, tail_ws: int):
        """Token ids that would make the whitespace run longer than ``max_ws``."""
        import torch

        return torch.as_tensor([i for i, n in self.ws_only if tail_ws + n > self.max_ws], dtype=torch.long)


# -- the engine: tokenizer + model + one batched generate call -------------------------------------

class LLMEngine:
    """Owns the model; ``generate_batch`` runs one ``model.generate`` for a list of rows (sync)."""

    def __init__(self, backbone, limits: Limits, json_max_whitespace: int = 8):
        self.json_max_whitespace = json_max_whitespace
        self.model = backbone.model
        self.tokenizer = backbone.tokenizer
        self.limits = limits
        tok = self.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
        self.eos_ids = sorted({*eos, tok.eos_token_id} - {None})
        self.max_positions = int(getattr(self.model.config, "max_position_embeddings", 0) or 0)
        self._tokdata = None
        self._tokdata_lock = threading.Lock()

    # tokenization ---------------------------------------------------------------------------------
    def chat_prompt(self, messages: list[dict]) -> str:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            try:
                return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            except Exception as e:  # a template that rejects this conversation (role order, ...)
                raise OpenAIError(f"the model's chat template rejected these messages: {e}",
                                  param="messages", code="invalid_messages") from None
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "

    def tokenize(self, req: ParsedRequest) -> list[int]:
        if req.kind == "chat":
            ids = self.tokenizer(self.chat_prompt(req.messages), add_special_tokens=False)["input_ids"]
        else:
            ids = self.tokenizer(req.prompt)["input_ids"]
        n = len(ids)
        lim = self.limits.max_prompt_tokens
        if n > lim:
            raise OpenAIError(f"the prompt is {n} tokens; this server allows at most {lim} prompt tokens",
                              param="messages" if req.kind == "chat" else "prompt",
                              code="context_length_exceeded")
        if self.max_positions and n + req.params.max_tokens > self.max_positions:
            raise OpenAIError(f"prompt ({n} tokens) + max_tokens ({req.params.max_tokens}) exceeds the "
                              f"model's context of {self.max_positions}", param="max_tokens",
                              code="context_length_exceeded")
        return ids

    # JSON constraint ------------------------------------------------------------------------------
    def enforcer_tokenizer_data(self):
        with self._tokdata_lock:
            if self._tokdata is None:
                t0 = time.time()
                self._tokdata = build_enforcer_tokenizer_data(self.tokenizer)
                log.info("JSON-constraint token table built in %.1f s", time.time() - t0)
            return self._tokdata

    def make_enforcer(self, params: GenParams):
        if params.json_mode is None:
            return None
        from lmformatenforcer import CharacterLevelParserConfig, JsonSchemaParser, TokenEnforcer

        # small models tend to loop on whitespace inside JSON: cap consecutive whitespace
        conf = CharacterLevelParserConfig(max_consecutive_whitespaces=self.json_max_whitespace)
        try:
            parser = JsonSchemaParser(params.json_schema, config=conf)  # None -> any JSON object
        except Exception as e:
            raise OpenAIError(f"this JSON schema is not supported by the constrained decoder: {e}",
                              param="response_format", code="unsupported_schema") from None
        tokdata, ws_only = self.enforcer_tokenizer_data()
        return JsonConstraint(TokenEnforcer(tokdata, parser), ws_only, self.json_max_whitespace)

    # generation -----------------------------------------------------------------------------------
    def generate_batch(self, rows: list[GenRow]) -> list[GenOutput | BaseException]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        n_rows = len(rows)
        width = max(len(r.prompt_ids) for r in rows)
        input_ids = torch.full((n_rows, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((n_rows, width), dtype=torch.long)
        for i, r in enumerate(rows):  # left padding
            input_ids[i, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids, dtype=torch.long)
            attention[i, width - len(r.prompt_ids):] = 1
        state = _BatchState(rows, width, self.eos_ids, self.pad_id, self.tokenizer)
        gc = GenerationConfig(max_new_tokens=max(r.params.max_tokens for r in rows), do_sample=False,
                              num_beams=1, pad_token_id=self.pad_id, eos_token_id=self.eos_ids,
                              use_cache=True)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids, attention_mask=attention, generation_config=gc,
                                      logits_processor=LogitsProcessorList([_RowProcessor(state)]),
                                      stopping_criteria=StoppingCriteriaList([_RowStopper(state)]))
        dt = time.perf_counter() - t0
        log.info("generate: batch of %d rows, %d new tokens in %.2f s (%.1f tokens/s)", n_rows,
                 sum(state.n_gen), dt, sum(state.n_gen) / max(dt, 1e-9))
        results: list[GenOutput | BaseException] = []
        for i, r in enumerate(rows):
            if state.errors[i] is not None:
                results.append(state.errors[i])
                continue
            gen = out[i, width:width + state.n_gen[i]].tolist()
            body = gen[:-1] if (gen and gen[-1] in self.eos_ids and state.reason[i] == "eos") else gen
            text = self.tokenizer.decode(body, skip_special_tokens=True)
            reason = "stop" if state.reason[i] in ("eos", "stop") else "length"
            cut = [text.find(s) for s in r.params.stop if s in text]
            if cut:
                text, reason = text[:min(cut)], "stop"
            elif r.enforcer is not None and state.reason[i] == "eos":
                problem = _json_problem(text, r.params.json_schema)
                if problem:  # lm-format-enforcer gave up on a construct it cannot follow (it then ends)
                    results.append(OpenAIError(
                        f"the constrained decoder could not enforce this schema (reply was {text[:200]!r}: "
                        f"{problem}); simplify the schema", param="response_format", code="unsupported_schema"))
                    continue
            results.append(GenOutput(text=text, finish_reason=reason, prompt_tokens=len(r.prompt_ids),
                                     completion_tokens=len(gen), token_ids=gen))
        return results


def _json_problem(text: str, schema: dict | None) -> str | None:
    """Why ``text`` is not a JSON document matching ``schema`` (None when it is)."""
    import json

    import jsonschema

    try:
        obj = json.loads(text)
    except ValueError as e:
        return f"not JSON: {e}"
    if schema is not None:
        try:
            jsonschema.validate(obj, schema)
        except jsonschema.ValidationError as e:
            return f"schema violation: {e.message}"
    return None


class _BatchState:
    """Per-row bookkeeping shared by the logits processor and the stopping criterion."""

    def __init__(self, rows: list[GenRow], prompt_len: int, eos_ids: list[int], pad_id: int, tokenizer):
        import torch

        self.rows = rows
        self.prompt_len = prompt_len
        self.eos_ids = eos_ids
        self.pad_id = pad_id
        self.tokenizer = tokenizer
        self.done = [False] * len(rows)
        self.reason: list[str | None] = [None] * len(rows)
        self.n_gen = [0] * len(rows)
        self.errors: list[BaseException | None] = [None] * len(rows)
        self.generators = []
        for r in rows:
            g = torch.Generator()
            g.manual_seed(r.params.seed if r.params.seed is not None else random.getrandbits(63))
            self.generators.append(g)


class _RowProcessor(LogitsProcessor):
    """Chooses every row's next token and returns a one-hot score row, so greedy picks it.

    This puts per-row sampling settings, seeds and JSON constraints into one batched generate call.
    """

    def __init__(self, state: _BatchState):
        self.state = state

    def __call__(self, input_ids, scores):
        import torch

        st = self.state
        out = torch.full_like(scores, float("-inf"))
        for i, row in enumerate(st.rows):
            if st.done[i]:
                out[i, st.pad_id] = 0.0
                continue
            s = scores[i].float()
            p = row.params
            if row.enforcer is not None:
                try:
                    gen = input_ids[i, st.prompt_len:].tolist()
                    allowed = row.enforcer.enforcer.get_allowed_tokens(gen)
                    allowed = getattr(allowed, "allowed_tokens", allowed)
                    mask = torch.full_like(s, float("-inf"))
                    mask[torch.as_tensor(list(allowed), dtype=torch.long)] = 0.0
                    tail = st.tokenizer.decode(gen[-16:]) if gen else ""
                    ban = row.enforcer.whitespace_ban(len(tail) - len(tail.rstrip()))
                    if len(ban):
                        capped = mask.clone()
                        capped[ban] = float("-inf")
                        if torch.isfinite(capped).any():
                            mask = capped
                    s = s + mask
                except Exception as e:  # a schema construct the enforcer cannot follow: fail this row only
                    st.errors[i] = OpenAIError(f"constrained decoding failed for this schema: {e}",
                                               param="response_format", code="unsupported_schema")
                    st.done[i] = True
                    out[i, st.pad_id] = 0.0
                    continue
            elif p.ignore_eos:
                s[st.eos_ids] = float("-inf")
            if p.temperature == 0.0:
                tok = int(torch.argmax(s))
            else:
                probs = torch.softmax(s / p.temperature, dim=-1)
                if p.top_p < 1.0:
                    sp, idx = torch.sort(probs, descending=True)
                    keep = (torch.cumsum(sp, 0) - sp) < p.top_p
                    keep[0] = True
                    probs = torch.zeros_like(probs).scatter_(0, idx[keep], sp[keep])
                tok = int(torch.multinomial(probs, 1, generator=st.generators[i]))
            out[i, tok] = 0.0
        return out


class _RowStopper(StoppingCriteria):
    """Per-row stopping: eos, a stop string, or the row's own max_tokens. Returns a bool per row."""

    def __init__(self, state: _BatchState):
        self.state = state

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        st = self.state
        n = input_ids.shape[1] - st.prompt_len
        for i, row in enumerate(st.rows):
            if st.done[i]:
                continue
            st.n_gen[i] = n
            last = int(input_ids[i, -1])
            if last in st.eos_ids and (row.enforcer is not None or not row.params.ignore_eos):
                st.done[i], st.reason[i] = True, "eos"
            elif row.params.stop and any(
                    s in st.tokenizer.decode(input_ids[i, st.prompt_len:].tolist(), skip_special_tokens=True)
                    for s in row.params.stop):
                st.done[i], st.reason[i] = True, "stop"
            elif n >= row.params.max_tokens:
                st.done[i], st.reason[i] = True, "length"
        return torch.tensor(st.done, dtype=torch.bool, device=input_ids.device)


def resolve_dtype(dtype: str) -> str:
    """``auto`` -> ``bfloat16`` on a CPU with native bf16 matmuls (amx_bf16 / avx512_bf16), else float32."""
    if dtype != "auto":
        return dtype
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return "bfloat16" if ("amx_bf16" in flags or "avx512_bf16" in flags) else "float32"


# -- the KServe model ------------------------------------------------------------------------------

class LLMModel(kserve.Model):
    """A KServe model wrapping an HF causal LM; OpenAI routes and v1 ``:predict`` share one batcher."""

    def __init__(self, cfg: LLMServerConfig):
        super().__init__(cfg.served_name())
        self.cfg = cfg
        self.limits = cfg.limits()
        self.engine: LLMEngine | None = None
        self.batcher: DynamicBatcher | None = None
        self.created = int(time.time())
        self._json_warmup: threading.Thread | None = None

    def load(self) -> bool:
        import torch

        from hllm_creator.llm.backbone import load_causal_lm

        t0 = time.time()
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[resolve_dtype(self.cfg.dtype)]
        backbone = load_causal_lm(self.cfg.model, dtype=dtype)
        self.engine = LLMEngine(backbone, self.limits, json_max_whitespace=self.cfg.json_max_whitespace)
        self.batcher = DynamicBatcher(self.engine.generate_batch, max_batch_size=self.cfg.max_batch_size,
                                      window_ms=self.cfg.batch_window_ms, max_queue=self.cfg.max_queue,
                                      name=f"llm-{self.name}")
        if self.cfg.json_warmup:  # the JSON token table, in the background (first JSON request waits
            # on the same lock); a daemon thread, so it never delays shutdown
            self._json_warmup = threading.Thread(target=self.engine.enforcer_tokenizer_data,
                                                 name="json-warmup", daemon=True)
            self._json_warmup.start()
        log.info("loaded %s as %r (%s) in %.1f s", self.cfg.model, self.name, dtype, time.time() - t0)
        self.ready = True
        return self.ready

    # one request, end to end ----------------------------------------------------------------------
    async def run(self, req: ParsedRequest) -> GenOutput:
        if not self.ready or self.engine is None:
            raise OpenAIError("the model is still loading", status=503, type="server_error",
                              code="model_not_ready")
        ids = self.engine.tokenize(req)
        enforcer = None
        if req.params.json_mode is not None:
            loop = asyncio.get_running_loop()
            enforcer = await loop.run_in_executor(None, self.engine.make_enforcer, req.params)
        try:
            return await self.batcher.submit(GenRow(ids, req.params, enforcer))
        except QueueFull as e:
            raise OpenAIError(f"server busy: {e}; retry later", status=429, type="rate_limit_error",
                              code="queue_full") from None

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
                reqs.append(parse_chat(body, self.name, self.limits) if "messages" in inst
                            else parse_completion(body, self.name, self.limits))
            except OpenAIError as e:
                raise kserve.errors.InvalidInput(f"instances[{k}]: {e.message}") from None
        try:
            outs = await asyncio.gather(*(self.run(r) for r in reqs))
        except OpenAIError as e:
            raise kserve.errors.InvalidInput(e.message) from None
        return {"predictions": [{"text": o.text, "finish_reason": o.finish_reason,
                                 "usage": {"prompt_tokens": o.prompt_tokens,
                                           "completion_tokens": o.completion_tokens}} for o in outs]}


# -- OpenAI routes ---------------------------------------------------------------------------------

def register_openai_routes(app, model: LLMModel, prefix: str = "/openai/v1") -> None:
    """Add the OpenAI-compatible routes for ``model`` to a FastAPI app (KServe's, or any)."""
    def err(e: OpenAIError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status)

    async def handle(request: Request, kind: str) -> JSONResponse:
        try:
            body = parse_json_body(await request.body(), request.headers.get("content-type"), model.limits)
            parse = parse_chat if kind == "chat" else parse_completion
            req = parse(body, model.name, model.limits)
            out = await model.run(req)
        except OpenAIError as e:
            if e.status >= 500:
                log.warning("%s: %s", kind, e.message)
            return err(e)
        except Exception as e:  # a bug or resource failure, never a client mistake
            log.exception("%s request failed", kind)
            return err(OpenAIError(f"internal error: {type(e).__name__}: {e}", status=500,
                                   type="server_error", code="internal_error"))
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


def serve(cfg: LLMServerConfig) -> None:
    """Load the model (readiness only after that), add the OpenAI routes, run KServe until SIGTERM."""
    model = LLMModel(cfg)
    model.load()
    register_openai_routes(kserve.model_server.app, model)
    server = BoundModelServer(host=cfg.host, http_port=cfg.port, enable_grpc=False, workers=1)
    log.info("serving %r on http://%s:%d (OpenAI routes under /openai/v1)", model.name, cfg.host, cfg.port)
    server.start([model])
