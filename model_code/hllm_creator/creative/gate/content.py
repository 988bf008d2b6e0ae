"""Content words: every word of a title must be supported by the ad's text up to inflection
(``creative.words.root``) and compound splits, with the ad's polarity (a word the ad only negates does
not back its un-negated use), or be one of the ``CONNECTIVES``."""

from __future__ import annotations

from hllm_creator.creative.gate.adfacts import NEGATORS, AdFacts, stream
from hllm_creator.creative.words import CONNECTIVES, root


def content_word_reasons(t: str, facts: AdFacts, skip: set[str]) -> list[str]:
    """Every content word of the normalized title ``t`` must be supported by the ad (module docstring)."""
    toks = stream(t)
    words = [w for w, _ in toks]
    missing: list[str] = []
    flipped: list[str] = []
    done: set[int] = set()
    for i, (w, neg) in enumerate(toks):
        if not w or i in done or len(w) < 2 or w in CONNECTIVES or w in skip or any(c.isdigit() for c in w):
            continue
        if w in NEGATORS and facts.negates:
            continue  # a negator is checked through the words it negates (their polarity in the ad)
        r = root(w)
        prv = words[i - 1] if i > 0 else ""
        if not neg and prv and (prv, r) in facts.neg_pairs and (prv, r) not in facts.pairs:
            flipped.append(f"'{prv} {w}' (the ad says '{facts.neg_pairs[(prv, r)]}')")
            continue
        if r in (facts.neg_roots if neg else facts.pos_roots):
            continue
        if r in facts.compounds:  # "nonslip" vs the ad's "non-slip"
            continue
        nxt = words[i + 1] if i + 1 < len(words) else ""
        prv = words[i - 1] if i > 0 else ""
        if nxt and root(w + nxt) in facts.pos_roots and root(w + nxt) not in facts.names:
            done.add(i + 1)  # "non slip" vs the ad's "nonslip" (a name like "TastePURE" stays whole)
            continue
        if prv and root(prv + w) in facts.pos_roots and root(prv + w) not in facts.names:
            continue
        if not neg and r in facts.neg_roots:
            flipped.append(f"'{w}' (the ad says '{facts.neg_roots[r]}')")
        elif neg and r in facts.pos_roots:
            flipped.append(f"'{w}' (negated in the title, not in the ad)")
        else:
            missing.append(w)
    reasons = []
    if flipped:
        reasons.append("negation: " + "; ".join(dict.fromkeys(flipped))
                       + " - the ad only has the opposite sense")
    if missing:
        reasons.append("content words not in the ad's text: " + ", ".join(dict.fromkeys(missing)))
    return reasons
