"""Moved to ``hllm_creator.creative`` (the creative contract): this module re-exports the public names.

``Ad`` lives in ``hllm_creator.creative.ad``; the grounding gate (``gate``, ``check_grounding``,
``title_quality``, ...) in ``hllm_creator.creative.gate``.
"""

from hllm_creator.creative.ad import Ad
from hllm_creator.creative.gate import (
    KNOWN_NAMES,
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
from hllm_creator.creative.words import CONNECTIVES
from hllm_creator.creative.words import NAME_STOP as STOPWORDS

__all__ = ["Ad", "CONNECTIVES", "GroundingResult", "KNOWN_NAMES", "STOPWORDS", "catalog_names",
           "check_grounding", "gate", "is_instruction", "names_from_titles", "normalize", "normalize_text",
           "scripts_of", "support_text", "title_quality"]
