"""The ad's facts as the rules read them, computed once per ad: its support text, words and stems,
numbers and quantities, and the polarity of each word (negated: "not waterproof", "lead-free")."""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import NamedTuple

from hllm_creator.creative.ad import Ad
from hllm_creator.creative.gate.numbers import number_values, quantities
from hllm_creator.creative.gate.support import support_text
from hllm_creator.creative.text import nfkc, scripts_of
from hllm_creator.creative.words import CONNECTIVES, WORD, root, stem


def word_set(norm_text: str) -> set[str]:
    toks = set(WORD.findall(norm_text))
    toks.update(re.findall(r"[a-z0-9]+", norm_text))
    return toks | {stem(t, keep_us_is=False) for t in toks}


def compact(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


# words that negate the next few words ("not waterproof", "no batteries", "without cords")
NEGATORS = frozenset("""no not non without never none nor neither cannot cant isnt doesnt dont wont arent
wasnt werent didnt hasnt havent hadnt shouldnt wouldnt couldnt nothing""".split())
NEG_WINDOW = 3
# a token stream: words (apostrophes kept inside) and clause breaks
_STREAM = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[.,;:!?()\[\]{}|\"]|\s-\s")


def stream(norm: str) -> list[tuple[str, bool]]:
    """[(word, negated)] of a normalized text, with "" as a clause break. A word is negated when a
    negator stands at most three words before it in the same clause (``not only`` excepted), when
    it is followed by ``free`` (``lead-free``; ``BPA free`` at the end of a clause or before and/or)
    or preceded by ``free of``."""
    toks, spans = [], []
    for m in _STREAM.finditer(norm):
        tok = m.group(0)
        toks.append(tok.replace("'", "") if tok[0].isalnum() else "")
        spans.append(m.span())
    out = []
    for i, tok in enumerate(toks):
        if not tok:
            out.append(("", False))
            continue
        neg = False
        for j in range(i - 1, max(-1, i - 1 - NEG_WINDOW), -1):
            prev = toks[j]
            if not prev:
                break
            if prev in NEGATORS and toks[j + 1] not in ("only", "just"):
                neg = True
                break
        if not neg and i + 1 < len(toks) and toks[i + 1] == "free" and tok not in CONNECTIVES:
            # "lead-free", "BPA free." / "BPA free and ...": X free means without X;
            # "Bonus Pack Free Base" does not
            after = toks[i + 2] if i + 2 < len(toks) else ""
            neg = norm[spans[i][1]:spans[i + 1][0]] == "-" or not after or after in ("and", "or", "nor")
        if not neg and i >= 2 and toks[i - 2] == "free" and toks[i - 1] == "of":
            neg = True
        out.append((tok, neg))
    return out


class AdFacts(NamedTuple):
    """What the rules read of one ad (``ad_facts``)."""

    src: str                       # normalized support text
    words: frozenset               # its words and simple stems (number/name rules)
    compact: str                   # letters and digits only
    values: frozenset              # number values
    quantities: frozenset          # (value, unit)
    pos_roots: frozenset           # roots of words with an un-negated occurrence
    neg_roots: dict                # root -> a negated phrase of the ad, for roots with a negated occurrence
    compounds: frozenset           # roots of compact compounds: "non-slip" / "non slip" -> "nonslip"
    scripts: frozenset             # scripts of the ad's letters (before folding)
    raw_words: frozenset           # the ad's words before folding (lowercase), for mixed-script words
    symbols: frozenset             # the ad's symbol characters (category So: emoji, (TM), (R), degree...)
    negates: bool                  # the ad negates something (so a title's "no"/"not" may too)
    neg_pairs: dict                # (word before a negator, root after it) -> the ad's phrase: "will not rust"
    pairs: frozenset               # (word, root of the next word) of the ad, un-negated
    names: frozenset = frozenset()  # roots of the ad's camel-case names ("TastePURE"): never split in two


@functools.lru_cache(maxsize=4096)
def source_facts(title: str, description: str, selling_points: tuple[str, ...], brand: str | None,
                 categories: tuple[str, ...] = ()) -> AdFacts:
    """Everything the checks need from an ad's text, computed once per ad (bounded LRU by count)."""
    ad = Ad(title=title, description=description, selling_points=list(selling_points), brand=brand,
            categories=list(categories))
    src, _ = support_text(ad)
    toks = stream(src)
    pos, neg = set(), {}
    words_seq = []
    for i, (w, n) in enumerate(toks):
        if not w:
            words_seq.append("")
            continue
        words_seq.append(w)
        r = root(w)
        if n:
            if r not in neg:
                lo = max(0, i - NEG_WINDOW)
                ctx = [x for x, _ in toks[lo:i + 2] if x]
                neg[r] = " ".join(ctx)
        else:
            pos.add(r)
    # statement-level negation: "will not rust" does not back "Will Rust" even where "rust" also
    # occurs un-negated ("removes surface rust")
    neg_pairs, pairs = {}, set()
    for i in range(1, len(words_seq) - 1):
        a, x, b = words_seq[i - 1], words_seq[i], words_seq[i + 1]
        if a and x in NEGATORS and b and a not in NEGATORS:
            neg_pairs.setdefault((a, root(b)), f"{a} {x} {b}")
    for (a, _), (b, bn) in zip(toks, toks[1:]):
        if a and b and not bn:
            pairs.add((a, root(b)))
    compounds = set()
    for a, b in zip(words_seq, words_seq[1:]):
        if a and b and a.isalpha() and b.isalpha():
            compounds.add(root(a + b))
    for tok in re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)+", src):
        compounds.add(root(tok.replace("-", "")))
    raw_text = " ".join([title, description, *selling_points, brand or "", *categories])
    raw = nfkc(raw_text)
    names = frozenset(root(w.lower()) for w in re.findall(r"[A-Za-z]+", raw) if re.search(r"[a-z][A-Z]", w))
    return AdFacts(src=src, words=frozenset(word_set(src)), compact=compact(src),
                   values=frozenset(number_values(src)), quantities=frozenset(quantities(src)),
                   pos_roots=frozenset(pos), neg_roots=neg, compounds=frozenset(compounds),
                   scripts=frozenset(scripts_of(raw)),
                   raw_words=frozenset(w.lower() for w in re.findall(r"\w+", raw)) if not raw.isascii()
                   else frozenset(),
                   symbols=frozenset(c for c in raw if not c.isascii() and unicodedata.category(c) == "So"),
                   negates=bool(neg) or any(w in NEGATORS for w in words_seq),
                   neg_pairs=neg_pairs, pairs=frozenset(pairs), names=names)


def ad_facts(ad: Ad) -> AdFacts:
    """The ad's facts (cached per ad text)."""
    return source_facts(ad.title, ad.description, tuple(ad.selling_points), ad.brand, tuple(ad.categories))


