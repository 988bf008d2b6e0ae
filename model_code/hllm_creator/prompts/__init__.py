"""Versioned prompt templates (files beside this module) and their one renderer: the teacher's
chat prompts (rewrite, judge) and the Creative LLM's first template (``creative.prompts``, v1).

A template file ``<name>_<version>.txt`` has sections ``### system`` / ``### user`` (chat prompts) or
``### prompt1`` / ``### prompt2`` (the Creative LLM's two halves). ``{{field}}`` placeholders are
filled in ONE pass, so text that itself contains ``{{...}}`` is never expanded again. Untrusted text
(ad text, history titles, model output) goes through ``untrusted()``: tag-like delimiters
(``<ad>``, ``</history>``, ``<|im_start|>``) are stripped so it cannot close or open a block.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

PROMPT_DIR = Path(__file__).resolve().parent
DEFAULT_VERSION = "v1"
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_TAG = re.compile(r"<\s*/?\s*[A-Za-z_][\w-]{0,30}\s*>|<\|[^|>]{0,40}\|>|<\||\|>")


class PromptError(ValueError):
    pass


@functools.lru_cache(maxsize=64)
def load_template(name: str, version: str = DEFAULT_VERSION) -> dict[str, str]:
    path = PROMPT_DIR / f"{name}_{version}.txt"
    if not path.exists():
        have = sorted(p.stem for p in PROMPT_DIR.glob("*.txt"))
        raise PromptError(f"no prompt template {path.name} (have: {', '.join(have)})")
    sections: dict[str, str] = {}
    current = None
    for line in path.read_text().splitlines(keepends=True):
        m = re.match(r"^### (\w+)\s*$", line)
        if m:
            current = m.group(1)
            sections[current] = ""
        elif current is not None:
            sections[current] += line
    if not sections:
        raise PromptError(f"{path} has no '### section' headers")
    return {k: v.strip("\n") for k, v in sections.items()}


def untrusted(text: Any, max_chars: int | None = None) -> str:
    """Untrusted text made safe to place inside a delimited block: delimiters stripped, one line."""
    s = "" if text is None else str(text)
    s = _TAG.sub(" ", s)
    s = " ".join(s.split())
    if max_chars is not None and len(s) > max_chars:
        s = s[:max_chars].rstrip() + "..."
    return s


def fill(template: str, values: dict[str, Any]) -> str:
    def sub(m: re.Match) -> str:
        key = m.group(1)
        if key not in values:
            raise PromptError(f"template needs {{{{{key}}}}}, not given (have {sorted(values)})")
        return str(values[key])

    return _PLACEHOLDER.sub(sub, template)


def render_chat(name: str, values: dict[str, Any], version: str = DEFAULT_VERSION) -> list[dict]:
    """Chat messages for template ``name``; ``values`` must already be made safe (``untrusted``)."""
    t = load_template(name, version)
    msgs = []
    if "system" in t:
        msgs.append({"role": "system", "content": fill(t["system"], values)})
    msgs.append({"role": "user", "content": fill(t["user"], values)})
    return msgs


def history_block(titles: list[str], max_chars: int = 160) -> str:
    return "\n".join(f"- {untrusted(t, max_chars)}" for t in titles) or "- (no history)"


def selling_points_text(points: Any, max_chars: int = 160) -> str:
    if points is None:
        return ""
    if hasattr(points, "tolist"):
        points = points.tolist()
    return "; ".join(untrusted(p, max_chars) for p in points if p)
