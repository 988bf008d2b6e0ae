"""OpenAI wire format for the embedded LLM server: request validation, replies, errors.

Pure Python (no torch, no kserve): every check a request goes through before it reaches the model,
so a malformed request becomes a 4xx with an OpenAI-style body
``{"error": {"message", "type", "param", "code"}}`` and never a 5xx.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

ROLES = {"system", "user", "assistant", "developer", "tool"}
MAX_STOP = 4
MAX_STOP_CHARS = 256
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # seed: a 64-bit signed integer, as in the OpenAI API
GREEDY_BELOW = 1e-5  # a temperature below this is greedy decoding (as vLLM's _SAMPLING_EPS)
MAX_JSON_DEPTH = 64  # nesting of a request body (deeper: 400, never a RecursionError)
CHARS_PER_TOKEN = 16  # prompt characters allowed per prompt token, checked before tokenizing
# JSON-schema keywords the constrained decoder does not take: a regular expression is compiled
# into an automaton by lm-format-enforcer, with exponential blow-up for patterns such as
# (a|b)*a(a|b){14}, inside token selection; so no regular expressions at all.
UNSUPPORTED_SCHEMA_KEYWORDS = ("pattern", "patternProperties")
MAX_SCHEMA_DEPTH = 16
MAX_SCHEMA_BYTES = 32 * 1024


class OpenAIError(Exception):
    """A client error answered as ``{"error": {...}}`` with an HTTP status (4xx)."""

    def __init__(self, message: str, *, status: int = 400, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.param = param
        self.code = code
        self.retry_after = retry_after  # seconds, sent as Retry-After (429)

    def headers(self) -> dict[str, str]:
        return {"retry-after": str(self.retry_after)} if self.retry_after is not None else {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class Limits:
    """Server-side limits a request is checked against (all configurable on the command line)."""

    max_prompt_tokens: int = 2048
    max_tokens_limit: int = 512
    default_max_tokens: int = 256
    max_messages: int = 64
    max_body_bytes: int = 4 * 1024 * 1024

    @property
    def max_prompt_chars(self) -> int:
        return self.max_prompt_tokens * CHARS_PER_TOKEN


@dataclass
class GenParams:
    """One request's decoding settings (per row in a batch)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    ignore_eos: bool = False
    json_schema: dict | None = None  # the schema to enforce
    json_mode: str | None = None  # None | "json_object" | "json_schema"


@dataclass
class ParsedRequest:
    kind: str  # "chat" | "completion"
    model: str
    params: GenParams
    messages: list[dict] | None = None
    prompt: str | None = None


# -- primitive checks ------------------------------------------------------------------------------

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _get_int(body: dict, key: str, *, lo: int | None = None, hi: int | None = None) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if not _is_int(v):
        raise OpenAIError(f"'{key}' must be an integer, got {type(v).__name__} {v!r:.40}", param=key,
                          code="invalid_type")
    if lo is not None and v < lo:
        raise OpenAIError(f"'{key}' must be >= {lo}, got {v}", param=key, code="invalid_value")
    if hi is not None and v > hi:
        raise OpenAIError(f"'{key}' is {v}; this server allows at most {hi}", param=key,
                          code="invalid_value")
    return v


def _get_num(body: dict, key: str, lo: float, hi: float, *, lo_open: bool = False) -> float | None:
    v = body.get(key)
    if v is None:
        return None
    if not _is_num(v):
        raise OpenAIError(f"'{key}' must be a number, got {type(v).__name__} {v!r:.40}", param=key,
                          code="invalid_type")
    if v < lo or v > hi or (lo_open and v == lo):
        rng = f"({lo}, {hi}]" if lo_open else f"[{lo}, {hi}]"
        raise OpenAIError(f"'{key}' must be in {rng}, got {v}", param=key, code="invalid_value")
    return float(v)


def parse_json_body(raw: bytes, content_type: str | None, limits: Limits) -> dict:
    """Raw HTTP body -> dict, or an OpenAIError (415 wrong content type, 413 too big, 400 bad JSON)."""
    ct = (content_type or "").split(";")[0].strip().lower()
    if ct != "application/json":
        raise OpenAIError(f"Content-Type must be application/json, got {content_type or 'none'!r}",
                          status=415, code="unsupported_media_type")
    if len(raw) > limits.max_body_bytes:
        raise OpenAIError(f"request body is {len(raw)} bytes; the limit is {limits.max_body_bytes}",
                          status=413, code="body_too_large")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise OpenAIError(f"request body is not valid JSON: {e}", code="invalid_json") from None
    except RecursionError:
        raise OpenAIError(f"request body is nested more than {MAX_JSON_DEPTH} levels deep",
                          code="invalid_json") from None
    check_depth(body)
    if not isinstance(body, dict):
        raise OpenAIError(f"request body must be a JSON object, got {type(body).__name__}",
                          code="invalid_type")
    return body


