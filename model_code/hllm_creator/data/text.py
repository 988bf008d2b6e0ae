"""What the Item LLM reads for an item: the one place that decides it."""

from __future__ import annotations

DESC_CHARS = 200


def item_text(item: dict, desc_chars: int = DESC_CHARS) -> str:
    """``Title: ... Brand: ... Category: ... Description: <first 200 chars>`` (empty parts left out)."""
    parts = [f"Title: {item['title']}"]
    if item.get("brand"):
        parts.append(f"Brand: {item['brand']}")
    cats = item.get("categories")
    if cats is not None and len(cats):
        parts.append(f"Category: {list(cats)[-1]}")
    desc = (item.get("description") or "").strip()
    if desc and desc_chars > 0:
        parts.append(f"Description: {desc[:desc_chars]}")
    return " ".join(parts)
