"""What a personalized title is made of: the original title's core and short fact phrases, all
copied from the ad's own text (deterministic; no model).

- ``core_title(title)``: the original's head (brand, product, model), the first separator-delimited
  segment(s) of the title, at least 3 and at most ``max_words`` words.
- ``fact_phrases(ad)``: up to ``k`` short phrases (2-7 words) from the rest of the title, the
  selling points, the leaf category and the description, each adding a content word the core
  does not have; whole clauses first, then (where they leave room) the pieces of long clauses
  after a relative pronoun or in a short list ("which has good resistance to acetone" -> "good
  resistance to acetone"), so fewer ads have a single fact.
  A personalized title is ``compose(core, phrase)``: the core plus ONE featured fact,
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
# what a list before it does not come with: the whole sentence says nothing the product has
_EXCLUDED = re.compile(r"\b(?:separately|included|excluded|includes?|comes?|ships?)\b", re.I)
# a negation after one of these in its clause is the clause's own ("material that does not require")
_LOCAL = re.compile(r"\b(?:that|which|who|whose|where|when|if|it|they|this)\b", re.I)
_SENT = re.compile(r"(?<=[.!?;])\s+")
_SEPARATELY = re.compile(r"\bseparately\b", re.I)
# a safety warning's words are no selling point ("birth defects or other reproductive harm")
_WARNING = re.compile(r"\b(?:warning|cancer|reproductive|harm|hazard|poison|fatal|prop(?:osition)?\s*65)\b", re.I)
# a piece that opens with one of these keeps what follows ("has good resistance" -> "good resistance")
LEAD_VERBS = frozenset("is are has have features feature offers offer provides provide contains contain uses use "
                       "comes come".split())


def _negated_tail(clauses: list[str]) -> int:
    """Index of the first clause of a sentence from which nothing is a fact: the first clause with a
    negation. A negation that may reach back over the earlier clauses (one without a relative
    pronoun or subject before it: "Case, charger: not included") voids the whole sentence (0)."""
    for i, c in enumerate(clauses):
        m = _NEG.search(c)
        if m is None:
            continue
        if _EXCLUDED.search(c) or not _LOCAL.search(c[:m.start()]):
            return 0
        return i
    return len(clauses)


_REL = re.compile(r"(?:^|\s+)(?:which|that|who|whose)\s+", re.I)
_AND = re.compile(r"\s+(?:and|plus|including|such as|as well as)\s+", re.I)
# "repeats the process", "improved the quality": a verb before its object is no feature
_VERB_OBJ = re.compile(r"\b[a-z]+(?:[^s]s|ed)\s+(?:the|a|an|its|their|this|these|any|all)\b", re.I)
MAX_AND_PIECE = 4


def _pieces(clause: str) -> list[str]:
    """The pieces of a clause after its relative pronouns and coordinations, each without a leading
    "is / has / features ..." ("made of polyethylene, which has good resistance to acetone" ->
    "good resistance to acetone"; "enhances performance and long-term stability" -> "long-term
    stability"). The head before the first split is left out (it carries the sentence's subject
    and verb), as is a piece after a coordination of more than ``MAX_AND_PIECE`` words or of two
    adjectives ("a real and rewarding reality") or one with a verb before its object: short list
    items only."""
    out = []
    for k, rel in enumerate(_REL.split(clause)):
        parts = _AND.split(rel)
        for j, piece in enumerate(parts):
            if k == 0 and j == 0:
                continue
            left = parts[j - 1].split() if j else []
            if len(left) >= 2 and left[-2].lower() in ("a", "an", "the"):
                continue  # "a real and rewarding reality": the coordination is of adjectives
            ws = piece.split()
            while ws and ws[0].lower() in LEAD_VERBS:
                ws = ws[1:]
            ws = _trim(ws)
            if not ws or (j > 0 and len(ws) > MAX_AND_PIECE) or _VERB_OBJ.search(" ".join(ws)):
                continue
            out.append(" ".join(ws))
    return out


def _phrases_of(text: str, *, split_title: bool, pieces: bool = False) -> list[str]:
    """Clauses of ``text``; a sentence with a negation gives none (a clause cut out of "does not
    separate, migrate or bleed" would assert the opposite), nor does a "sold separately" sentence
    or a safety warning ("... cancer and birth defects"). ``pieces``: instead, what the clauses
    hold beyond that: the ``_pieces`` of every clause, and the clauses of a negated sentence before
    its negated clause where the negation is the clause's own (``_negated_tail``)."""
    if split_title:
        return [] if pieces else _phrases_of_part(text, _SEG)
    out = []
    for sent in _SENT.split(_clean(text)):
        if _SEPARATELY.search(sent) or _WARNING.search(sent):
            continue
        clauses = _phrases_of_part(sent, _CLAUSE)
        if not pieces:
            out += [] if _NEG.search(sent) else clauses
            continue
        keep = clauses[:_negated_tail(clauses)]
        if _NEG.search(sent):
            out += keep
        for c in keep:
            out += _pieces(c)
    return out


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
    sps = get("selling_points")
    sps = [_clean(sp) for sp in (sps.tolist() if hasattr(sps, "tolist") else (sps or []))]
    sps = [sp for sp in sps if not sp.lower().startswith("brand:")]
    sentences = [sp for sp in sps if not sp.lower().startswith("category:")] + [get("description") or ""]
    cands: list[str] = _phrases_of(rest, split_title=True)
    for sp in sps:
        if sp.lower().startswith("category:"):
            cands.append(sp.split(":", 1)[1].strip())
        else:
            cands += _phrases_of(sp, split_title=False)
    cands += _phrases_of(sentences[-1], split_title=False)  # the description
    # second pass, only where the whole clauses leave room: pieces of long clauses
    cands += [p for t in sentences for p in _phrases_of(t, split_title=False, pieces=True)]
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
