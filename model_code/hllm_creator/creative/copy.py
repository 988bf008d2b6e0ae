"""Is a served title a copy of the original? One definition for gsb-eval, the personalization step,
generate's ``personalized`` and serving: Unicode normalization (``creative.text.normalize_text``: NFKC,
format characters dropped, look-alikes folded), casefold, only the runs of letters and digits kept,
each with a plural ending folded (``creative.words.stem``: a Creative LLM that writes "Plastics
Transfer Pipettes" for "Plastic Transfer Pipettes" has not written another title), joined by one space.
``"Glass Beaker, 250 ml"``, ``"glass beaker 250 ML!"`` and ``"Glass Beakers 250 ml"`` are copies.
"""

from __future__ import annotations

import re

from hllm_creator.creative.text import normalize_text
from hllm_creator.creative.words import stem


def normalize_title(s: str) -> str:
    """The comparison form of a title (see the module docstring)."""
    s = normalize_text(s if isinstance(s, str) else "")
    return " ".join(stem(w) for w in re.findall(r"[^\W_]+", s.casefold()))


def is_copy(title: str, original: str) -> bool:
    """True when ``title`` is the original title up to normalization (not personalized)."""
    return normalize_title(title) == normalize_title(original)
