"""Typed step configuration: one pydantic model per step, logged to MLflow as params."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict


class StepConfig(BaseModel):
    """Base for every step's config: strict fields, flat params, a stable hash."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    def flat_params(self) -> dict[str, Any]:
        return flatten(self.model_dump(mode="json"))

    def config_hash(self) -> str:
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
