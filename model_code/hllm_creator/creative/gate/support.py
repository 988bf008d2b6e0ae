"""What the gate reads of an ad: normalized text, and the ad's own sentences without the ones that
speak to a model (prompt injection), so an instruction hidden in a description never supports a title."""

from __future__ import annotations

import re

from hllm_creator.creative.ad import Ad
from hllm_creator.creative.text import normalize_text

_GROUND_MAP = str.maketrans({"\u00d7": " x ", "\u00b0": " deg "})
MARKUP = re.compile(r"</?\s*[a-z_]{1,20}\s*>|<\|[^|>]{0,40}\|>", re.I)


def normalize(text: str) -> str:
    """``normalize_text`` (NFKC, format characters removed, look-alikes folded, straight quotes and
    dashes), markup/delimiter tags removed, lowercase, single spaces."""
    t = normalize_text(text or "").translate(_GROUND_MAP)
    t = MARKUP.sub(" ", t)
    return " ".join(t.lower().split())


# sentences that speak to a model rather than describe a product: never count as support
_INJECTION = [
    re.compile(r"\b(ignore|disregard|forget|override|bypass)\b.{0,60}\b(instruction|instructions|rule|rules|"
               r"prompt|above|previous|prior|guideline|guidelines|system)\b", re.I),
    re.compile(r"\b(system|assistant|user)\s*:", re.I),
    re.compile(r"\byou (must|should|have to|are required to)\s+(write|say|output|print|respond|reply|"
               r"include|add|use|generate|call|answer|return|put)\b", re.I),
    # "you will use less nails" is product copy; "you will write/output ..." is not
    re.compile(r"\byou will\s+(write|say|output|print|respond|reply|generate|answer|return)\b", re.I),
    re.compile(r"\b(write|output|print|respond with|reply with|generate|return|answer|put|include|add|use)\b"
               r".{0,40}\b(in|as|into|to)?\s*(the|your|a)?\s*(title|headline|output|response|answer|reply)\b",
               re.I),
    re.compile(r"\b(new|updated|real) instructions?\b|\bprompt injection\b|\bjailbreak\b|\bas an ai\b", re.I),
    re.compile(r"<\s*/?\s*(ad|history|title|system|instructions?)\s*>|<\|", re.I),
]
_SENT_SPLIT = re.compile(r"(?<=[.!?;])\s+|\n+")
# field labels the data adapter puts in selling points ("Brand: X", "Category: Y"): the label is no fact
_FIELD_LABEL = re.compile(r"^\s*(?:brand|category|categories)\s*:\s*", re.I)


def is_instruction(sentence: str) -> bool:
    """True when a sentence of ad text reads as an instruction to a model (prompt injection).
    Runs on the normalized text: ``ign\\u00adore previous instructions`` is an instruction."""
    s = normalize_text(sentence or "")
    return any(p.search(s) for p in _INJECTION)


def support_text(ad: Ad) -> tuple[str, list[str]]:
    """(normalized support text, dropped instruction-like sentences) for an ad: its title, the
    sentences of its description and selling points that are not instructions, its categories and brand."""
    parts: list[str] = [ad.title]
    dropped: list[str] = []
    for block in [ad.description, *ad.selling_points]:
        block = _FIELD_LABEL.sub("", normalize_text(block or ""))
        for sent in _SENT_SPLIT.split(block):
            if not sent.strip():
                continue
            if is_instruction(sent):
                dropped.append(sent.strip())
            else:
                parts.append(sent)
    parts.extend(c for c in ad.categories if c)
    if ad.brand:
        parts.append(ad.brand)
    return normalize(" . ".join(parts)), dropped

