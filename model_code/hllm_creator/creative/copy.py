"""Is a served title a copy of the original? One definition for gsb-eval and the personalization
step, the same key as ``creative.titles.same_title`` (generate's ``personalized``) after Unicode
normalization: NFKC (and the contract's look-alike folding when ``creative.text`` is present),
format characters dropped, casefold, only the runs of letters and digits kept, joined by one space.
``"Glass Beaker, 250 ml"`` and ``"glass beaker 250 ML!"`` are copies.
"""

from __future__ import annotations

import re
import unicodedata


def normalize_title(s: str) -> str:
    """The comparison form of a title (see the module docstring)."""
    s = s if isinstance(s, str) else ""
    try:
        from hllm_creator.creative.text import normalize_text
    except ImportError:
        normalize_text = None
    if normalize_text is not None:
        s = normalize_text(s)
    else:
        s = unicodedata.normalize("NFKC", s)
        s = "".join(ch for ch in s if unicodedata.category(ch) != "Cf")
    return " ".join(re.findall(r"[^\W_]+", s.casefold()))


def is_copy(title: str, original: str) -> bool:
    """True when ``title`` is the original title up to normalization (not personalized)."""
    return normalize_title(title) == normalize_title(original)
