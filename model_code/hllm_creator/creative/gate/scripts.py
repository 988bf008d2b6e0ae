"""What a title shows beyond its words: letters of a script the ad does not use (a Cyrillic look-alike in
a Latin ad, seen before folding), symbols the ad does not have, and markup."""

from __future__ import annotations

import re
import unicodedata

from hllm_creator.creative.gate.adfacts import AdFacts
from hllm_creator.creative.gate.support import MARKUP
from hllm_creator.creative.text import nfkc, scripts_of


def _script_reason(title: str, facts: AdFacts) -> str | None:
    """Letters of a script the ad does not use, or a word mixing scripts the ad lacks (before folding)."""
    raw = nfkc(title)
    if raw.isascii():
        return None
    extra = scripts_of(raw) - facts.scripts
    for w in re.findall(r"\w+", raw):
        ws = scripts_of(w)
        if (ws & extra) or (len(ws) > 1 and w.lower() not in facts.raw_words):
            what = ", ".join(sorted(ws - {"Latin"} or ws))
            ad_has = ", ".join(sorted(facts.scripts)) or "no letters"
            return (f"mixed scripts: '{w}' has {what} letters (look-alikes?) but the ad's text is {ad_has}"
                    if extra else f"mixed scripts: '{w}' mixes {' and '.join(sorted(ws))} letters, not so in the ad")
    return None


def script_reasons(title: str, raw: str, facts: AdFacts) -> list[str]:
    """Mixed scripts of ``title`` (as given), and symbols and markup of ``raw`` (``title`` normalized,
    case kept) that the ad does not have."""
    reasons = []
    sr = _script_reason(title, facts)
    if sr:
        reasons.append(sr)
    if not raw.isascii():
        syms = [c for c in dict.fromkeys(raw) if not c.isascii() and unicodedata.category(c) == "So"
                and c not in facts.symbols]
        if syms:
            reasons.append(f"symbols not in the ad: {' '.join(syms)}")
    if MARKUP.search(raw):
        reasons.append(f"markup in the title: '{MARKUP.search(raw).group(0)}'")
    return reasons
