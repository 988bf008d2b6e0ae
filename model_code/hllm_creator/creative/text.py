"""Unicode normalization applied to every text before any check (grounding, instruction detection).

``normalize_text(s)``: NFKC (full-width letters/digits become ASCII, ligatures split, ``…`` becomes
``...``); Unicode format characters (category Cf: soft hyphen U+00AD, zero-width space/joiners
U+200B-U+200D, word joiner U+2060, BOM U+FEFF, bidi controls U+202A-U+202E / U+2066-U+2069, ...)
removed; Cyrillic and Greek letters that look like Latin ones folded to Latin (``Stаnley`` with a
Cyrillic ``а`` becomes ``Stanley``); curly quotes, primes and dashes made straight. Case is kept.

``scripts_of(s)``: the set of scripts ("Latin", "Cyrillic", "Greek", "Han", ...) of the letters of
``s`` (NFKC and format characters removed first, but NOT folded: this is how a look-alike is seen).
"""

from __future__ import annotations

import functools
import unicodedata

# Cyrillic / Greek letters that render like a Latin letter (the usual homoglyph set)
_CONFUSABLES = {
    # Cyrillic capitals
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T",
    "У": "Y", "Х": "X", "І": "I", "Ј": "J", "Ѕ": "S", "Ԛ": "Q", "Ԝ": "W", "Ү": "Y", "Ӏ": "I",
    # Cyrillic small
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i", "ј": "j", "ѕ": "s",
    "ԁ": "d", "һ": "h", "ԛ": "q", "ԝ": "w", "ѵ": "v", "ӏ": "l", "ү": "y", "ɡ": "g",
    # Greek capitals
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
    "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # Greek small (mu is left alone: it is the micro prefix of units, "µm")
    "α": "a", "ο": "o", "ι": "i", "κ": "k", "ν": "v", "ρ": "p", "υ": "u", "χ": "x",
}
_STRAIGHT = {
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u00b4": "'", "`": "'",
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-", "\u2212": "-",
    "\u2043": "-", "\ufe58": "-",
}
_TABLE = str.maketrans({**_CONFUSABLES, **_STRAIGHT})


def strip_format(s: str) -> str:
    """Remove Unicode format characters (category Cf: soft hyphen, zero-width, bidi controls, BOM)."""
    if s.isascii():
        return s
    return "".join(c for c in s if unicodedata.category(c) != "Cf")


def nfkc(s: str) -> str:
    """NFKC with format characters removed (before and after), not folded: what ``scripts_of`` reads."""
    s = s or ""
    if s.isascii():
        return s
    return strip_format(unicodedata.normalize("NFKC", strip_format(s)))


def normalize_text(s: str) -> str:
    """NFKC, format characters removed, look-alikes folded to Latin, straight quotes and dashes."""
    s = nfkc(s)
    if s.isascii():
        return s.replace("`", "'")
    return s.translate(_TABLE)


@functools.lru_cache(maxsize=4096)
def _script(c: str) -> str:
    name = unicodedata.name(c, "")
    if not name:
        return "Unknown"
    first = name.split(" ", 1)[0]
    if first == "CJK":
        return "Han"
    return first.capitalize()


def scripts_of(text: str) -> set[str]:
    """The scripts of the letters of ``text`` after NFKC and format-character removal (not folded):
    ``scripts_of("Stаnley")`` (Cyrillic a) is ``{"Latin", "Cyrillic"}``."""
    t = nfkc(text)
    if t.isascii():
        return {"Latin"} if any(c.isalpha() for c in t) else set()
    return {_script(c) for c in t if c.isalpha()}
