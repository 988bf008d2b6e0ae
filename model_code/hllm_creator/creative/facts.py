"""What a personalized title is made of: the original title's core and short fact phrases, all
copied from the ad's own text (deterministic; no model).

- ``core_title(title)``: the original's head (brand, product, model), the first separator-delimited
  segment(s) of the title, at least 3 and at most ``max_words`` words.
- ``fact_phrases(ad)``: up to ``k`` short phrases (2-7 words) from the rest of the title, the
  selling points, the leaf category and the description, each adding a content word the core
  does not have; whole clauses first, then (where they leave room) the pieces of long clauses
  after a relative pronoun or in a short list ("which has good resistance to acetone" -> "good
  resistance to acetone"), so fewer ads have a single fact.
- ``compositions(ad)``: a personalized title is ``compose(base, phrase)``: the original title
  (``base_and_facts``: whole where a fact fits beside it within the title budget ``TITLE_MAX_CHARS``,
  else without only what carries least: repeated words, pack counts, colours; the facts that do not
  fit are left out; only an original over the budget by itself loses its last segments) plus ONE
  featured fact, which fact depending on the audience. Every word of such a title is a word of the ad.
  (The base is the original, not its core: measured with the evaluation ruler, cutting the original
  cost more relevance to the ad's audience than any choice of fact won back.)
"""

from __future__ import annotations

import re
from typing import Any

from hllm_creator.creative.gate.form import TITLE_MAX_CHARS, TITLE_MAX_WORDS
from hllm_creator.creative.gate.numbers import NUM_AFTER, NUM_BEFORE, UNITS
from hllm_creator.creative.words import EDGE_DROP, STOP, stem

