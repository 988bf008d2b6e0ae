"""The words of creative/: the one stop set, the one stemmer, and how every other word list and stem
relates to them.

- ``STOP``: function words (articles, prepositions, conjunctions, pronouns, auxiliaries, quantifiers)
  that carry no content. Fact phrases, the copy test's inputs and the user's interests are made of
  the words outside it (``creative.facts.content_words``).
- The gate's lists are ``STOP`` with named differences, each for a reason said where it is defined:
  ``CONNECTIVES`` (what a title may say without the ad's support), ``NAME_STOP`` (words that are never
  a brand or product name), ``TITLE_STOP`` (the glue a title shares with any other), ``TRAILING`` and
  ``EDGE_DROP`` (what a title or a phrase cannot end with).
- ``stem(w)``: the plural fold (``pipettes`` -> ``pipette``, ``boxes`` -> ``box``, ``batteries`` ->
  ``battery``; ``glass``, ``cactus``, ``analysis`` kept). ``stem(w, keep_us_is=False)`` is the looser
  fold of the gate's name and claim rules (``status`` -> ``statu``): those rules match a title's word
  against the ad's words AND their stems, and the looser fold is what their verdicts were measured
  with (``Wifis`` is reported as the known name ``wifi``).
- ``root(w)``: the stem the gate's content-word rule compares on both sides: the plural fold plus
  -ed, -ing, -er, -ly, a final e and a doubled consonant (``sealing`` ~ ``sealer`` ~ ``seal``). It is a
  deliberately looser match than ``stem``: a title may inflect the ad's words, but a copy of the
  original with "Sealing" for "Sealer" is another title (``creative.copy``).
"""

from __future__ import annotations

import functools
import re

# a word as the gate reads it: letters and digits, inner apostrophes and hyphens kept ("non-slip", "it's")
WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'-]*")

STOP = frozenset("""a an and or but nor for to of in on at by with from into as is are was were be been it its
this that these those your you our we us my me i he she they them their all any each both more most other some
such no not only so than too very can will just also has have had do does up out off over under per via w
""".split())

# Words a title may carry without the ad's support. Not in it, although in STOP: the negators (a title's
# "no"/"not" is checked through the words it negates), the degree and quantity words that make a claim
# ("more", "most", "only", "very", ...), the auxiliaries of a statement ("has", "does"), "he"/"she"/"i"
# (a person the ad does not speak of) and the abbreviation "w". Added: "the", the prepositions of place
# and time, "plus"/"vs", "x" (of sizes), "etc", the possessives "her"/"his"/"ours"/"yours", "every".
CONNECTIVES = (STOP - {"no", "not", "more", "most", "only", "other", "some", "such", "so", "too", "very",
                       "just", "also", "do", "does", "has", "have", "had", "he", "she", "i", "w"}) | frozenset("""
the about across after along around before between during inside outside through toward towards within onto
plus vs versus x etc every her his ours yours""".split())

# Words that are never a brand or product name (a title's capitalized "Best" or "Kit" names nothing):
# STOP less the auxiliaries and abbreviations that may be part of a name, plus "the", a few more function
# words and the generic words of product titles.
NAME_STOP = (STOP - {"also", "do", "does", "had", "has", "have", "per", "via", "w"}) | frozenset("""
the being down every few her his onto own plus same should now
new use used using get gets make makes made keep keeps let lets ideal perfect great easy best top pro diy kit set
tool tools one two""".split())

# The glue any two titles share, left out when asking whether a title names the product (shares a word
# of 3+ letters with the original): a narrower list than STOP, so a shared "other" or "under" counts.
TITLE_STOP = frozenset("""a an and are as at be but by for from has have in is it its of on or so that the this
to too was were will with you your our we can very just""".split())

# Words a title cannot end with (it was cut off mid-phrase): the articles, prepositions and conjunctions
# of STOP that need a word after them, "the", "plus", "onto", "without" and the possessives.
TRAILING = frozenset("""a an the and or nor but for with without in on at by of to from into onto via per as
than your our their its my is are that this plus""".split())

# What a fact phrase is trimmed of at its edges (a phrase does not end with "the" or start with "of").
EDGE_DROP = frozenset("a an and or but nor to of in on at by as is are was were be it its this that the with for "
                      "from into than so very also w".split())


def stem(w: str, *, keep_us_is: bool = True) -> str:
    """The plural fold of a word, lower-cased (see the module docstring). ``keep_us_is=False``: the
    gate's name and claim rules' looser fold, which also takes the s of -us/-is words."""
    w = w.lower().removesuffix("'s")
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 3 and w.endswith("es") and w[-3] in "sxz":
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is") if keep_us_is else "ss"):
        return w[:-1]
    return w


@functools.lru_cache(maxsize=65536)
def root(w: str) -> str:
    """The content-word root (see the module docstring): plural, -ed, -ing, -er, -ly and a final
    e/doubled consonant stripped (``coils``/``coil``, ``sealing``/``sealer``/``seal``, ``cutting``/``cut``,
    ``uses``/``used``/``use``, ``highly``/``high``). The plural step differs from ``stem``
    (apostrophes dropped rather than "'s"; -ches/-shes folded), as the gate's verdicts were measured."""
    w = w.lower().replace("'", "")
    if len(w) <= 3:
        return w
    if w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith("sses"):
        w = w[:-2]
    elif w.endswith(("ches", "shes", "xes", "zes")):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    for suf in ("ing", "ied", "ed", "er", "ly"):
        if w.endswith(suf) and len(w) - len(suf) >= 3:
            w = w[:-len(suf)] + ("y" if suf == "ied" else "")
            break
    if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "aeiouls":
        w = w[:-1]
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    return w