def json_depth(obj: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    depth, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, dict):
            o = o.values()
        elif not isinstance(o, list):
            continue
        depth = max(depth, d)
        stack.extend((v, d + 1) for v in o if isinstance(v, (dict, list)))
    return depth


def check_depth(obj: Any, where: str = "request body", limit: int = MAX_JSON_DEPTH) -> None:
    d = json_depth(obj)
    if d > limit:
        raise OpenAIError(f"{where} is nested {d} levels deep; the limit is {limit}", code="invalid_json")


def check_schema_subset(schema: dict, where: str = "response_format.json_schema.schema") -> None:
    """The JSON-schema subset the constrained decoder takes (docs/llm_server.md): no regular
    expressions (``pattern``, ``patternProperties``), at most MAX_SCHEMA_DEPTH levels, MAX_SCHEMA_BYTES."""
    size = len(json.dumps(schema))
    if size > MAX_SCHEMA_BYTES:
        raise OpenAIError(f"{where} is {size} bytes; the limit is {MAX_SCHEMA_BYTES}", param=where,
                          code="unsupported_schema")
    d = json_depth(schema)
    if d > MAX_SCHEMA_DEPTH:
        raise OpenAIError(f"{where} is nested {d} levels deep; the limit is {MAX_SCHEMA_DEPTH}", param=where,
                          code="unsupported_schema")
    stack: list[tuple[Any, str]] = [(schema, where)]
    while stack:
        o, path = stack.pop()
        if isinstance(o, dict):
            for k, v in o.items():
                if k in UNSUPPORTED_SCHEMA_KEYWORDS and isinstance(v, (str, dict)):
                    raise OpenAIError(f"{path}.{k}: regular expressions are not supported by this server's "
                                      "constrained decoder (see the supported schema subset)",
                                      param=f"{path}.{k}", code="unsupported_schema")
                stack.append((v, f"{path}.{k}"))
        elif isinstance(o, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(o))


def check_model(body: dict, served: str) -> str:
    m = body.get("model")
    if m is None:
        raise OpenAIError("'model' is required", param="model", code="missing_required_parameter")
    if not isinstance(m, str):
        raise OpenAIError(f"'model' must be a string, got {type(m).__name__}", param="model",
                          code="invalid_type")
    if m != served:
        raise OpenAIError(f"The model {m!r} does not exist; this server serves {served!r}", status=404,
                          param="model", code="model_not_found")
    return m


def _content_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": "..."}] as the openai client may send
        parts = []
        for j, p in enumerate(content):
            if not (isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)):
                raise OpenAIError(f"{where}.content[{j}] must be {{'type': 'text', 'text': str}}; only text "
                                  "parts are supported", param=f"{where}.content", code="invalid_type")
            parts.append(p["text"])
        return "".join(parts)
    raise OpenAIError(f"{where}.content must be a string or a list of text parts, got "
                      f"{type(content).__name__}", param=f"{where}.content", code="invalid_type")


def parse_messages(body: dict, limits: Limits) -> list[dict]:
    msgs = body.get("messages")
    if msgs is None:
        raise OpenAIError("'messages' is required", param="messages", code="missing_required_parameter")
    if not isinstance(msgs, list):
        raise OpenAIError(f"'messages' must be an array, got {type(msgs).__name__}", param="messages",
                          code="invalid_type")
    if not msgs:
        raise OpenAIError("'messages' must contain at least one message", param="messages",
                          code="empty_array")
    if len(msgs) > limits.max_messages:
        raise OpenAIError(f"'messages' has {len(msgs)} entries; the limit is {limits.max_messages}",
                          param="messages", code="too_many_messages")
    out = []
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise OpenAIError(f"{where} must be an object, got {type(m).__name__}", param=where,
                              code="invalid_type")
        role = m.get("role")
        if role not in ROLES:
            raise OpenAIError(f"{where}.role must be one of {sorted(ROLES)}, got {role!r:.40}",
                              param=f"{where}.role", code="invalid_value")
        if "content" not in m or m["content"] is None:
            raise OpenAIError(f"{where}.content is required", param=f"{where}.content",
                              code="missing_required_parameter")
        role = {"developer": "system"}.get(role, role)
        out.append({"role": role, "content": _content_text(m["content"], where)})
    return out


def parse_response_format(body: dict) -> tuple[str | None, dict | None]:
    rf = body.get("response_format")
    if rf is None:
        return None, None
    if not isinstance(rf, dict) or not isinstance(rf.get("type"), str):
        raise OpenAIError("'response_format' must be an object with a string 'type'",
                          param="response_format", code="invalid_type")
    t = rf["type"]
    if t == "text":
        return None, None
    if t == "json_object":
        return "json_object", None
    if t == "json_schema":
        js = rf.get("json_schema")
        if not isinstance(js, dict) or not isinstance(js.get("schema"), dict):
            raise OpenAIError("response_format.json_schema.schema must be a JSON Schema object",
                              param="response_format.json_schema", code="invalid_type")
        schema = js["schema"]
        check_schema_subset(schema)
        import jsonschema

        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as e:
            raise OpenAIError(f"response_format.json_schema.schema is not a valid JSON Schema: {e.message}",
                              param="response_format.json_schema.schema", code="invalid_schema") from None
        return "json_schema", schema
    raise OpenAIError(f"response_format.type must be 'text', 'json_object' or 'json_schema', got {t!r:.40}",
                      param="response_format.type", code="invalid_value")


