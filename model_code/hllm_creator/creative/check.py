"""The one serving check of a title, used by construct, generate and serving alike."""

from __future__ import annotations

from typing import Any


def title_reasons(title: str, ad: Any, known_names=None) -> list[str]:
    """Why ``title`` cannot be served for ``ad`` (an items row / dict / ``Ad``); [] = servable.
    The gate: every content word from the ad, no claims or other brands, no repetition, not cut
    off, short, and a usable title of this product."""
    from hllm_creator.creative.ad import Ad
    from hllm_creator.creative.grounding import gate

    a = ad if isinstance(ad, Ad) else Ad.from_item(dict(ad))
    if not (title or "").strip():
        return ["empty output"]
    return list(gate(title, a, known_names=known_names, original_title=a.title).reasons)
