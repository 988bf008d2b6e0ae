"""The Creative LLM's prompt, one template for teacher, training, generation and serving.

``prompt1`` + [user slot] + ``prompt2`` (+ response in training), in the ChatML frame of SmolLM2 /
Qwen instruct models. ``prompt2`` carries the ad: what a personalized title keeps of its original
(``creative.facts.base_and_facts``: the whole original within the title budget) and its numbered fact
phrases (the choices a personalized title adds one of), all cut from the ad's own text. Every ad field is cut to a
token budget BEFORE framing, so the frame's closing tail (``<|im_end|>`` + the assistant header)
is always there, whatever the ad's length (tested over every bundled ad).

``version="v1"`` renders the first template (``prompts/creative_v1.txt``) for model dirs trained
with it; ``frame`` wraps halves that come without the chat frame (reference-schema parquets, ``v1``
model dirs). The frame is saved into ``hllm_config.json`` (``PROMPT2`` names what the model reads
after the user slot).
"""

from __future__ import annotations

import re
from typing import Any

from hllm_creator.creative.facts import base_and_facts, core_title, fact_phrases
from hllm_creator.prompts import PromptError, fill, load_template, selling_points_text, untrusted

VERSION = "v2"
SYSTEM = "Write a short ad title for this shopper: the product plus the fact they care about."
CHAT_OPEN = "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n"
CHAT_CLOSE = "<|im_end|>\n<|im_start|>assistant\n"
RESPONSE_END = "<|im_end|>"
PROMPT1 = CHAT_OPEN.format(system=SYSTEM) + "Shopper:"
PROMPT2 = "{ad: product core, numbered facts, original title}" + CHAT_CLOSE
DESC_CHARS = 300  # v1 only: the description's character budget
# token budgets per field (with a tokenizer) and their character stand-ins (without one)
# (the base: the title budget of 150 characters is about 40 SmolLM2 tokens)
FACT_TOKENS, CORE_TOKENS = 16, 40
CHARS_PER_TOKEN = 4
N_FACTS = 4
MAX_PROMPT2_TOKENS = CORE_TOKENS + N_FACTS * (FACT_TOKENS + 3) + 24


def cut(text: str, n_tokens: int, tokenizer=None) -> str:
    """``text`` cut to at most ``n_tokens`` tokens (``tokenizer``) or ``n_tokens * 4`` characters,
    at a word boundary."""
    text = " ".join(str(text or "").split())
    if tokenizer is None:
        lim = n_tokens * CHARS_PER_TOKEN
        if len(text) <= lim:
            return text
        return text[:lim].rsplit(" ", 1)[0] if " " in text[:lim] else text[:lim]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= n_tokens:
        return text
    out = tokenizer.decode(ids[:n_tokens])
    return out.rsplit(" ", 1)[0] if " " in out else out


def ad_fields(ad: Any) -> dict:
    """title / description / selling_points / brand / categories of a dict, items row or ``Ad``."""
    get = ad.get if isinstance(ad, dict) else (lambda k, d=None: getattr(ad, k, d))
    title = get("title")
    if not title or not str(title).strip():
        raise ValueError(f"ad has no title; got {ad!r:.120}")
    sp = get("selling_points")
    cats = get("categories")
    return {"title": str(title), "description": get("description") or "",
            "selling_points": list(sp.tolist() if hasattr(sp, "tolist") else (sp or [])),
            "brand": get("brand") or None,
            "categories": list(cats.tolist() if hasattr(cats, "tolist") else (cats or []))}


def creative_prompts(ad: Any, tokenizer=None, *, facts: list[str] | None = None, version: str = VERSION,
                     desc_chars: int = DESC_CHARS) -> tuple[str, str]:
    """``(prompt1, prompt2)`` for an ad ``{title, description?, selling_points?}`` (dict, Ad or items
    row), framed as a ChatML turn; ``facts`` default to ``fact_phrases(ad)``. ``version="v1"`` keeps
    the first template for model dirs trained with it."""
    if version == "v1":
        return _v1_prompts(ad, desc_chars)
    a = ad_fields(ad)
    facts = fact_phrases(a, N_FACTS) if facts is None else facts[:N_FACTS]
    # the base and the facts the compositions use (``compositions``: the facts that fit beside the kept
    # original); an ad with none (its original alone fills the budget) lists its facts under its core
    base, fitting = base_and_facts(a["title"], facts)
    base, facts = (base, fitting) if base is not None else (core_title(a["title"]), facts)
    core = cut(untrusted(base), CORE_TOKENS, tokenizer)
    lines = [f"\nProduct: {core}", "Facts:"]
    lines += [f"{i + 1}. {cut(untrusted(f), FACT_TOKENS, tokenizer)}" for i, f in enumerate(facts)] or ["1. -"]
    return PROMPT1, "\n".join(lines) + "\n" + CHAT_CLOSE


def frame(prompt1: str, prompt2: str) -> tuple[str, str]:
    """Wrap the halves in the chat turn (idempotent: framed prompts are left alone)."""
    if not prompt1.startswith("<|im_start|>"):
        prompt1 = CHAT_OPEN.format(system=SYSTEM) + prompt1
    if not prompt2.endswith(CHAT_CLOSE):
        prompt2 = prompt2.rstrip() + CHAT_CLOSE
    return prompt1, prompt2


def _v1_prompts(ad: Any, desc_chars: int) -> tuple[str, str]:
    """The first template's halves (``prompt1`` before the user slot, ``prompt2`` after it: original
    title, description, selling points), framed."""
    get = ad.get if isinstance(ad, dict) else (lambda k, d=None: getattr(ad, k, d))
    try:
        title = get("title")
        if not title or not str(title).strip():
            raise PromptError("ad has no title")
        t = load_template("creative", "v1")
        values = {"title": untrusted(title), "description": untrusted(get("description", ""), desc_chars),
                  "selling_points": selling_points_text(get("selling_points", []))}
        return frame(fill(t["prompt1"], values), "\n" + fill(t["prompt2"], values))
    except PromptError as e:
        raise ValueError(f"{e}; got {ad!r:.120}") from None


_FACT_LINE = re.compile(r"^(\d+)\. (.+)$")


def prompt_facts(prompt2: str) -> list[str]:
    """The numbered fact phrases a framed ``prompt2`` lists, in order, as the Creative LLM reads them
    (after the cut); ``[]`` for a prompt without a ``Facts:`` block (v1 model dirs, the placeholder
    ``1. -``). The fact-copy head (``HLLMCreator.fact_copy_bias``) points at these."""
    text = str(prompt2 or "")
    if CHAT_CLOSE in text:
        text = text[:text.rindex(CHAT_CLOSE)]
    lines = text.split("\n")
    try:
        start = lines.index("Facts:") + 1
    except ValueError:
        return []
    out = []
    for line in lines[start:]:
        m = _FACT_LINE.match(line.strip())
        if not m or int(m.group(1)) != len(out) + 1:
            break
        if m.group(2).strip() != "-":
            out.append(m.group(2).strip())
    return out
