"""OpenAI-compatible client for the teacher and the judge: retries, cache, schema-checked JSON replies.

- Endpoint from arguments or the environment: ``OPENAI_BASE_URL``, ``OPENAI_API_KEY``,
  ``HLLM_TEACHER_MODEL`` (model name). The key is a ``SecretStr`` excluded from the config's dump,
  so it is never logged, printed or sent to MLflow.
- The official ``openai`` client underneath (its own retries off); ``tenacity`` retries with
  exponential backoff + jitter on 429, 5xx, timeouts and connection errors.
- Every reply is parsed as JSON and validated with ``jsonschema``; an invalid reply is re-asked
  (the error is told to the model) up to ``reasks`` times, then reported as a failure with the reason.
- ``response_format={"type": "json_schema", ...}`` is sent so servers that can constrain decoding do
  (the project's own server does); a server that rejects the parameter is asked again without it.
- Bounded concurrency (a thread pool of ``concurrency``), a tqdm progress bar, an on-disk sqlite cache
  (``hllm_creator.llm.cache``), and token / latency / cost accounting (``stats()``, ``log_to_mlflow``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr

from hllm_creator.config import StepConfig
from hllm_creator.llm.cache import ReplyCache, cache_key
from hllm_creator.paths import work_dir
from hllm_creator.tracking import log_metrics

log = logging.getLogger(__name__)
# one `HTTP Request: POST ...` INFO line per call from httpx (the openai client's transport) is noise
# in every step's log: our own per-run LLM statistics say what the calls did
for _name in ("httpx", "httpx2"):  # the openai client's transport (httpx2 in openai 3.x)
    logging.getLogger(_name).setLevel(logging.WARNING)

DEFAULT_MODEL_ENV = "HLLM_TEACHER_MODEL"


class LLMConfig(StepConfig):
    """Endpoint and call settings. ``api_key`` never leaves the process (excluded from dumps)."""

    base_url: str | None = Field(None, description="OpenAI-compatible base URL, e.g. "
                                 "http://127.0.0.1:8080/openai/v1 (default $OPENAI_BASE_URL). The key comes from "
                                 "$OPENAI_API_KEY.")
    model: str | None = Field(None, description="model name at the endpoint (default $HLLM_TEACHER_MODEL)")
    api_key: SecretStr | None = Field(None, exclude=True, repr=False)
    concurrency: int = Field(4, ge=1, le=256, description="requests in flight at once")
    max_retries: int = Field(5, ge=0, le=20, description="transport retries (429, 5xx, timeout)")
    reasks: int = Field(2, ge=0, le=10, description="re-asks after a reply that fails its JSON schema")
    timeout_s: float = Field(600.0, gt=0, description="per request; CPU servers under load are slow")
    backoff_initial_s: float = Field(0.5, ge=0)
    backoff_max_s: float = Field(20.0, ge=0)
    temperature: float = Field(0.0, ge=0, le=2)
    seed: int | None = 0
    response_format: bool = Field(True, description="send response_format json_schema")
    cache_path: str | None = Field(None, description="sqlite reply cache (None: no cache)")
    failure_ttl_s: float = Field(6 * 3600.0, ge=0, description="a reply that failed its schema is served from "
                                 "the cache this long, then asked again (0: always ask again)")
    cost_per_1k_prompt: float = Field(0.0, ge=0, description="price per 1k prompt tokens (0 for the embedded server)")
    cost_per_1k_completion: float = Field(0.0, ge=0, description="price per 1k completion tokens")
    progress: bool = True

    def resolved(self) -> LLMConfig:
        base = self.base_url or os.environ.get("OPENAI_BASE_URL")
        model = self.model or os.environ.get(DEFAULT_MODEL_ENV)
        if not base:
            raise ValueError("no endpoint: pass --base-url or set OPENAI_BASE_URL")
        if not model:
            raise ValueError(f"no model name: pass --model or set {DEFAULT_MODEL_ENV}")
        key = self.api_key or SecretStr(os.environ.get("OPENAI_API_KEY") or "EMPTY")
        return self.model_copy(update={"base_url": base.rstrip("/"), "model": model, "api_key": key})


@dataclass
class Request:
    """One structured call: chat messages + the JSON schema its reply must satisfy."""

    messages: list[dict]
    schema: dict
    name: str = "reply"
    max_tokens: int = 256
    tag: Any = None  # caller's id, returned untouched


@dataclass
class Result:
    tag: Any
    ok: bool
    value: dict | None = None
    error: str | None = None
    raw: str | None = None
    cached: bool = False
    attempts: int = 0  # model replies asked for (1 + re-asks)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0


class RequestRejected(RuntimeError):
    """The endpoint refused this one request (4xx other than 429): the row fails, the run goes on."""


class TransportError(RuntimeError):
    """The endpoint could not be reached / kept failing after all retries."""


@dataclass
class _Stats:
    calls: int = 0
    cache_hits: int = 0
    http_requests: int = 0
    retries: int = 0
    reasks: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    latencies: list = field(default_factory=list)


def extract_json(text: str) -> Any:
    """Parse a model reply as JSON: plain, inside ``` fences, or the first balanced {...} in it."""
    t = (text or "").strip()
    m = re.search(r"```(?:json)?\s*(.*?)```", t, re.S)
    if m:
        t = m.group(1).strip()
    try:
        return json.loads(t)
    except json.JSONDecodeError:
        pass
    start = t.find("{")
    while start != -1:
        depth, in_str, esc = 0, False, False
        for i in range(start, len(t)):
            ch = t[i]
            if in_str:
                esc = (ch == "\\") and not esc
                if ch == '"' and not esc:
                    in_str = False
                continue
            if ch == '"':
                in_str = True
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    try:
                        return json.loads(t[start:i + 1])
                    except json.JSONDecodeError:
                        break
        start = t.find("{", start + 1)
    raise ValueError(f"reply is not JSON: {text[:120]!r}")


def validate_reply(text: str, schema: dict) -> dict:
    """JSON-parse ``text`` and validate it against ``schema``; ValueError says what is wrong."""
    import jsonschema

    obj = extract_json(text)
    try:
        jsonschema.validate(obj, schema)
    except jsonschema.ValidationError as e:
        path = "/".join(str(p) for p in e.absolute_path) or "(root)"
        raise ValueError(f"reply fails the schema at {path}: {e.message[:200]}") from None
    return obj


class LLMClient:
    """Structured JSON calls against any OpenAI-compatible endpoint."""

    def __init__(self, config: LLMConfig | None = None, **overrides):
        cfg = (config or LLMConfig()).model_copy(update=overrides) if overrides else (config or LLMConfig())
        self.config = cfg.resolved()
        from openai import OpenAI

        self._client = OpenAI(base_url=self.config.base_url, api_key=self.config.api_key.get_secret_value(),
                              timeout=self.config.timeout_s, max_retries=0)
        self.cache = ReplyCache(self.config.cache_path) if self.config.cache_path else None
        self._stats = _Stats()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._use_response_format = self.config.response_format

    @property
    def model(self) -> str:
        return self.config.model

    def __repr__(self) -> str:  # never shows the key
        return f"LLMClient(base_url={self.config.base_url!r}, model={self.config.model!r})"

    # -- one call -------------------------------------------------------------------------------
    def _params(self, req: Request) -> dict:
        return {"temperature": self.config.temperature, "max_tokens": req.max_tokens, "seed": self.config.seed,
                "schema": req.schema, "reasks": self.config.reasks}

    def _chat(self, messages: list[dict], req: Request) -> tuple[str, int, int]:
        """One chat completion with transport retries; returns (text, prompt_tokens, completion_tokens)."""
        import openai
        from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

        def transient(e: BaseException) -> bool:
            if isinstance(e, (openai.RateLimitError, openai.APITimeoutError, openai.APIConnectionError,
                              openai.InternalServerError)):
                return True
            return isinstance(e, openai.APIStatusError) and e.status_code >= 500

        def before_sleep(rs) -> None:
            with self._lock:
                self._stats.retries += 1
            log.debug("retrying after %s", rs.outcome.exception())

        kwargs: dict[str, Any] = {"model": self.config.model, "messages": messages,
                                  "max_tokens": req.max_tokens, "temperature": self.config.temperature}
        if self.config.seed is not None:
            kwargs["seed"] = self.config.seed
        retrying = Retrying(retry=retry_if_exception(transient),
                            stop=stop_after_attempt(self.config.max_retries + 1),
                            wait=wait_exponential_jitter(multiplier=self.config.backoff_initial_s,
                                                         max=self.config.backoff_max_s),
                            before_sleep=before_sleep, reraise=False)
        try:
            for attempt in retrying:
                with attempt:
                    with self._lock:
                        self._stats.http_requests += 1
                    rf = ({"type": "json_schema", "json_schema": {"name": req.name, "schema": req.schema,
                                                                  "strict": True}}
                          if self._use_response_format else None)
                    try:
                        resp = self._client.chat.completions.create(
                            **kwargs, **({"response_format": rf} if rf else {}))
                    except openai.BadRequestError as e:
                        if rf and "response_format" in str(e):
                            log.warning("endpoint rejects response_format (%s); asking without it", str(e)[:120])
                            self._use_response_format = False
                            resp = self._client.chat.completions.create(**kwargs)
                        elif rf and ("unsupported_schema" in str(e) or "constrained decoder" in str(e)):
                            # the server could not enforce the schema for THIS reply: ask once more
                            # unconstrained; the reply is still validated against the schema below
                            log.warning("constrained decoding failed for one request (%s); asking it "
                                        "unconstrained", str(e)[:120])
                            resp = self._client.chat.completions.create(**kwargs)
                        else:
                            raise RequestRejected(f"HTTP 400: {str(e)[:300]}") from None
                    except openai.APIStatusError as e:
                        if e.status_code in (413, 422):  # this request is too big / malformed: a row failure
                            raise RequestRejected(f"HTTP {e.status_code}: {str(e)[:300]}") from None
                        raise
        except RetryError as e:
            exc = e.last_attempt.exception()
            raise TransportError(f"{type(exc).__name__} after {self.config.max_retries + 1} attempts: "
                                 f"{str(exc)[:200]}") from None
        text = resp.choices[0].message.content or "" if resp.choices else ""
        self._local.finish = resp.choices[0].finish_reason if resp.choices else None
        usage = resp.usage
        return text, int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0)

    def call(self, req: Request) -> Result:
        """Ask once (plus transport retries and schema re-asks); cached by (endpoint, model, messages,
        params). A successful reply is served from the cache for good, a schema failure only for
        ``failure_ttl_s`` (then it is asked again)."""

        key = cache_key(self.config.model, req.messages, self._params(req), endpoint=self.config.base_url)
        with self._lock:
            self._stats.calls += 1
        if self.cache is not None:
            hit = self.cache.get(key, max_failure_age_s=self.config.failure_ttl_s)
            if hit is not None:
                with self._lock:
                    self._stats.cache_hits += 1
                return Result(tag=req.tag, cached=True, **hit)
        messages = list(req.messages)
        res = Result(tag=req.tag, ok=False)
        t0 = time.perf_counter()
        try:
            for attempt in range(self.config.reasks + 1):
                text, pt, ct = self._chat(messages, req)
                res.attempts += 1
                res.prompt_tokens += pt
                res.completion_tokens += ct
                res.raw = text
                try:
                    res.value = validate_reply(text, req.schema)
                    res.ok, res.error = True, None
                    break
                except ValueError as e:
                    res.error = f"invalid reply after {attempt + 1} attempt(s): {e}"
                    if getattr(self._local, "finish", None) == "length":
                        res.error += f" (cut at max_tokens={req.max_tokens}; not re-asked: raise max_tokens)"
                        break
                    if attempt < self.config.reasks:
                        with self._lock:
                            self._stats.reasks += 1
                        messages = [*req.messages, {"role": "assistant", "content": text[:2000]},
                                    {"role": "user", "content": f"That reply was not valid ({e}). Reply again "
                                     f"with only a JSON object that matches this schema: "
                                     f"{json.dumps(req.schema)}"}]
        except (TransportError, RequestRejected) as e:
            res.error = f"endpoint error: {e}"
            res.latency_s = time.perf_counter() - t0
            self._account(res)
            return res  # transport failures are not cached: a re-run asks again
        res.latency_s = time.perf_counter() - t0
        self._account(res)
        if self.cache is not None:
            self.cache.put(key, self.config.model, {
                "ok": res.ok, "value": res.value, "error": res.error, "raw": res.raw, "attempts": res.attempts,
                "prompt_tokens": res.prompt_tokens, "completion_tokens": res.completion_tokens,
                "latency_s": res.latency_s})
        return res

    def _account(self, res: Result) -> None:
        with self._lock:
            s = self._stats
            s.prompt_tokens += res.prompt_tokens
            s.completion_tokens += res.completion_tokens
            s.latency_s += res.latency_s
            s.latencies.append(res.latency_s)
            if not res.ok:
                s.failures += 1

    # -- many calls -----------------------------------------------------------------------------
    def map(self, requests: list[Request], desc: str = "llm") -> list[Result]:
        """Run requests with at most ``concurrency`` in flight; results in request order."""
        from tqdm.auto import tqdm

        out: list[Result | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), desc=desc, disable=not self.config.progress, unit="call")
        hits0 = self._stats.cache_hits
        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            futs = {pool.submit(self.call, r): i for i, r in enumerate(requests)}
            from concurrent.futures import as_completed

            for f in as_completed(futs):
                out[futs[f]] = f.result()
                bar.update(1)
                bar.set_postfix(cached=self._stats.cache_hits - hits0, failed=self._stats.failures)
        bar.close()
        return out  # type: ignore[return-value]

    # -- accounting -----------------------------------------------------------------------------
    def stats(self) -> dict[str, float]:
        s = self._stats
        lat = sorted(s.latencies)
        cost = (s.prompt_tokens * self.config.cost_per_1k_prompt
                + s.completion_tokens * self.config.cost_per_1k_completion) / 1000.0
        return {
            "llm_calls": s.calls, "llm_cache_hits": s.cache_hits, "llm_http_requests": s.http_requests,
            "llm_retries": s.retries, "llm_reasks": s.reasks, "llm_failures": s.failures,
            "llm_prompt_tokens": s.prompt_tokens, "llm_completion_tokens": s.completion_tokens,
            "llm_total_tokens": s.prompt_tokens + s.completion_tokens, "llm_cost": round(cost, 6),
            "llm_latency_mean_s": (sum(lat) / len(lat)) if lat else 0.0,
            "llm_latency_p95_s": lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else 0.0,
        }

    def log_to_mlflow(self, prefix: str = "") -> None:
        log_metrics({f"{prefix}{k}": v for k, v in self.stats().items()})

    def endpoint_info(self) -> dict[str, str]:
        """What may be recorded about the endpoint (never the key)."""
        return {"base_url": self.config.base_url, "model": self.config.model}


def default_cache_path() -> str:
    """``$HLLM_STATE_DIR/llm_cache/replies.sqlite`` when set (on a cluster: the durable work PVC,
    hllm_creator_kfp.pipelines.hllm_pipeline.STATE_STEPS), else ``$HLLM_WORKDIR/llm_cache/replies.sqlite``: outside
    any step's output dir, so an atomic rewrite of the output keeps the cache, and a re-run (same
    endpoint, model, prompts, params) reuses it."""

    state = os.environ.get("HLLM_STATE_DIR")
    root = Path(state) if state else work_dir()
    return str(root / "llm_cache" / "replies.sqlite")