# split a text into clauses / a title into segments
_SEG = re.compile(r"\s*(?:[;|\[\]()]|(?<!\d),|,(?!\d))\s*|\s+[-\u2013\u2014]\s+|\s+/\s+|\s*\.\s+|\.$|\s+(?=(?:with|for|w/)\s)", re.I)
# a comma or colon between two digits belongs to a number ("1,000", "1:1"): no clause boundary there
_CLAUSE = re.compile(r"\s*(?:[;|\[\]()!?]|(?<!\d)[,:]|[,:](?!\d))\s*|\s+[-\u2013\u2014]\s+|\.(?:\s+|$)")
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[-'./][A-Za-z0-9]+)*")
PRONOUNS = frozenset("we our us you your i my me they their he she it its".split())
# a clause with a finite verb is a sentence, not a feature phrase ("Colors shown online are approximations")
VERBS = frozenset("is are was were be been being can could will would has have had do does did may might "
                  "should must shall expected".split())
# a phrase that opens with a subordinator is half of a sentence ("While hardness", "Used to indicate ...")
START_DROP = frozenset("while when if which that because although though thanks even due other such whether "
                       "where whose what how then used using making allows allow helps help designed ideal "
                       "unlike".split())
# a phrase that ends on the verb of a list it lost is a stub ("Applications include")
END_DROP = frozenset("include includes including are is such like".split())
# a bare noun phrase ending on one of these names where or on what the product is used, without the
# word that says so: featured alone it reads as what the product is ("Infrared Thermometer - Hazardous
# and inaccessible objects", from "measure high temperatures, hazardous and inaccessible objects";
# session 13's demo). With its preposition or verb it stays ("for automotive applications").
USE_NOUNS = frozenset("objects things items applications uses places projects purposes areas environments "
                      "tasks jobs".split())
_LINKS = frozenset("for on in with to of from by at into onto as".split())
_URL = re.compile(r"https?://|www\.|\.com\b", re.I)


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
_AND = re.compile(r"\s+(?:and|plus|as well as)\s+", re.I)  # "including", "such as": _EXAMPLES cuts there first
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


# what opens a list of examples: its items are what the product may be used on or with, not what it is
# or has ("measure ... moving targets; such as hot engine parts, cooking surfaces, swimming pools, bath
# water" gave a thermometer the title "... - Swimming pools" in the session-12 demo)
_EXAMPLES = re.compile(r"\b(?:such\s+as|e\.\s?g\.?|for\s+(?:example|instance)|including|like)\b", re.I)


# ... or closes one: "used in applications from agricultural machinery to conveying equipment, robotics,
# dental equipment, rolling mills, among others"
_CLOSER = re.compile(r"(?:^|[\s,;])(?:among\s+others|(?:and\s+)?(?:many|much|lots)\s+more|etc|and\s+so\s+on|"
                     r"and\s+others)\W*$", re.I)


def _before_examples(sent: str) -> str:
    """``sent`` up to the end of the clause where a list of examples opens: that clause stays whole
    ("Bonds surfaces such as wood"), the list's further items ("stone", "brick") go. A sentence whose
    list closes with "among others", "and many more", "etc." keeps only its first clause."""
    m = _EXAMPLES.search(sent)
    if m is None and _CLOSER.search(sent):
        m = re.match("", sent)
    if m is None:
        return sent
    b = _CLAUSE.search(sent, m.end())
    return sent[:b.start()] if b else sent


def _phrases_of(text: str, *, split_title: bool, pieces: bool = False) -> list[str]:
    """Clauses of ``text``; a sentence with a negation gives none (a clause cut out of "does not
    separate, migrate or bleed" would assert the opposite), nor does a "sold separately" sentence
    or a safety warning ("... cancer and birth defects"), nor the items of a list of examples after
    the clause that opens it (``_before_examples``). ``pieces``: instead, what the clauses hold
    beyond that: the ``_pieces`` of every clause before its examples, and the clauses of a negated
    sentence before its negated clause where the negation is the clause's own (``_negated_tail``)."""
    if split_title:
        return [] if pieces else _phrases_of_part(text, _SEG)
    out = []
    for sent in _SENT.split(_clean(text)):
        if _SEPARATELY.search(sent) or _WARNING.search(sent):
            continue
        sent = _before_examples(sent)
        clauses = _phrases_of_part(sent, _CLAUSE)
        if not pieces:
            out += [] if _NEG.search(sent) else clauses
            continue
        keep = clauses[:_negated_tail(clauses)]
        if _NEG.search(sent):
            out += keep
        for c in keep:
            out += _pieces(_EXAMPLES.split(c, 1)[0])
    return out


def restates_acronym(phrase: str, title: str) -> bool:
    """True when ``phrase`` spells out an acronym that the title carries ("Polylactic Acid" beside
    "PLA", "National Pipe Taper" beside "NPT"): featuring it would say the title again. The phrase is
    words only (no number, no all-caps token, none that opens with the acronym itself: "ESD
    Supplies" is no expansion), and each word gives the acronym its next one or two letters, the
    first of them its initial ("Poly-lactic" -> "PL")."""
    toks = _TOKEN.findall(phrase)
    words = [w.lower() for w in toks if w.lower() not in STOP]
    if len(words) < 2 or any(not w.replace("-", "").isalpha() for w in words) \
            or any(w.isupper() and len(w) > 1 for w in toks):
        return False
    acrs = {a.lower() for a in _TOKEN.findall(title) if a.isalpha() and a.isupper() and 2 <= len(a) <= 6}
    return any(not any(w.startswith(a) for w in words) and _spells(a, words) for a in acrs)


def _spells(acr: str, words: list[str]) -> bool:
    if not words:
        return not acr
    w = words[0]
    if not acr or acr[0] != w[0]:
        return False
    if _spells(acr[1:], words[1:]):
        return True
    return len(acr) > 1 and acr[1] in w[1:] and _spells(acr[2:], words[1:])


# a clause that opens with one of these prepositions is an adverbial ("At room temperature, it sets in 4-6
# hours", "Upon curing", "As well as ...", "Under a minute"): cut from its sentence it says nothing of the
# product ("room temperature"), so it is left out, not trimmed to its noun
ADVERBIAL = frozenset("at in on by from after before during under within upon through into onto to of than as"
                      .split())


def _phrases_of_part(text: str, pattern: re.Pattern) -> list[str]:
    out = []
    for part in pattern.split(_clean(text)):
        ws = _clean(part).split()
        if pattern is _CLAUSE and ws and ws[0].lower() in ADVERBIAL:
            continue
        ws = _trim(ws)
        if ws:
            out.append(" ".join(ws))
    return out


# a phrase that opens an instruction or a purpose clause is no selling point ("For best accuracy, hold
# ...", "Please allow ...", "Note: ...", "Keep away from ...")
_OPENER = re.compile(r"^(?:for\s+(?:best|better|optimal|optimum|maximum|max|more|most|example|instance|details|"
                     r"further|information|info|questions|a\s+full|the\s+best)|please|note|notes|see|refer|visit|"
                     r"contact\s+(?:us|the|our)|click|read|follow|keep|store|avoid|don'?t|do|make\s+sure|be\s+sure|"
                     r"in\s+order|so|"
                     r"as\s+a\s+result|because|which|that|who|whose|and|or|but|then|also|etc|including|such\s+as|like|"
                     r"especially|e\.?g)\b", re.I)
# what carries no selling point: guarantees, the company's history, trade boilerplate, shipping. Such a
# phrase is used only where the ad has nothing else (``fact_phrases``' second tier)
_BOILER = re.compile(r"\b(?:warrant\w*|guarantee[sd]?|money[- ]back|refund\w*|customer\s+(?:service|support|care)|"
                     r"satisf\w+|compan(?:y|ies)|founded|established|since\s+(?:1[89]|20)\d\d|years?\s+of\s+"
                     r"experience|family[- ]owned|headquarter\w*|manufacturer\w*|distributor\w*|dealer\w*|"
                     r"authori[sz]ed|trademark\w*|copyright\w*|inc|llc|ltd|corp|corporation|country\s+of\s+origin|"
                     r"made\s+in|imported|leader\s+in|leading\s+(?:supplier|provider|manufacturer)|website|amazon|"
                     r"seller|free\s+shipping|ships\s+(?:free|fast|from|within)|customers?|thank\s+you|"
                     r"(?:for\s+)?over\s+\d+\s+years|\d+\+?\s+years\s+(?:of|in)|faq|trial\s+and\s+error)\b", re.I)
def cuts_number(phrase: str, source: str) -> bool:
    """True when ``phrase`` starts or ends with a number that the ``source`` text, where the phrase
    stands in it, continues with a separator and another number or with a unit: the phrase cut a
    ratio, range, fraction or quantity in two ("Mixed at a ratio of 1" of "... ratio of 1:1")."""
    p = " ".join(phrase.split())
    if not p or not (p[0].isdigit() or p[-1].isdigit()):
        return False
    src = " ".join(str(source or "").split())
    for m in re.finditer(re.escape(p), src, re.I):
        before, after = src[:m.start()], src[m.end():]
        if p[0].isdigit() and (NUM_BEFORE.search(before) or (before[-1:].isdigit())):
            return True
        if p[-1].isdigit() and (NUM_AFTER.match(after) or after[:1].isalnum() or _unit_after(after)):
            return True
    return False


def _unit_after(text: str) -> bool:
    m = re.match(r"\s*-?\s*([A-Za-z]+|%|\"|')", text)
    return bool(m) and (m.group(1).lower() in UNITS or m.group(1) in '%"\'')


def is_boilerplate(phrase: str) -> bool:
    """A guarantee, company-history, trade or shipping phrase (``_BOILER``)."""
    return _BOILER.search(phrase) is not None


def _ok_phrase(p: str, core_cw: set[str], max_words: int, max_chars: int, category: bool = False) -> bool:
    ws = p.split()
    if not 2 <= len(ws) <= max_words or len(p) > max_chars or _URL.search(p):
        return False
    if {w.lower().split("'")[0] for w in ws} & (PRONOUNS | VERBS) or ws[0].lower() in START_DROP \
            or ws[-1].lower() in END_DROP or (_OPENER.match(p) and not category) or _names_a_use(ws):
        return False
    cw = set(content_words(p))
    if not cw or cw <= core_cw:
        return False
    return any(c.isalpha() for c in p)


def _names_a_use(words: list[str]) -> bool:
    low = [w.lower() for w in words]
    return low[-1] in USE_NOUNS and not set(low) & _LINKS


def fact_phrases(ad: Any, k: int = 4, *, max_words: int = 7, max_chars: int = 48,
                 beyond_title: bool = True) -> list[str]:
    """Up to ``k`` short fact phrases of an ad (dict / items row / ``Ad``), in the ad's own words.

    Order: the title's later segments, the selling points' clauses (``Category: X`` -> ``X``,
    ``Brand:`` left out: the core carries the brand), then the description's clauses. Phrases
    that add no content word to the core (with ``beyond_title``: to the whole original title, so a
    title featuring one is never a trim of the original), speak in the first/second person, or repeat an earlier
    phrase's content words are left out, as are the items of a list of examples ("such as ..., swimming
    pools, bath water") and an acronym of the title spelt out ("Polylactic Acid" beside "PLA")."""
    get = ad.get if isinstance(ad, dict) else (lambda key, d=None: getattr(ad, key, d))
    title = _clean(get("title"))
    core, rest = _core_and_rest(title, 3, 10, 70)
    core_cw = set(content_words(title if beyond_title else core))
    sps = get("selling_points")
    sps = [_clean(sp) for sp in (sps.tolist() if hasattr(sps, "tolist") else (sps or []))]
    sps = [sp for sp in sps if not sp.lower().startswith("brand:")]
    sentences = [sp for sp in sps if not sp.lower().startswith("category:")] + [get("description") or ""]
    cands: list[str] = _phrases_of(rest, split_title=True)
    categories: set[str] = set()
    for sp in sps:
        if sp.lower().startswith("category:"):
            cands.append(sp.split(":", 1)[1].strip())
            categories.add(cands[-1])
        else:
            cands += _phrases_of(sp, split_title=False)
    cands += _phrases_of(sentences[-1], split_title=False)  # the description
    # second pass, only where the whole clauses leave room: pieces of long clauses
    cands += [p for t in sentences for p in _phrases_of(t, split_title=False, pieces=True)]
    sources = " \n ".join([title, *sps, str(get("description") or "")])
    ok = [p for p in cands
          if _ok_phrase(p, core_cw, max_words, max_chars, category=p in categories) and not cuts_number(p, sources)
          and not restates_acronym(p, title)]
    first = [p for p in ok if p in categories or not is_boilerplate(p)]
    # boilerplate (a warranty, the company's history) is the second tier: only where nothing else is
    return _distinct_phrases(first, core_cw, k) or _distinct_phrases([p for p in ok if p not in first], core_cw, k)


def _distinct_phrases(cands: list[str], core_cw: set[str], k: int) -> list[str]:
    """Up to ``k`` of ``cands`` in order, each adding content words beyond ``core_cw`` (more new words
    than the title's own) that no phrase before it covers, nor covers it."""
    out: list[str] = []
    seen: list[set[str]] = []
    for p in cands:
        cw = set(content_words(p)) - core_cw
        if len(cw) < len(set(content_words(p)) & core_cw):
            continue  # mostly the title's own words again ("3D Printing Filament" for a filament)
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


# ---- what is kept of the original within the title budget (``gate.form.TITLE_MAX_CHARS``) --------

_PART = re.compile(r"(\s*(?:[;|]|(?<!\d),|,(?!\d))\s*|(?<!\d)\s+[-\u2013\u2014]\s+|\s+[-\u2013\u2014]\s+(?!\d)|\s+/\s+|\s*[(\[][^()\[\]]*[)\]]\s*)")
_PACK = re.compile(r"^[(\[]?\s*(?:(?:pack|set|box|case|bag|lot|kit|bundle)\s+of\s+[\d,]+(?:\s+\w+)?|[\d,]+\s*[- ]?"
                   r"(?:pack|pk|pcs?|pieces?|count|ct|sets?|units?|rolls?|pairs?|sheets?|bags?|boxes?|packs?)"
                   r"(?:\s*/\s*(?:pack|pk|box|bag))?|(?:single|twin|two|three|four|six|ten|twelve)[- ]pack)\s*[)\]]?$",
                   re.I)
COLOURS = frozenset("""black white red blue green yellow orange purple violet pink brown gray grey silver gold clear
transparent natural beige tan navy teal cyan magenta maroon ivory cream bronze copper assorted multicolor
multicolour multi color colors colours light dark bright neon matte glossy translucent""".split())


def _parts(title: str) -> list[tuple[str, str]]:
    """A title as (separator before, segment) pairs; a bracketed group is a segment of its own."""
    pieces = _PART.split(title)
    out: list[tuple[str, str]] = []
    sep = ""
    for k, piece in enumerate(pieces):
        if k % 2 == 0:
            if piece.strip():
                out.append((sep, piece.strip()))
                sep = ""
            continue
        if piece.strip()[:1] in "([":
            out.append((sep or " ", piece.strip()))
            sep = " "
        else:
            sep = piece
    return out


def _part_kind(seg: str, earlier: set[str]) -> int:
    """What a segment carries, least first: 0 repeats words said before, 1 a pack count, 2 colours,
    3 anything else."""
    cw = set(content_words(seg))
    if not cw or cw <= earlier:
        return 0
    if _PACK.match(seg.strip()):
        return 1
    words = [w.lower() for w in re.findall(r"[A-Za-z]+", seg)]
    if words and all(w in COLOURS or w in ("and", "or") for w in words):
        return 2
    return 3


def keep_original(title: str, max_chars: int, max_words: int | None = None, *, cut: bool = True) -> str | None:
    """The original title, whole when it fits in ``max_chars`` characters (and ``max_words`` words);
    else without what carries least until it fits: first segments that repeat earlier words, then
    pack counts ("Pack of 100", "(2-Pack)"), then colours ("Black"), then the last segments, never
    the first (the product's name). A first segment that alone does not fit is cut to the title's
    core (``core_title``); None when even that does not fit. ``cut=False``: only repeats, pack counts
    and colours may go (None when that is not enough): what the original says stays."""
    t = _clean(title)

    def fits(x: str) -> bool:
        return len(x) <= max_chars and (max_words is None or len(x.split()) <= max_words)

    if fits(t):
        return t
    parts = _parts(t)
    if not parts:
        return None
    keep = list(range(len(parts)))

    def text() -> str:
        return (parts[keep[0]][1] + "".join(parts[i][0] + parts[i][1] for i in keep[1:])).strip(" ,;:-|/")

    kinds = {}
    seen: set[str] = set(content_words(parts[0][1]))
    for i in range(1, len(parts)):
        kinds[i] = _part_kind(parts[i][1], seen)
        seen |= set(content_words(parts[i][1]))
    # least first; among equals the later segment first
    for i in sorted(kinds, key=lambda i: (kinds[i], -i)):
        if fits(text()) or (not cut and kinds[i] >= 3):
            break
        keep.remove(i)
    out = text()
    if fits(out):
        return out
    if not cut:
        return None
    core = core_title(parts[0][1])
    return core if fits(core) else None


def base_and_facts(title: str, facts: list[str], *, max_chars: int = TITLE_MAX_CHARS,
                   max_words: int = TITLE_MAX_WORDS) -> tuple[str | None, list[str]]:
    """What every composed title of an ad keeps of its original (one base per ad, so the Creative
    LLM reads it once in its prompt and every target starts with it), and the facts that fit beside it.

    An original within the budget is kept whole where the shortest fact fits beside it, else without
    only what carries least (repeats, pack counts, colours: ``keep_original(cut=False)``); a fact that
    does not fit beside that base is left out, and an ad where none fits gets no composition (it
    serves its original). What the original says is never cut to make room for a selling point: the
    evaluation found a cut original costing its audience more than any fact won
    back ("AcuRite 00613 Humidity Monitor with Indoor Thermometer" had lost "Digital Hygrometer and
    Humidity Gauge Indicator" to fit a 45-character fact). Only an original over the budget by itself
    is cut (``keep_original``), to leave room for the shortest fact. ``(None, [])``: no composition."""
    t = _clean(title)

    def fits(x: str) -> bool:
        return len(x) <= max_chars and len(x.split()) <= max_words

    if not facts:
        return keep_original(t, max_chars - 3, max_words - 1), []
    # a fact adds the same characters and words to any base (``compose``)
    extra = {f: (len(compose(t, f)) - len(t), len(compose(t, f).split()) - len(t.split())) for f in facts}
    chars, words = min(extra.values())
    base = keep_original(t, max_chars - chars, max_words - words, cut=not fits(t))
    if base is None:
        return None, []
    kept = [f for f in facts if fits(compose(base, f))]
    return (base, kept) if kept else (None, [])


def ad_base(title: str, facts: list[str], *, max_chars: int = TITLE_MAX_CHARS,
            max_words: int = TITLE_MAX_WORDS) -> str | None:
    """``base_and_facts``' base: what every composed title of the ad keeps of its original."""
    return base_and_facts(title, facts, max_chars=max_chars, max_words=max_words)[0]


def compositions(ad: Any, k: int = 4, *, max_chars: int = TITLE_MAX_CHARS,
                 max_words: int = TITLE_MAX_WORDS) -> tuple[str | None, list[str], list[str]]:
    """The ad's personalized titles before the gate: ``(base, facts, titles)``, titles[i] =
    ``compose(base, facts[i])``: the original (``ad_base``: within the budget) plus ONE fact phrase,
    which one depending on the audience. ``base`` None (an original whose name alone does not fit):
    no titles."""
    get = ad.get if isinstance(ad, dict) else (lambda key, d=None: getattr(ad, key, d))
    facts = fact_phrases(ad, k)
    base, facts = base_and_facts(get("title"), facts, max_chars=max_chars, max_words=max_words) if facts \
        else (None, [])
    if base is None:
        return None, [], []
    return base, facts, [compose(base, f) for f in facts]
