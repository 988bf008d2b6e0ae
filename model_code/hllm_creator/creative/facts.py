"""What a personalized title is made of: the original title's core and short fact phrases, all
copied from the ad's own text (deterministic; no model).

- ``core_title(title)``: the original's head (brand, product, model), the first separator-delimited
  segment(s) of the title, at least 3 and at most ``max_words`` words.
- ``fact_phrases(ad)``: up to ``k`` short phrases (2-7 words) from the rest of the title, the
  selling points, the leaf category and the description, each adding a content word the core
  does not have. A personalized title is ``compose(core, phrase)``: the core plus ONE featured fact,
  which fact depending on the audience. Every word of such a title is a word of the ad.
"""

from __future__ import annotations

import re
from typing import Any

# split a text into clauses / a title into segments
_SEG = re.compile(r"\s*[,;|\[\]()]\s*|\s+[-\u2013\u2014]\s+|\s+/\s+|\s*\.\s+|\.$|\s+(?=(?:with|for|w/)\s)", re.I)
_CLAUSE = re.compile(r"\s*[,;:|\[\]()!?]\s*|\s+[-\u2013\u2014]\s+|\.(?:\s+|$)")
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[-'./][A-Za-z0-9]+)*")
STOP = frozenset("""a an and or but nor for to of in on at by with from into as is are was were be been it its
this that these those your you our we us my me i he she they them their all any each both more most other some
such no not only so than too very can will just also has have had do does up out off over under per via w
""".split())
EDGE_DROP = frozenset("a an and or but nor to of in on at by as is are was were be it its this that the with for "
                      "from into than so very also w".split())
PRONOUNS = frozenset("we our us you your i my me they their he she it its".split())
# a clause with a finite verb is a sentence, not a feature phrase ("Colors shown online are approximations")
VERBS = frozenset("is are was were be been being can could will would has have had do does did may might "
                  "should must shall expected".split())
# a phrase that opens with a subordinator is half of a sentence ("While hardness", "Used to indicate ...")
START_DROP = frozenset("while when if which that because although though thanks even due other such whether "
                       "where whose what how then used using making allows allow helps help designed ideal".split())
_URL = re.compile(r"https?://|www\.|\.com\b", re.I)


def stem(w: str) -> str:
    w = w.lower().removesuffix("'s")
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 3 and w.endswith("es") and w[-3] in "sxz":
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


def content_words(text: str) -> list[str]:
    """Stemmed, lower-cased content tokens (no stop words, at least 2 characters) in order."""
    return [stem(t) for t in _TOKEN.findall(text or "") if t.lower() not in STOP and len(t) >= 2]


def _trim(words: list[str]) -> list[str]:
    while words and words[0].lower() in EDGE_DROP - {"for", "with"}:
        words = words[1:]
    while words and words[-1].lower() in EDGE_DROP:
        words = words[:-1]
    return words


def _clean(text: str) -> str:
    return " ".join(str(text or "").replace("\u00a0", " ").split()).strip(" .,;:-|")


def _core_and_rest(title: str, min_words: int, max_words: int, max_chars: int) -> tuple[str, str]:
    t = _clean(title)
    if not t:
        raise ValueError("core_title: empty title")
    words: list[str] = []
    pos = 0
    for m in list(_SEG.finditer(t)) + [None]:
        end = m.start() if m is not None else len(t)
        words += t[pos:end].split()
        pos = m.end() if m is not None else len(t)
        if len(words) >= min_words:
            break
    words = _trim(words[:max_words]) or t.split()[:max_words]
    while len(" ".join(words)) > max_chars and len(words) > min_words:
        words = _trim(words[:-1]) or words[:-1]
    # the rest of the title starts after the last segment the core used (a cut segment's tail is
    # not a phrase of its own: "... 2 Gauge 3/8 | Inch 10 Pack")
    return " ".join(words), t[pos:]


def core_title(title: str, *, min_words: int = 3, max_words: int = 10, max_chars: int = 70) -> str:
    """The head of an ad title: its first segment(s) until ``min_words`` words, cut to ``max_words``
    words / ``max_chars`` characters at a word boundary, without a trailing connective."""
    return _core_and_rest(title, min_words, max_words, max_chars)[0]


_NEG = re.compile(r"\b(?:not|no|non|without|never|nor|none|neither)\b|n't\b", re.I)
_SENT = re.compile(r"(?<=[.!?;])\s+")


def _phrases_of(text: str, *, split_title: bool) -> list[str]:
    """Clauses of ``text``; a sentence with a negation gives none (a clause cut out of "does not
    separate, migrate or bleed" would assert the opposite)."""
    if not split_title:
        return [p for sent in _SENT.split(_clean(text)) if not _NEG.search(sent)
                for p in _phrases_of_part(sent, _CLAUSE)]
    return _phrases_of_part(text, _SEG)


def _phrases_of_part(text: str, pattern: re.Pattern) -> list[str]:
    out = []
    for part in pattern.split(_clean(text)):
        ws = _trim(_clean(part).split())
        if ws:
            out.append(" ".join(ws))
    return out


def _ok_phrase(p: str, core_cw: set[str], max_words: int, max_chars: int) -> bool:
    ws = p.split()
    if not 2 <= len(ws) <= max_words or len(p) > max_chars or _URL.search(p):
        return False
    if {w.lower() for w in ws} & (PRONOUNS | VERBS) or ws[0].lower() in START_DROP:
        return False
    cw = set(content_words(p))
    if not cw or cw <= core_cw:
        return False
    return any(c.isalpha() for c in p)


def fact_phrases(ad: Any, k: int = 4, *, max_words: int = 7, max_chars: int = 48,
                 beyond_title: bool = True) -> list[str]:
    """Up to ``k`` short fact phrases of an ad (dict / items row / ``Ad``), in the ad's own words.

    Order: the title's later segments, the selling points' clauses (``Category: X`` -> ``X``,
    ``Brand:`` left out: the core carries the brand), then the description's clauses. Phrases
    that add no content word to the core (with ``beyond_title``: to the whole original title, so a
    title featuring one is never a trim of the original), speak in the first/second person, or repeat an earlier
    phrase's content words are left out."""
    get = ad.get if isinstance(ad, dict) else (lambda key, d=None: getattr(ad, key, d))
    title = _clean(get("title"))
    core, rest = _core_and_rest(title, 3, 10, 70)
    core_cw = set(content_words(title if beyond_title else core))
    cands: list[str] = _phrases_of(rest, split_title=True)
    sps = get("selling_points")
    sps = list(sps.tolist() if hasattr(sps, "tolist") else (sps or []))
    for sp in sps:
        sp = _clean(sp)
        if sp.lower().startswith("brand:"):
            continue
        if sp.lower().startswith("category:"):
            cands.append(sp.split(":", 1)[1].strip())
            continue
        cands += _phrases_of(sp, split_title=False)
    cands += _phrases_of(get("description") or "", split_title=False)
    out: list[str] = []
    seen: list[set[str]] = []
    for p in cands:
        if not _ok_phrase(p, core_cw, max_words, max_chars):
            continue
        cw = set(content_words(p)) - core_cw
        if any(cw <= s or s <= cw for s in seen):
            continue
        seen.append(cw)
        out.append(p)
        if len(out) >= k:
            break
    return out


def compose(core: str, phrase: str) -> str:
    """``core`` + one featured fact: ``Core for X`` / ``Core with X`` when the phrase starts so,
    else ``Core - Phrase``."""
    phrase = phrase.strip()
    if phrase.split()[0].lower() in ("for", "with"):
        return f"{core} {phrase}"
    return f"{core} - {phrase[0].upper()}{phrase[1:]}"
