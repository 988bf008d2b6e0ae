"""The LLM server's engine: tokenizer + model + token-level scheduling.

``LLMEngine.step(new_rows)`` is one scheduling step (``--scheduler continuous``): rows join the running
batch between decoding steps (prefilled, their KV cache merged in left-padded) and leave as soon as
they finish; ``generate_batch(rows)`` (``--scheduler static``) runs a batch to its longest row.
Per-row settings (temperature, top_p, seed, max_tokens, stop, ignore_eos, a JSON schema) are applied
when each row's next token is chosen; an error while choosing one row's token fails that row only.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hllm_creator.serving._openai_protocol import GenParams, Limits, OpenAIError, ParsedRequest
from hllm_creator.serving.json_constraint import (
    JsonConstraint,
    build_enforcer_tokenizer_data,
    json_constraint,
    json_problem,
)

log = logging.getLogger(__name__)


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
            except Exception as e:  # noqa: BLE001 - a template that rejects this conversation (role order, ...)
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

    def make_enforcer(self, params: GenParams) -> JsonConstraint | None:
        if params.json_mode is None:
            return None
        tokdata, ws_only = self.enforcer_tokenizer_data()
        return json_constraint(params.json_schema, tokdata, ws_only, self.json_max_whitespace)

    # one row's next token ---------------------------------------------------------------------------
    def _choose(self, lv: _Live, scores) -> int:
        """The row's next token from its logits: JSON mask, whitespace cap, ignore_eos, greedy or
        seeded sampling with temperature / top_p."""
        import torch

        s = scores.float()
        row, p = lv.row, lv.row.params
        if row.enforcer is not None:
            s = s + row.enforcer.mask(s, lv.gen, self.tokenizer)
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
            problem = json_problem(text, r.params.json_schema)
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
            except Exception as e:  # noqa: BLE001 - the row fails alone, the batch goes on
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
            except Exception as e:  # noqa: BLE001 - the row fails alone, the batch goes on
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
                except Exception as e:  # noqa: BLE001 - the row fails alone, the batch goes on
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


def resolve_dtype(dtype: str) -> str:
    """``auto`` -> ``bfloat16`` on a CPU with native bf16 matmuls (amx_bf16 / avx512_bf16), else float32."""
    if dtype != "auto":
        return dtype
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return "bfloat16" if ("amx_bf16" in flags or "avx512_bf16" in flags) else "float32"
