"""Numbers and quantities: every number of a title, with its unit where it has one, must be the ad's;
and a number the ad has only inside a ratio, range or size ("1" of "1:1") is a cut number."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from hllm_creator.creative.gate.support import normalize

_NUM = re.compile(r"(?<![a-z0-9.])((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:\s*/\s*(\d+))?(?![0-9])")
# a unit right after a number: "1.75mm", "2 lbs", "1/2-Inch"; not across a " - " separator ("400/170 - A ...")
_UNIT_AFTER = re.compile(r"(?:\s*-(?!\s)|\s*)(fl\.?\s*oz|sq\.?\s*ft|[a-z]+|%|\"|')")

UNITS: dict[str, str] = {}
for canon, spellings in {
    "count": "pack packs pk pks pcs pc piece pieces count counts ct cnt qty units unit",
    "roll": "roll rolls", "sheet": "sheet sheets", "bottle": "bottle bottles", "bag": "bag bags",
    "box": "box boxes", "pair": "pair pairs", "set": "set sets", "spool": "spool spools",
    "tube": "tube tubes", "sachet": "sachet sachets", "capsule": "capsule capsules",
    "tablet": "tablet tablets", "pin": "pin pins", "position": "position positions",
    "mm": "mm millimeter millimeters millimetre millimetres", "cm": "cm centimeter centimeters",
    "m": "m meter meters metre metres", "km": "km", "um": "um micron microns",
    "in": "in inch inches \"", "ft": "ft feet foot '", "yd": "yd yds yard yards",
    "mg": "mg milligram milligrams", "g": "g gram grams gr", "kg": "kg kgs kilogram kilograms",
    "lb": "lb lbs pound pounds", "oz": "oz ounce ounces", "floz": "floz fl.oz fl oz",
    "ml": "ml milliliter milliliters millilitre", "l": "l liter liters litre litres",
    "gal": "gal gallon gallons", "qt": "qt quart quarts", "cc": "cc",
    "v": "v volt volts vac vdc", "a": "a amp amps ampere amperes", "ma": "ma", "mah": "mah",
    "w": "w watt watts", "kw": "kw", "hz": "hz", "khz": "khz", "mhz": "mhz", "ohm": "ohm ohms",
    "awg": "awg gauge", "psi": "psi", "rpm": "rpm", "db": "db", "hp": "hp",
    "gb": "gb", "tb": "tb", "mb": "mb", "mp": "mp megapixel megapixels",
    "%": "% percent pct", "x": "x", "deg": "deg degree degrees",
    "c": "c", "f": "f", "k": "k",
    "year": "year years yr yrs", "month": "month months", "day": "day days",
    "hour": "hour hours hr hrs", "minute": "minute minutes min mins", "second": "second seconds sec",
}.items():
    for s in spellings.split(" "):
        UNITS[s] = canon
UNITS["fl oz"] = "floz"
UNITS["sq ft"] = "sqft"

NUMBER_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
                 "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20,
                 "fifty": 50, "hundred": 100, "thousand": 1000, "dozen": 12, "single": 1, "one": 1,
                 "double": 2, "twin": 2, "triple": 3}
IDIOM_NUMBERS = frozenset({"one", "single", "double", "twin"})
_WORD_QTY = re.compile(r"\b(" + "|".join(NUMBER_WORDS) + r")\s*-?\s*([a-z]+|%)")
_OF_QTY = re.compile(r"\b(pack|pk|set|box|bag|case|kit|bundle|lot)s?\s+of\s+"
                     r"(\d+|" + "|".join(NUMBER_WORDS) + r")\b")


def _canon_number(s: str) -> str:
    s = s.replace(",", "")
    try:
        d = Decimal(s)
    except InvalidOperation:
        return s
    d = d.normalize()
    return format(d, "f") if d == d.to_integral() or abs(d.as_tuple().exponent) < 12 else s


def numbers_in(text: str) -> list[tuple[str, str | None, int]]:
    """[(canonical value, canonical unit or None, start offset)] for every number in ``text``."""
    out = []
    for m in _NUM.finditer(text):
        value = _canon_number(m.group(1))
        if m.group(2):
            value = f"{value}/{m.group(2)}"
        unit = None
        um = _UNIT_AFTER.match(text, m.end())
        if um:
            raw = re.sub(r"\s+", " ", um.group(1).replace(".", ""))
            unit = UNITS.get(raw)
        out.append((value, unit, m.start()))
    return out


def quantities(text: str) -> set[tuple[str, str]]:
    q = {(v, u) for v, u, _ in numbers_in(text) if u}
    for m in _WORD_QTY.finditer(text):
        unit = UNITS.get(m.group(2))
        if unit:
            q.add((str(NUMBER_WORDS[m.group(1)]), unit))
    for m in _OF_QTY.finditer(text):
        um = _UNIT_AFTER.match(text, m.end())
        if um and UNITS.get(um.group(1)):  # "pack of 10 ml": the 10 belongs to ml
            continue
        n = m.group(2)
        value = _canon_number(n) if n.isdigit() else str(NUMBER_WORDS[n])
        unit = UNITS.get(m.group(1), m.group(1))
        q.add((value, "count" if unit in ("pack", "pk", "case", "kit", "bundle", "lot") else unit))
    return q


def number_values(text: str) -> set[str]:
    vals = {v for v, _, _ in numbers_in(text)}
    for v in list(vals):  # a mixed fraction "6-1/2" also supports "1/2"; "5/8" supports 5 and 8
        if "/" in v:
            vals.update(v.split("/"))
    words = set(re.findall(r"[a-z]+", text))
    vals.update(str(n) for w, n in NUMBER_WORDS.items() if w in words)
    return vals


def number_reasons(t: str, values: frozenset, src_q: frozenset, flagged: set[str]) -> list[str]:
    """Numbers, number words ("Three Cans"; the idiomatic one, single, double, twin are left out) and
    quantities (number + unit) of the normalized title ``t`` that the ad's ``values``/``src_q`` lack.
    The number words reported are added to ``flagged``."""
    reasons = []
    for value, _unit, _pos in numbers_in(t):
        if value not in values:
            reasons.append(f"number '{value}' is not in the ad")
    t_words = set(re.findall(r"[a-z]+", t))
    for w, n in NUMBER_WORDS.items():
        if w in t_words and w not in IDIOM_NUMBERS and str(n) not in values:
            reasons.append(f"number '{w}' ({n}) is not in the ad")
            flagged.add(w)
    src_vals_by_unit: dict[str, set[str]] = {}
    for v, u in src_q:
        src_vals_by_unit.setdefault(u, set()).add(v)
    for v, u in sorted(quantities(t)):
        if (v, u) not in src_q:
            shown = f"{v} {u}"
            reasons.append(f"quantity '{shown}' is not in the ad"
                           + (f" (the ad has {u}: {', '.join(sorted(src_vals_by_unit[u]))})"
                              if u in src_vals_by_unit else ""))
    return reasons


# a number joined to another by a separator ("1:1", "3-5", "1/2", "2 x 4", "1,000", "3.5") or to its
# unit: a phrase boundary inside it cuts the number's meaning ("ratio of 1" from "ratio of 1:1")
NUM_BEFORE = re.compile(r"\d\s*[:/x\u00d7.,\-\u2013]\s*$", re.I)
NUM_AFTER = re.compile(r"^\s*(?:[:/\u00d7]|x(?=\s*\d)|[-\u2013]|[.,](?=\d))\s*\d", re.I)


def cut_numbers(title: str, src: str) -> list[str]:
    """Reasons for numbers of ``title`` that stand in the ad's (normalized) text ``src`` only as part of
    a ratio, range, fraction or size ("ratio of 1" where the ad says "ratio of 1:1"): a fact cut there
    says something else. Where the ad has the title's word before the number ("of 1"), only those
    occurrences count."""
    t = normalize(title)
    out = []
    for m in re.finditer(r"(?<![\w.,])\d+(?:[.,]\d+)*(?![\w]|[.,]\d)", t):
        n = m.group(0)
        if NUM_BEFORE.search(t[:m.start()]) or NUM_AFTER.match(t[m.end():]):
            continue  # a compound in the title itself ("1:1"): the numbers rule checks it
        occ = list(re.finditer(rf"(?<![\d.,]){re.escape(n)}(?!\d|[.,]\d)", src))
        prev = re.findall(r"[a-z]+", t[:m.start()])[-1:] or [""]
        own = [x for x in occ if prev[0] and re.search(rf"\b{re.escape(prev[0])}\s*$", src[:x.start()])]
        occ = own or occ
        if not occ:
            continue  # a number the ad does not have at all: the numbers rule says so
        parts = [x for x in occ if NUM_BEFORE.search(src[:x.start()]) or NUM_AFTER.match(src[x.end():])]
        if len(parts) == len(occ):
            x = parts[0]
            whole = re.search(r"[\d.,:/x\u00d7\-\u2013 ]*$", src[:x.start()]).group(0).lstrip() + n + \
                re.match(r"[\d.,:/x\u00d7\-\u2013 ]*", src[x.end():]).group(0).rstrip(" .,")
            out.append(f"cut number: '{n}' stands in the ad only as part of '{whole.strip()}'")
    return out

