"""A user's interests, computed from the click history (deterministic; no model), and how well
each of an ad's facts fits them. This is the teacher's first two chain-of-thought steps made
checkable: (1) what of the user's interests fits this ad, (2) which of the ad's facts to feature.

- ``Vocabulary(items)``: inverse document frequency of stemmed content words over the catalog's
  titles and leaf categories (a word on every third item says little about a user).
- ``interests(history_items, vocab)``: idf-weighted, recency-weighted stemmed words of the history's
  titles and leaf categories (normalized to sum 1), plus the top categories and brands.
- ``fit(phrase, interests)``: the interest weight a phrase's content words carry (the teacher
  matches each user to the phrase that carries most).
- ``profile(...)``: the JSON user profile the recon/align objectives regenerate.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field

from hllm_creator.creative.facts import content_words


def _leaf(item: dict) -> str | None:
    cats = item.get("categories")
    if cats is None or not len(cats):
        return None
    return str(list(cats)[-1])


def _words(item: dict) -> list[str]:
    """Interest-bearing words of an item: alphabetic content words (model numbers and sizes are
    facts of one product, not interests) of its title and leaf category."""
    return [w for w in content_words(str(item.get("title") or "")) + content_words(_leaf(item) or "")
            if len(w) >= 3 and w.replace("-", "").isalpha()]


class Vocabulary:
    def __init__(self, items: list[dict]):
        df: Counter[str] = Counter()
        for it in items:
            df.update(set(_words(it)))
        self.n = max(len(items), 1)
        self.df = df

    def idf(self, w: str, min_df: int = 3) -> float:
        """log inverse document frequency; 0 for words on fewer than ``min_df`` items (a word of one
        product line says nothing about a user's wider interests)."""
        df = self.df.get(w, 0)
        return math.log((1 + self.n) / (1 + df)) if df >= min_df else 0.0


@dataclass
class Interests:
    words: dict[str, float] = field(default_factory=dict)   # stemmed word -> weight (sums to 1)
    categories: list[str] = field(default_factory=list)     # most frequent leaf categories
    recent_categories: list[str] = field(default_factory=list)
    brands: list[str] = field(default_factory=list)

    def top_words(self, n: int = 5) -> list[str]:
        return [w for w, _ in sorted(self.words.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def interests(history_items: list[dict], vocab: Vocabulary, *, recency: float = 0.9) -> Interests:
    """Interests of a history (oldest first): newer clicks weigh more (``recency`` ** age)."""
    w: Counter[str] = Counter()
    n = len(history_items)
    for k, it in enumerate(history_items):
        decay = recency ** (n - 1 - k)
        for t in set(_words(it)):
            v = vocab.idf(t)
            if v > 0:
                w[t] += decay * v
    total = sum(w.values()) or 1.0
    cats = Counter(c for c in (_leaf(it) for it in history_items) if c)
    brands = Counter(str(it["brand"]) for it in history_items if it.get("brand"))
    recent = []
    for it in reversed(history_items):
        c = _leaf(it)
        if c and c not in recent:
            recent.append(c)
        if len(recent) == 2:
            break
    return Interests({k: v / total for k, v in w.items()}, [c for c, _ in cats.most_common(3)], recent,
                     [b for b, _ in brands.most_common(2)])


def fit(phrase: str, it: Interests) -> float:
    """Interest weight carried by the phrase's content words (0 when none is an interest)."""
    return float(sum(it.words.get(w, 0.0) for w in set(content_words(phrase))))


def profile(it: Interests) -> dict:
    """The user profile (reference JSON keys), from computed interests only."""
    cats = it.categories or ["varied products"]
    desc = f"Shops mostly for {', '.join(cats[:2])}"
    if it.brands:
        desc += f"; often picks {it.brands[0]}"
    return {"long_term_interests": cats[:2], "short_term_interests": it.recent_categories[:2],
            "preferences": it.brands[:2], "needs": it.top_words(3), "description": desc + "."}


def profile_text(p: dict) -> str:
    return json.dumps(p, ensure_ascii=False, separators=(", ", ": "))
