"""The ad record: the only allowed source of facts for a personalized title."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator


def _as_list(v) -> list[str]:
    if v is None:
        return []
    if hasattr(v, "tolist"):
        v = v.tolist()
    if isinstance(v, str):
        return [v]
    return [str(x) for x in v if x is not None]


class Ad(BaseModel):
    """The ad whose text is the only allowed source of facts (title, description, selling points,
    brand, categories)."""

    title: str
    description: str = ""
    selling_points: list[str] = Field(default_factory=list)
    brand: str | None = None
    categories: list[str] = Field(default_factory=list)

    @field_validator("description", mode="before")
    @classmethod
    def _none_desc(cls, v):
        return "" if v is None else v

    @field_validator("selling_points", "categories", mode="before")
    @classmethod
    def _lists(cls, v):
        return _as_list(v)

    @classmethod
    def from_item(cls, item: dict) -> Ad:
        """Build from an ``items.parquet`` row (title, description, selling_points, brand, categories)."""
        return cls(title=item["title"], description=item.get("description") or "",
                   selling_points=item.get("selling_points"),
                   brand=item.get("brand") if isinstance(item.get("brand"), str) and item.get("brand") else None,
                   categories=item.get("categories"))
