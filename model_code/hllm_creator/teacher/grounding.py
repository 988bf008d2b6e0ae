"""Moved to ``hllm_creator.creative`` (the creative contract): this module re-exports the public names.

``Ad`` lives in ``hllm_creator.creative.ad``; the grounding gate (``gate``, ``check_grounding``,
``title_quality``, ...) in ``hllm_creator.creative.grounding``.
"""

from hllm_creator.creative.ad import Ad
from hllm_creator.creative.grounding import (
    CONNECTIVES,
    KNOWN_NAMES,
    STOPWORDS,
    GroundingResult,
    catalog_names,
    check_grounding,
    gate,
    is_instruction,
    names_from_titles,
    normalize,
    support_text,
    title_quality,
)
from hllm_creator.creative.text import normalize_text, scripts_of

__all__ = ["Ad", "CONNECTIVES", "GroundingResult", "KNOWN_NAMES", "STOPWORDS", "catalog_names",
           "check_grounding", "gate", "is_instruction", "names_from_titles", "normalize", "normalize_text",
           "scripts_of", "support_text", "title_quality"]
