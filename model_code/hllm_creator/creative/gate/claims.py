"""Claims and sensitive attributes: a claim (free, best, #1, made in ..., warranty, ...) must be backed
by the same phrase in the ad; an age, gender or location word must be the ad's."""

from __future__ import annotations

import re

from hllm_creator.creative.words import stem

# claims: (pattern, canonical name); each must be backed by the same phrase in the ad's text
_CLAIMS = [
    (re.compile(r"#\s*1\b|\bno\.?\s*1\b|\bnumber\s*(?:one|1)\b|\b(?:1st|first)[- ]choice\b"), "rank claim"),
    (re.compile(r"\bmade\s+in\s+(?:the\s+)?(?:u\.?\s?s\.?(?:a\.?)?(?![a-z])|[a-z]+)"), "origin claim"),
    (re.compile(r"\b(?:loved|trusted|used|chosen|preferred|recommended)\s+by\s+(?:over\s+)?"
                r"(?:millions|thousands|hundreds|pros|professionals|experts|doctors|dentists|vets|scientists|"
                r"engineers|everyone|customers|\d[\d,]*\+?)\b"
                r"|\b(?:millions|thousands)\s+of\s+(?:happy\s+|satisfied\s+)?(?:customers|users|buyers|fans)\b"
                r"|\b(?:customer|fan|crowd)[- ]favou?rite\b|\bas seen on\b|\bhighly[- ]rated\b"
                r"|\b(?:doctor|dentist|expert|vet|pro)[- ]recommended\b|\bmost[- ]popular\b|\bbest[- ]?in[- ]class\b"),
     "popularity claim"),
    (re.compile(r"\b100\s*%\s*(?:customer\s+)?satisf\w*|\bsatisfaction\b"), "satisfaction claim"),
    (re.compile(r"\bfree\b"), "free claim"),
    (re.compile(r"\bbest(?:[- ]?sell(?:ing|ers?))?\b"), "best claim"),
    (re.compile(r"\bguarantee[ds]?\b"), "guarantee claim"),
    (re.compile(r"\btop[- ]?(?:rated|selling|quality|\d+)\b"), "rating claim"),
    (re.compile(r"\b(?:cheapest|lowest price|low price|bargain|clearance|discount(?:ed)?|on sale|sale|deal|"
                r"save|savings|\d+\s*% off|half price)\b"), "price claim"),
    (re.compile(r"\blimited[- ](?:time|edition|offer|stock)\b|\bhurry\b|\btoday only\b"), "urgency claim"),
    (re.compile(r"\b(?:official(?:ly)?|authentic|genuine|certified|approved|fda|patented|licensed)\b"),
     "authority claim"),
    (re.compile(r"\b(?:clinically|scientifically|lab)[- ]?(?:proven|tested)\b|\bproven\b"), "proof claim"),
    (re.compile(r"\baward[- ]?winning\b|\bworld'?s\b|\bultimate\b|\bunbeatable\b|\bleading\b|\b#1\b"),
     "superlative"),
    (re.compile(r"\b(?:safest|strongest|fastest|cheapest|finest|greatest|toughest|brightest|longest|"
                r"smartest|healthiest|most\s+\w+)\b"), "superlative"),
    (re.compile(r"\b(?:warranty|money[- ]back|refund|risk[- ]free|lifetime)\b"), "warranty claim"),
    (re.compile(r"\b(?:cure[sd]?|heal[s]?|miracle|instant(?:ly)?|100\s*% (?:safe|effective))\b"), "efficacy claim"),
    (re.compile(r"\b(?:bonus|prize|giveaway|sweepstakes|winner)\b"), "giveaway claim"),
]

