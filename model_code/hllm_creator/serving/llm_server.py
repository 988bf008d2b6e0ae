"""The embedded OpenAI-compatible LLM server: any HF causal LM behind a KServe ModelServer.

``LLMModel`` is a ``kserve.Model`` (v1 ``:predict`` and KServe's health/readiness routes work as for
any KServe model; ready only after the weights loaded). ``register_openai_routes`` adds
``/openai/v1/models``, ``/openai/v1/completions`` and ``/openai/v1/chat/completions`` to a FastAPI app
(KServe's own OpenAI models need vllm, absent here). ``serve`` wires both into ``kserve.ModelServer``
bound to 127.0.0.1 unless told otherwise.

Generation: requests are checked (characters first), tokenized off the event loop (chat template
for chat), checked against the token limits, and queued on the one ``serving.batching.Batcher``.
``--scheduler continuous`` (default): token-level scheduling, rows join the running batch between
decoding steps (prefilled, their KV cache merged in left-padded) and leave as soon as they finish.
``--scheduler static``: a batch runs to its longest row. Per-row settings (temperature, top_p, seed,
max_tokens, stop, ignore_eos, a JSON schema) are applied when each row's next token is chosen; an
error while choosing one row's token fails that row only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import Field
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
    check_depth,
    parse_json_body,
)
from hllm_creator.serving.batching import Batcher, QueueFull
from hllm_creator.serving.runtime import DEFAULT_DEADLINE_S, BoundModelServer, ServingError, import_kserve  # noqa: F401
from hllm_creator.serving.runtime import serve as serve_model

kserve = import_kserve()
log = logging.getLogger(__name__)
__all__ = ["BoundModelServer", "LLMModel", "LLMServerConfig", "register_openai_routes", "serve"]


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


@dataclass
class GenRow:
    """One tokenized request, ready for a batch."""

    prompt_ids: list[int]
    params: GenParams
    enforcer: JsonConstraint | None = None  # for JSON rows
    future_done: Callable[[], bool] = lambda: False  # set by the batcher: True once the request went away


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


# -- the engine: tokenizer + model + token-level scheduling -----------------------------------------

class _Live:
    """One row being decoded: its request, its tokens so far, its sampler."""

    __slots__ = ("row", "gen", "generator", "reason", "t0")

    def __init__(self, row: GenRow):
        import torch

        self.row = row
        self.gen: list[int] = []
        self.reason: str | None = None  # "eos" | "stop" | "length" once finished
        self.t0 = time.perf_counter()
        g = torch.Generator()
        seed = row.params.seed
        g.manual_seed(seed if seed is not None else random.getrandbits(63))  # int64 range checked at parse
        self.generator = g


class LLMEngine:
    """Owns the model. ``step(new_rows)`` is one scheduling step (token-level / continuous batching):
    new rows are prefilled and join the running batch, or every running row decodes one token; rows
    that finished (eos, stop string, max_tokens, an error of their own, their request gone) leave at
    once and are returned. ``generate_batch(rows)`` runs rows to completion with no one joining."""

    def __init__(self, backbone, limits: Limits, json_max_whitespace: int = 8):
        import torch

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
        # running batch: rows, their KV cache [B, heads, L, dim] per layer, attention mask [B, L],
        # next position and last token per row
        self.live: list[_Live] = []
        self.cache = None
        self.mask = torch.zeros((0, 0), dtype=torch.long)
        self.pos = torch.zeros((0,), dtype=torch.long)
        self.last = torch.zeros((0,), dtype=torch.long)
        self._tokens, self._t_log = 0, time.perf_counter()

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

    # one row's next token ---------------------------------------------------------------------------
    def _choose(self, lv: _Live, scores) -> int:
        """The row's next token from its logits: JSON mask, whitespace cap, ignore_eos, greedy or
        seeded sampling with temperature / top_p."""
        import torch

        s = scores.float()
        row, p = lv.row, lv.row.params
        if row.enforcer is not None:
            allowed = row.enforcer.enforcer.get_allowed_tokens(lv.gen)
            allowed = getattr(allowed, "allowed_tokens", allowed)
            mask = torch.full_like(s, float("-inf"))
            mask[torch.as_tensor(list(allowed), dtype=torch.long)] = 0.0
            tail = self.tokenizer.decode(lv.gen[-16:]) if lv.gen else ""
            ban = row.enforcer.whitespace_ban(len(tail) - len(tail.rstrip()))
            if len(ban):
                capped = mask.clone()
                capped[ban] = float("-inf")
                if torch.isfinite(capped).any():
                    mask = capped
            s = s + mask
        elif p.ignore_eos:
            s[self.eos_ids] = float("-inf")
        if p.temperature == 0.0:
            return int(torch.argmax(s))
        probs = torch.softmax(s / p.temperature, dim=-1)
        if p.top_p < 1.0:
            sp, idx = torch.sort(probs, descending=True)
            keep = (torch.cumsum(sp, 0) - sp) < p.top_p
            keep[0] = True
            probs = torch.zeros_like(probs).scatter_(0, idx[keep], sp[keep])
        if not bool(torch.isfinite(probs).all()) or float(probs.sum()) <= 0:
            return int(torch.argmax(s))  # degenerate distribution: greedy rather than an error
        return int(torch.multinomial(probs, 1, generator=lv.generator))

    def _advance(self, lv: _Live, tok: int) -> None:
        """Append ``tok``; mark the row finished on eos, a stop string or its max_tokens."""
        lv.gen.append(tok)
        p = lv.row.params
        if tok in self.eos_ids and (lv.row.enforcer is not None or not p.ignore_eos):
            lv.reason = "eos"
        elif p.stop and any(s in self.tokenizer.decode(lv.gen, skip_special_tokens=True) for s in p.stop):
            lv.reason = "stop"
        elif len(lv.gen) >= p.max_tokens:
            lv.reason = "length"

    def _result(self, lv: _Live) -> GenOutput | BaseException:
        r, gen = lv.row, lv.gen
        body = gen[:-1] if (gen and gen[-1] in self.eos_ids and lv.reason == "eos") else gen
        text = self.tokenizer.decode(body, skip_special_tokens=True)
        reason = "stop" if lv.reason in ("eos", "stop") else "length"
        cut = [text.find(s) for s in r.params.stop if s in text]
        if cut:
            text, reason = text[:min(cut)], "stop"
        elif r.enforcer is not None and lv.reason == "eos":
            problem = _json_problem(text, r.params.json_schema)
            if problem:  # lm-format-enforcer gave up on a construct it cannot follow (it then ends)
                return OpenAIError(f"the constrained decoder could not enforce this schema (reply was "
                                   f"{text[:200]!r}: {problem}); simplify the schema", param="response_format",
                                   code="unsupported_schema")
        return GenOutput(text=text, finish_reason=reason, prompt_tokens=len(r.prompt_ids),
                         completion_tokens=len(gen), token_ids=gen)

    def _pick(self, rows: list[_Live], logits) -> list[tuple[_Live, BaseException]]:
        """Next token of every row; a row whose choice fails finishes with its own error."""
        failed = []
        for i, lv in enumerate(rows):
            try:
                self._advance(lv, self._choose(lv, logits[i]))
            except Exception as e:
                log.warning("a row failed while choosing its next token: %s: %s", type(e).__name__, e)
                err = (OpenAIError(f"constrained decoding failed for this schema: {e}", param="response_format",
                                   code="unsupported_schema") if lv.row.enforcer is not None else e)
                failed.append((lv, err))
                lv.reason = "error"
        return failed

    # the running batch ------------------------------------------------------------------------------
    def active(self) -> int:
        return len(self.live)

    def _layers(self, cache):
        from transformers.cache_utils import DynamicLayer

        layers = cache.layers
        if not all(type(la) is DynamicLayer for la in layers):
            raise RuntimeError("token-level scheduling needs a plain DynamicCache (no sliding-window layers)")
        return layers

    def _keep(self, idx: list[int]) -> None:
        """Keep only rows ``idx`` of the running batch; drop cache columns no row needs any more."""
        import torch

        self.live = [self.live[i] for i in idx]
        if not self.live:
            self.cache = None
            self.mask = torch.zeros((0, 0), dtype=torch.long)
            self.pos = self.last = torch.zeros((0,), dtype=torch.long)
            return
        t = torch.as_tensor(idx, dtype=torch.long)
        self.mask, self.pos, self.last = self.mask[t], self.pos[t], self.last[t]
        used = self.mask.sum(0).nonzero()
        lead = int(used[0]) if len(used) else 0  # leading columns that are padding for every row
        self.mask = self.mask[:, lead:]
        for la in self._layers(self.cache):
            la.keys, la.values = la.keys[t, :, lead:], la.values[t, :, lead:]

    def _prefill(self, rows: list[_Live]) -> list[tuple[_Live, Any]]:
        """Prefill new rows (left-padded), choose their first token, merge them into the batch."""
        import torch
        import torch.nn.functional as F
        from transformers import DynamicCache

        width = max(len(lv.row.prompt_ids) for lv in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, lv in enumerate(rows):
            n = len(lv.row.prompt_ids)
            ids[i, width - n:] = torch.tensor(lv.row.prompt_ids, dtype=torch.long)
            mask[i, width - n:] = 1
        cache = DynamicCache(config=self.model.config)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                         past_key_values=cache, use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        failed = self._pick(rows, out.logits[:, -1, :])
        last = torch.tensor([lv.gen[-1] if lv.gen else self.pad_id for lv in rows], dtype=torch.long)
        pos = mask.sum(-1)
        if self.cache is None:
            self.cache, self.mask, self.pos, self.last = cache, mask, pos, last
        else:  # left-pad the shorter side, then stack the rows
            L, W = self.mask.shape[1], width
            T = max(L, W)
            for a, b in zip(self._layers(self.cache), self._layers(cache)):
                a.keys = torch.cat([F.pad(a.keys, (0, 0, T - L, 0)), F.pad(b.keys, (0, 0, T - W, 0))])
                a.values = torch.cat([F.pad(a.values, (0, 0, T - L, 0)), F.pad(b.values, (0, 0, T - W, 0))])
            self.mask = torch.cat([F.pad(self.mask, (T - L, 0)), F.pad(mask, (T - W, 0))])
            self.pos, self.last = torch.cat([self.pos, pos]), torch.cat([self.last, last])
        self.live += rows
        return failed

    def _decode(self) -> list[tuple[_Live, Any]]:
        """One token for every running row."""
        import torch

        mask = torch.cat([self.mask, torch.ones((len(self.live), 1), dtype=torch.long)], dim=1)
        out = self.model(input_ids=self.last[:, None], attention_mask=mask, position_ids=self.pos[:, None],
                         past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        self.cache, self.mask, self.pos = out.past_key_values, mask, self.pos + 1
        failed = self._pick(self.live, out.logits[:, -1, :])
        self.last = torch.tensor([lv.gen[-1] if lv.gen else self.pad_id for lv in self.live], dtype=torch.long)
        return failed

    def step(self, new_rows: list[GenRow]) -> list[tuple[GenRow, Any]]:
        """One scheduling step; returns the rows that finished, with a GenOutput or an exception."""
        import torch

        done: list[tuple[GenRow, Any]] = []
        gone = [i for i, lv in enumerate(self.live) if lv.row.future_done()]
        if gone:  # requests that went away (client disconnected, deadline): their rows leave now
            done += [(self.live[i].row, asyncio.CancelledError()) for i in gone]
            self._keep([i for i in range(len(self.live)) if i not in set(gone)])
        fresh = []
        for r in new_rows:
            try:
                fresh.append(_Live(r))
            except Exception as e:
                done.append((r, e))
        with torch.inference_mode():
            if fresh:
                try:
                    failed = self._prefill(fresh)
                except Exception as e:  # the new rows fail; the running batch is untouched
                    log.exception("prefill of %d rows failed", len(fresh))
                    return done + [(lv.row, e) for lv in fresh]
            elif self.live:
                failed = self._decode()
            else:
                return done
        errors = {id(lv): e for lv, e in failed}
        keep = []
        for i, lv in enumerate(self.live):
            if lv.reason is None:
                keep.append(i)
            elif id(lv) in errors:
                done.append((lv.row, errors[id(lv)]))
            else:
                try:
                    done.append((lv.row, self._result(lv)))
                except Exception as e:
                    done.append((lv.row, e))
        self._tokens += len(self.live) if not fresh else len(fresh)
        if len(keep) != len(self.live):
            self._keep(keep)
        now = time.perf_counter()
        if now - self._t_log > 10 or (not self.live and self._tokens):
            log.info("decoding: %d rows running, %d tokens in %.1f s (%.1f tokens/s)", len(self.live),
                     self._tokens, now - self._t_log, self._tokens / max(now - self._t_log, 1e-9))
            self._tokens, self._t_log = 0, now
        return done

    def abort_all(self) -> list[GenRow]:
        """After a failed step: every running row leaves (the batcher fails them)."""
        rows = [lv.row for lv in self.live]
        self._keep([])
        return rows

    def generate_batch(self, rows: list[GenRow]) -> list[GenOutput | BaseException]:
        """Run ``rows`` to completion together (static batching; no row joins midway)."""
        res: dict[int, Any] = {}
        pending = list(rows)
        while pending or self.live:
            for r, out in self.step(pending):
                res[id(r)] = out
            pending = []
        return [res[id(r)] for r in rows]


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
        self.batcher: Batcher | None = None
        self.created = int(time.time())
        self._json_warmup: threading.Thread | None = None
        # parsing, chat templates, tokenization, JSON-schema compilation: off the event loop and off the
        # decoding thread; two threads, so a first JSON request building the token table (about 9 s)
        # does not hold up the others
        self.prep = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="llm-prep")

    def load(self) -> bool:
        import torch

        from hllm_creator.llm.backbone import load_causal_lm

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
            from hllm_creator.serving.runtime import REQUEST_ID

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
