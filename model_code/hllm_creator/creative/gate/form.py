"""The form of a title: a grounded text is not yet a title. ``title_quality`` (names the product, not a
fragment, not a field label), repetition, cut-off and length against the title budget."""

from __future__ import annotations

import functools
import re
from collections import Counter
from typing import NamedTuple

from hllm_creator.creative.gate.adfacts import AdFacts
from hllm_creator.creative.gate.numbers import UNITS
from hllm_creator.creative.gate.support import normalize
from hllm_creator.creative.text import normalize_text
from hllm_creator.creative.words import CONNECTIVES, TITLE_STOP, TRAILING, WORD, root

TITLE_MAX_CHARS = 150
"""A served title's budget in characters. 150 is what the shopping-ad channels take for a product
title (Google Merchant Center and Microsoft Advertising cut a product title at 150 characters), so a
title within it is shown as written. 95% of the bundled catalog's titles are within it; the gate
refuses any other title over it (the original is exempt: it is what is served otherwise)."""
TITLE_MAX_WORDS = 30
"""A served title's budget in words (a backstop against run-on generations; 99% of the bundled titles
have fewer)."""

_WORD_TOK = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _content_words(text: str) -> set[str]:
    return {w.lower() for w in WORD.findall(text or "") if len(w) >= 3 and w.lower() not in TITLE_STOP}


def title_quality(title: str, original_title: str, *, min_words: int = 3) -> list[str]:
    """Reasons why ``title`` is not usable as an ad title for the ad whose title is ``original_title``.

    Grounding says "no fact outside the ad"; this says "it is a title of THIS product": at least
    ``min_words`` words, names the product (shares a content word with the original title), is not a
    cut-off copy of the original, does not trail off, and does not start mid-sentence or with a
    field label ("Quantity: ..."). Empty list = usable. Both texts are normalized first.
    """
    t = " ".join(normalize_text(title or "").split())
    o = " ".join(normalize_text(original_title or "").split())
    reasons: list[str] = []
    if len(t.split()) < min_words and not (t and t.lower() == o.lower()):
        reasons.append(f"quality: too short for a title ({len(t.split())} words < {min_words})")
    if not (_content_words(t) & _content_words(o)):
        reasons.append("quality: does not name the product (no word in common with the original title)")
    if t and len(t) < len(o) and o.lower().startswith(t.lower().rstrip(". ")):
        reasons.append("quality: a cut-off copy of the original title")
    if t.endswith("...") or (t and t[-1] in ",;:-|/("):
        reasons.append("quality: trails off (ends mid-sentence)")
    if t and t[0] in ",;:.|/)]}" or re.match(r"^[A-Za-z ]{1,20}:\s", t):
        # "; Quantity: 774 ..." / "Title: ...": a continuation or a form field, not a title
        reasons.append("quality: starts mid-sentence or with a field label")
    return reasons


# ---- form: repetition, cut-off, length ----------------------------------------------------------

_INCH_MARK = re.compile(r"(?<=[0-9])\s*(?:\"|'')|(?<=[0-9])\s*'")
_PAIRS = (("(", ")"), ("[", "]"), ("{", "}"))


class _Form(NamedTuple):
    counts: dict       # root -> count (words of 2+ characters, connectives left out)
    forms: dict        # root -> its first spelling in the text
    runs: frozenset    # repeated adjacent 2-3-word runs, 3-word runs said twice anywhere
    doubles: frozenset  # words of 3+ letters right after themselves ("Product - Product")
    unbalanced: frozenset
    last: str          # last word
    n_words: int
    n_chars: int
    norm: str