_SENSITIVE = [
    re.compile(r"\b(?:men|man|women|woman|male|female|males|females|ladies|lady|gentlemen|gentleman|guys|gals|"
               r"boys|boy|girls|girl|he|she|him|her|his|hers|mom|moms|mother|mothers|dad|dads|father|fathers|"
               r"husband|wife|grandma|grandpa|grandparents?|granny)\b"),
    re.compile(r"\b(?:seniors?|elderly|retirees?|retired|teens?|teenagers?|millennials?|boomers?|gen[- ]?z|"
               r"kids?|children|child|toddlers?|babies|baby|adults?|youth|aged?|young|old)\b"),
    re.compile(r"\b\d+\s*-?\s*(?:year|yr)s?\s*-?\s*olds?\b|\b\d0s\b|\bover\s+\d+\b"),
    re.compile(r"\b(?:local|locals|nearby|near you|neighbou?rhood|hometown|in your (?:city|town|area|state|country)|"
               r"americans?|usa|u\.s\.a?|texas|california|florida|new york|london|europe|european|asian|"
               r"canada|canadian|uk|british|mexico|mexican|china|chinese|india|indian|japan|japanese)\b"),
]


def _phrase_supported(title_norm: str, span: tuple[int, int], source: str) -> bool:
    """A one-word claim at ``span`` is backed when it occurs in ``source`` with the title's word before
    it, or with the title's (up to) two words after it, or alone when it has no neighbour; a claim
    phrase of two or more words ("made in usa", "best seller") is backed by the phrase itself."""
    claim = title_norm[span[0]:span[1]]
    if not re.search(rf"(?<![a-z0-9]){re.escape(claim)}(?![a-z0-9])", source):
        return False
    tok = re.compile(r"[a-z0-9]+")
    src_words = tok.findall(source)
    before = tok.findall(title_norm[:span[0]])
    after = tok.findall(title_norm[span[1]:])
    claim_words = tok.findall(claim)
    if len(claim_words) < 2 and not re.fullmatch(r"[a-z]+", claim):  # "#1", "no. 1"
        return True
    if len(claim_words) >= 2:  # a phrase ("made in usa", "best seller") is backed by the phrase itself
        return True
    candidates = []
    if before:
        candidates.append([before[-1], *claim_words])
    if after:  # after the claim, two words: "free flir tools" in the ad does not back "FREE FLIR E8"
        candidates.append([*claim_words, *after[:2]])
    if not candidates:
        return True
    joined = " " + " ".join(src_words) + " "
    src_stem = " " + " ".join(stem(w, keep_us_is=False) for w in src_words) + " "
    for cand in candidates:
        variants = {" ".join(cand), " ".join(stem(c, keep_us_is=False) for c in cand)}
        if any(f" {v} " in joined or f" {v} " in src_stem for v in variants):
            return True
    return False



def claim_reasons(t: str, src: str, flagged: set[str]) -> list[str]:
    """Claims of the normalized title ``t`` that the ad's text ``src`` does not back in the same phrase
    (``Lead-Free`` in the ad backs ``Lead-Free``, not ``FREE iPhone``); their words go to ``flagged``."""
    reasons = []
    t_c = t.replace("-", " ")  # "Made-in-China" is "made in china"
    src_c = None
    for pat, kind in _CLAIMS:
        for m in pat.finditer(t_c):
            if src_c is None:
                src_c = src.replace("-", " ")
            if not _phrase_supported(t_c, m.span(), src_c):
                reasons.append(f"{kind} '{m.group(0)}' is not backed by the ad")
                flagged.update(re.findall(r"[a-z0-9]+", m.group(0)))
    return reasons


def sensitive_reasons(t: str, src: str, claimed: set[str], flagged: set[str]) -> list[str]:
    """Age, gender and location words of ``t`` that ``src`` lacks (a phrase already reported as a
    claim, ``claimed``, is not reported again); their words go to ``flagged``."""
    reasons = []
    for pat in _SENSITIVE:
        for m in pat.finditer(t):
            phrase = m.group(0)
            if set(re.findall(r"[a-z0-9]+", phrase)) <= claimed:
                continue  # "made in usa": already reported as a claim
            if not re.search(rf"(?<![a-z0-9]){re.escape(phrase)}(?![a-z0-9])", src):
                reasons.append(f"mentions age/gender/location ('{phrase}') not in the ad")
                flagged.update(re.findall(r"[a-z]+", phrase))
    return reasons
