"""Names: model numbers and codes, well-known brands, mixed-case names and acronyms that the ad does not
have; the catalog's other brands and the names of a user's history (``known_names``); the catalog's
distinctive brands (``catalog_names``) and the names of some titles (``names_from_titles``)."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from hllm_creator.creative.gate.adfacts import AdFacts, compact
from hllm_creator.creative.gate.numbers import UNITS
from hllm_creator.creative.gate.support import normalize
from hllm_creator.creative.text import normalize_text
from hllm_creator.creative.words import NAME_STOP, WORD, stem

# well-known brands / products an LLM likes to drop in (the catalog's brands come via known_names)
KNOWN_NAMES = frozenset("""
apple iphone ipad ipod macbook airpods imac samsung galaxy amazon alexa kindle google pixel android
sony playstation ps5 ps4 xbox microsoft nintendo nike adidas tesla dell lenovo asus acer
bosch dewalt makita milwaukee ryobi stanley 3m gopro canon nikon fitbit garmin
netflix disney lego starbucks coca-cola pepsi walmart costco ebay facebook instagram tiktok
youtube twitter whatsapp spotify bluetooth wifi wi-fi thunderbolt nvidia intel amd arduino
""".split())

_ACRONYM_OK = frozenset("diy new hot top pro for and the you your with all ok".split())


def names_from_titles(titles: Iterable[str], common: Iterable[str] = ()) -> set[str]:
    """Distinctive name-like words of some titles (e.g. the user's history): capitalized or
    mixed-case words that are not stopwords or ``common`` words. Pass to ``known_names`` so a
    title that borrows a name from another item is caught."""
    common = {c.lower() for c in common}
    out: set[str] = set()
    for t in titles:
        for tok in WORD.findall(normalize_text(t or "")):
            low = tok.lower()
            if len(low) < 3 or low in NAME_STOP or low in common or low.isdigit():
                continue
            if any(c.isupper() for c in tok[1:]) or (tok[0].isupper() and not tok.isupper()):
                out.add(low)
    return out


def _name_reason(tok: str) -> str | None:
    """Why a word that the ad does not have looks like a fact (code, name, acronym), else None."""
    low = tok.lower()
    has_digit, has_alpha = any(c.isdigit() for c in tok), any(c.isalpha() for c in tok)
    if has_digit and has_alpha:
        # "1.75mm"-style number+unit tokens and ordinals are checked as numbers
        if re.fullmatch(r"\d+(?:\.\d+)?[a-z%]+", low) and UNITS.get(re.sub(r"^[\d.]+", "", low)):
            return None
        if re.fullmatch(r"\d+(?:st|nd|rd|th|s)", low):
            return None
        return f"model number / code '{tok}' is not in the ad"
    if low in KNOWN_NAMES or stem(low, keep_us_is=False) in KNOWN_NAMES:
        return f"brand/product name '{tok}' is not in the ad"
    if has_alpha and any(c.isupper() for c in tok[1:]) and any(c.islower() for c in tok):
        return f"name '{tok}' is not in the ad"
    if tok.isupper() and 2 <= len(tok) <= 5 and tok.isalpha() and low not in _ACRONYM_OK \
            and low not in NAME_STOP and low not in UNITS:
        return f"acronym '{tok}' is not in the ad"
    return None


@functools.lru_cache(maxsize=65536)
def _name_key(name: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", normalize(name or "")))


@functools.lru_cache(maxsize=64)
def _name_index(names: frozenset) -> dict[str, tuple[str, ...]]:
    """known_names -> {first word: (normalized names starting with it)} (cached per distinct set)."""
    idx: dict[str, list[str]] = {}
    for n in names:
        key = _name_key(n) if isinstance(n, str) else ""
        if len(key) >= 2:
            idx.setdefault(key.split(" ", 1)[0], []).append(key)
    return {k: tuple(sorted(set(v))) for k, v in idx.items()}


def catalog_names(items, min_len: int = 3, generic_share: float = 0.005) -> set[str]:
    """Brand names of a catalog (``items`` DataFrame) that are distinctive enough to check:
    a brand that occurs as a plain word in more than ``generic_share`` of other brands' titles
    (e.g. "Small Parts") is generic and left out."""
    titles = [" " + " ".join(re.findall(r"[a-z0-9]+", normalize(t))) + " " for t in items["title"].tolist()]
    item_brands = [normalize(b) if isinstance(b, str) else "" for b in items["brand"].tolist()]
    out = set()
    for b in set(item_brands):
        key = " ".join(re.findall(r"[a-z0-9]+", b))
        if len(key) < min_len or key in NAME_STOP or key.replace(" ", "").isdigit():
            continue
        needle = f" {key} "
        other = sum(1 for t, ib in zip(titles, item_brands) if ib != b and needle in t)
        if other <= generic_share * len(titles):
            out.add(b)
    return out



def name_reasons(raw: str, facts: AdFacts, claimed: set[str], flagged: set[str]) -> list[str]:
    """Codes, well-known names, mixed-case names and acronyms of the title (``raw``: normalized, case
    kept) that the ad does not have, word by word and by the parts of a hyphenated word (a word of an
    unbacked claim, ``claimed``, is not reported again); the reported words go to ``flagged``."""
    reasons = []
    seen: set[str] = set()
    for tok in WORD.findall(raw):
        low = tok.lower()
        if low in seen:
            continue
        seen.add(low)
        in_src = stem(low, keep_us_is=False) in facts.words or low in facts.words or (
            len(compact(low)) >= 3 and compact(low) in facts.compact and not low.isalpha())
        if in_src:
            continue
        parts = [p for p in re.split(r"[-']", tok) if p] or [tok]
        for part in parts:
            plow = part.lower()
            if stem(plow, keep_us_is=False) in facts.words or plow in facts.words or plow in claimed:
                continue
            reason = _name_reason(part)
            if reason:
                reasons.append(reason)
                flagged.add(plow)
    return reasons


def known_name_reasons(t: str, src: str, known_names: Iterable[str] | None, flagged: set[str]) -> list[str]:
    """Names of ``known_names`` (catalog brands, history names), matched as phrases of the normalized
    title ``t``, that the ad's text ``src`` lacks; their words go to ``flagged``."""
    reasons: list[str] = []
    if not known_names:
        return reasons
    t_toks = re.findall(r"[a-z0-9]+", t)
    names = known_names if isinstance(known_names, frozenset) else frozenset(known_names)
    idx = _name_index(names)
    t_tokens = " " + " ".join(t_toks) + " "
    s_tokens = None
    for w in dict.fromkeys(t_toks):
        for name in idx.get(w, ()):
            if f" {name} " in t_tokens:
                if s_tokens is None:
                    s_tokens = " " + " ".join(re.findall(r"[a-z0-9]+", src)) + " "
                if f" {name} " not in s_tokens:
                    reasons.append(f"name '{name}' is not in the ad (another catalog brand or name)")
                    flagged.update(name.split())
    return reasons