@functools.lru_cache(maxsize=4096)
def _form(text: str) -> _Form:
    t = normalize(text)
    words = _WORD_TOK.findall(t)
    counts = Counter(root(w) for w in words if len(w) >= 2 and w not in CONNECTIVES)  # by root: pla/plas
    runs = set()
    for n in (2, 3):
        for i in range(len(words) - 2 * n + 1):
            if words[i:i + n] == words[i + n:i + 2 * n]:
                runs.add(" ".join(words[i:i + n]))
    doubles = {a for a, b in zip(words, words[1:]) if a == b and len(a) >= 3 and a.isalpha()}
    # a 3-word run said twice anywhere ("HATCHBOX PLA 3D ... - HATCHBOX PLA 3D Printing Filament"),
    # two of its words real words (a size like "1-1/2" is three number tokens)
    first: dict[tuple, int] = {}
    for i in range(len(words) - 2):
        run = tuple(words[i:i + 3])
        if run in first and i >= first[run] + 3 and sum(w.isalpha() and len(w) >= 2 for w in run) >= 2:
            runs.add(" ".join(run))
        first.setdefault(run, i)
    body = _INCH_MARK.sub(" ", t)
    unb = {f"{a}{b}" for a, b in _PAIRS if body.count(a) != body.count(b)}
    if body.count('"') % 2:
        unb.add('"')
    n_words = len([w for w in t.split() if re.search(r"[a-z0-9]", w)])
    forms = {}
    for w in words:
        forms.setdefault(root(w), w)
    return _Form(counts=dict(counts), forms=forms, runs=frozenset(runs), doubles=frozenset(doubles),
                 unbalanced=frozenset(unb),
                 last=words[-1] if words else "", n_words=n_words, n_chars=len(" ".join(text.split())), norm=t)


def _form_reasons(title: str, original: str, facts: AdFacts, max_words: int, max_chars: int) -> list[str]:
    f, o = _form(title), _form(original)
    reasons = []
    is_original = f.norm == o.norm
    # repetition: the original's own repetitions are allowed
    reps = [f"'{f.forms[r]}' {c} times" for r, c in f.counts.items() if c >= 3 and c > o.counts.get(r, 0)]
    runs = [f"'{r} {r}'" for r in sorted(f.runs - o.runs) if len(set(r.split())) > 1]
    # a word twice in a row ("Filament - Product - Product"), unless the 3+ count already says it
    runs += [f"'{w} {w}'" for w in sorted(f.doubles - o.doubles) if f.counts.get(root(w), 0) < 3]
    if reps or runs:
        reasons.append("repetition: " + ", ".join(reps + runs))
    # cut off
    t = f.norm.rstrip()  # a title ending in "..." is reported by title_quality ("trails off")
    if not t.endswith("...") and f.last in TRAILING and f.last != o.last \
            and re.search(rf"\b{re.escape(f.last)}\W*$", t):
        reasons.append(f"cut off: ends with the connective '{f.last}'")
    for u in sorted(f.unbalanced - o.unbalanced):
        reasons.append(f"cut off: unbalanced {u} (an opened bracket or quote is not closed)")
    last = f.last
    after_number = re.search(rf"\d\s*{re.escape(last)}\W*$", t) is not None  # "500 ma": a unit
    if last and last.isalpha() and last not in CONNECTIVES and re.search(rf"\b{re.escape(last)}\W*$", t) \
            and root(last) not in facts.pos_roots and last not in facts.words \
            and not (after_number and last in UNITS) and root(last) not in facts.neg_roots and last != o.last:
        if len(last) <= 2 or re.search(rf"\b{re.escape(last)}[a-z]", facts.src):
            reasons.append(f"cut off: ends mid-word ('{last}')")
    # length (the original title itself is exempt: a failing title falls back to it)
    if not is_original:
        if f.n_words > max_words:
            reasons.append(f"too long: {f.n_words} words (max {max_words})")
        if f.n_chars > max_chars:
            reasons.append(f"too long: {f.n_chars} characters (max {max_chars})")
    return reasons


@functools.lru_cache(maxsize=4096)
def _own_quality(original: str) -> frozenset:
    return frozenset(title_quality(original, original))



def form_reasons(title: str, original: str, facts: AdFacts, *, max_words: int | None = None,
                 max_chars: int | None = None) -> list[str]:
    """The form rules of ``gate``: repetition, cut-off, length (default: the title budget
    ``TITLE_MAX_WORDS``/``TITLE_MAX_CHARS``; the original itself is exempt), then ``title_quality``
    without the defects the original title itself has ("Brand : Model ...", a trailing "...": the
    original is what a failing title falls back to)."""
    max_words = TITLE_MAX_WORDS if max_words is None else max_words
    max_chars = TITLE_MAX_CHARS if max_chars is None else max_chars
    own = _own_quality(original)
    quality = [r for r in title_quality(title, original) if r not in own]
    return [*_form_reasons(title, original, facts, max_words, max_chars), *quality]
