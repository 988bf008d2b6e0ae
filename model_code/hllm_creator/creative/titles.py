"""The one title cleaner: what any Creative-LLM or teacher output goes through before the gate."""

from __future__ import annotations

import re

_QUOTES = "\"'\u201c\u201d\u2018\u2019`*"


def clean_title(text: str) -> str:
    """First non-empty line, without a list marker, a leading ``Title:`` label and surrounding quotes;
    whitespace folded."""
    for line in (text or "").splitlines():
        line = line.strip().strip(_QUOTES).strip()
        line = re.sub(r"^([-*\u2022]|\d+[.)])\s+", "", line).strip().strip(_QUOTES).strip()
        line = re.sub(r"^(personalized\s+)?(ad\s+)?title\s*(for this user)?\s*[:\-]\s*", "", line, flags=re.I)
        line = " ".join(line.strip().strip(_QUOTES).split())
        if line:
            return line
    return ""