def parse_params(body: dict, limits: Limits, *, chat: bool) -> GenParams:
    if body.get("stream"):
        raise OpenAIError("'stream' is not supported by this server", param="stream", code="unsupported")
    n = _get_int(body, "n", lo=1)
    if n is not None and n != 1:
        raise OpenAIError(f"'n' must be 1 on this server, got {n}", param="n", code="unsupported")
    if body.get("logprobs") not in (None, False) or body.get("top_logprobs") is not None:
        raise OpenAIError("'logprobs' is not supported by this server", param="logprobs", code="unsupported")
    if body.get("echo"):
        raise OpenAIError("'echo' is not supported by this server", param="echo", code="unsupported")
    key = "max_completion_tokens" if chat and body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _get_int(body, key, lo=1, hi=limits.max_tokens_limit)
    if max_tokens is None:
        max_tokens = min(limits.default_max_tokens, limits.max_tokens_limit)
    temperature = _get_num(body, "temperature", 0.0, 2.0)
    if temperature is not None and temperature < GREEDY_BELOW:
        temperature = 0.0  # 1e-40 would give NaN probabilities: greedy, as vLLM does
    top_p = _get_num(body, "top_p", 0.0, 1.0, lo_open=True)
    seed = _get_int(body, "seed", lo=INT64_MIN, hi=INT64_MAX)
    stop = body.get("stop")
    if stop is None:
        stops: list[str] = []
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = list(stop)
    else:
        raise OpenAIError("'stop' must be a string or an array of strings", param="stop", code="invalid_type")
    if len(stops) > MAX_STOP or any(not s or len(s) > MAX_STOP_CHARS for s in stops):
        raise OpenAIError(f"'stop' allows up to {MAX_STOP} non-empty strings of at most {MAX_STOP_CHARS} chars",
                          param="stop", code="invalid_value")
    ignore_eos = body.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool):
        raise OpenAIError("'ignore_eos' must be a boolean", param="ignore_eos", code="invalid_type")
    mode, schema = parse_response_format(body) if chat else (None, None)
    return GenParams(max_tokens=max_tokens, temperature=1.0 if temperature is None else temperature,
                     top_p=1.0 if top_p is None else top_p, stop=stops, seed=seed, ignore_eos=ignore_eos,
                     json_schema=schema, json_mode=mode)


def _check_chars(n: int, param: str, limits: Limits) -> None:
    if n > limits.max_prompt_chars:
        raise OpenAIError(f"the prompt is {n} characters; this server allows at most {limits.max_prompt_chars} "
                          f"({limits.max_prompt_tokens} tokens)", param=param, code="context_length_exceeded")


def parse_chat(body: dict, served: str, limits: Limits) -> ParsedRequest:
    model = check_model(body, served)
    messages = parse_messages(body, limits)
    _check_chars(sum(len(m["content"]) for m in messages), "messages", limits)
    return ParsedRequest("chat", model, parse_params(body, limits, chat=True), messages=messages)


def parse_completion(body: dict, served: str, limits: Limits) -> ParsedRequest:
    model = check_model(body, served)
    p = body.get("prompt")
    if isinstance(p, list) and len(p) == 1 and isinstance(p[0], str):
        p = p[0]
    if p is None:
        raise OpenAIError("'prompt' is required", param="prompt", code="missing_required_parameter")
    if not isinstance(p, str):
        raise OpenAIError("'prompt' must be a string (or an array holding one string)", param="prompt",
                          code="invalid_type")
    if not p:
        raise OpenAIError("'prompt' must not be empty", param="prompt", code="invalid_value")
    _check_chars(len(p), "prompt", limits)
    return ParsedRequest("completion", model, parse_params(body, limits, chat=False), prompt=p)


# -- replies ---------------------------------------------------------------------------------------

def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_reply(model: str, text: str, finish_reason: str, prompt_tokens: int, completion_tokens: int) -> dict:
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": finish_reason}],
            "usage": usage(prompt_tokens, completion_tokens)}


def completion_reply(model: str, text: str, finish_reason: str, prompt_tokens: int,
                     completion_tokens: int) -> dict:
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": model, "system_fingerprint": None,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}],
            "usage": usage(prompt_tokens, completion_tokens)}


def model_card(name: str, created: int) -> dict:
    return {"id": name, "object": "model", "created": created, "owned_by": "hllm-creator"}
