"""The config of ``hllm-creator refresh`` (:mod:`hllm_creator.publish.refresh`), in a module of its own:
the CLI builds its options from it, and ``hllm-creator --help`` must not import the refresh's
steps (torch, the models)."""

from __future__ import annotations

import warnings
from typing import Literal

from pydantic import Field

from hllm_creator.config import StepConfig
from hllm_creator.creative.holdout import HELDOUT_SHARE

# the field ``register`` shadows abc's ``register`` of every pydantic model class: meant, and the CLI
# imports this config for its options, so pydantic's warning would open every command's output
warnings.filterwarnings("ignore", message='Field name "register" in "RefreshConfig"', category=UserWarning)


class RefreshConfig(StepConfig):
    """Config of ``hllm-creator refresh``."""

    feed: str = Field(..., description="the ad feed: CSV, TSV, JSONL or parquet (data.feed's contract)")
    data_dir: str = Field(..., description="the dataset dir the bundle was trained on (its interactions: the "
                                           "users the clusters were made of)")
    bundle: str = Field(..., description="the served bundle dir (a downloaded models:/... is one)")
    top_k: int = Field(3, ge=1, description="clusters selected per ad")
    threshold: float | None = Field(None, ge=0.0, le=1.0)
    select: Literal["generated", "slot"] = Field("generated", description="generate's `select` (what is served)")
    max_new_tokens: int = Field(40, ge=1)
    batch_size: int = Field(16, ge=1, description="generations per Creative LLM call (generate and the "
                            "personalization swap)")
    bf16: bool = Field(False, description="bf16 autocast for the Creative LLM")
    judge_samples: int = Field(0, ge=0, description="GSB samples of the new ads' titles (0 = no GSB; needs a judge)")
    personalization: bool = Field(True, description="personalization figures of the new ads on held-out users")
    heldout_share: float = Field(HELDOUT_SHARE, gt=0.0, le=1.0)
    permutations: int = Field(2000, ge=0)
    max_ads: int = Field(200, ge=1, description="personalization: the first N new ads")
    swap_pairs: int | None = Field(32, ge=1, description="personalization: at most N pairs for the greedy slot swap "
                                   "(two generations each; None = all)")
    register: bool = Field(True, description="register the new bundle (alias candidate)")
