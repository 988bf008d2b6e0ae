"""Derive ``selling_points`` when a source has none.

The rule (documented in the README, deterministic):
1. Split the description into sentences (on ``.``, ``!``, ``?``, ``;`` and line breaks).
2. Keep sentences of 3 to 30 words that are not a copy of the title, not boilerplate
   ("country of origin", "please", "warranty", "see description", URLs), in order; drop
   case-insensitive duplicates; keep at most ``max_points`` (default 3).
3. Add ``"Brand: <brand>"`` when a brand is known, and ``"Category: <leaf category>"`` when the
   item has categories (the last, most specific element of the path).
Selling points are therefore always facts copied from the ad's own text.
"""

from __future__ import annotations

import re

_SPLIT = re.compile(r"(?<=[.!?;])\s+|\n+")
_BOILER = re.compile(r"country of origin|please|warranty|see description|https?://|www\.", re.I)


def derive_selling_points(title: str, description: str, brand: str | None, categories: list[str],
                          max_points: int = 3) -> list[str]:
    points: list[str] = []
    seen = {title.strip().lower().rstrip(".")}
    for sent in _SPLIT.split(description or ""):
        s = " ".join(sent.split()).strip(" .;")
        n = len(s.split())
        key = s.lower()
        if not (3 <= n <= 30) or key in seen or _BOILER.search(s):
            continue
        seen.add(key)
        points.append(s)
        if len(points) >= max_points:
            break
    if brand:
        points.append(f"Brand: {brand}")
    if categories:
        points.append(f"Category: {categories[-1]}")
    return points
