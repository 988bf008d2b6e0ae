"""The personalization step's typed config (its own module: the measures, the report and the step
all read it)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hllm_creator.config import StepConfig
from hllm_creator.creative.holdout import HELDOUT_SHARE
from hllm_creator.llm.client import LLMConfig


class PersonalizationConfig(StepConfig):
    """Config of ``hllm-creator personalization``."""

    model_dir: str
    data_dir: str
    clusters_dir: str = Field(..., description="cluster step dir: assignments.parquet, member_means.npy")
    matches: str = Field(..., description="matches.parquet or the match step dir")
    creatives: str = Field(..., description="creatives.parquet or the generate step dir")
    train_set: str | None = Field(None, description="construct's train.parquet (or its dir): held-out rows "
                                                    "for the NLL test; none = NLL not measured")
    max_ads: int | None = Field(20, ge=1, description="the first N ads of creatives.parquet")
    members_per_cluster: int | None = Field(None, ge=1, description="at most N held-out members per cluster (seeded sample); "
                                            "none = every held-out member")
    permutations: int = Field(2000, ge=0, description="random deals of each ad's served titles to its clusters "
                              "for the audience fit's permutation test (0 = no test)")
    heldout_share: float = Field(HELDOUT_SHARE, gt=0.0, le=1.0,
                                 description="the hold-out share (must match the teacher's)")
    swap_pairs: int | None = Field(None, ge=1, description="at most N (ad, cluster) pairs for the greedy swap")
    nll_rows: int = Field(128, ge=2, description="at most N held-out teacher rows for the NLL test")
    max_new_tokens: int = Field(32, ge=1, description="greedy swap titles")
    batch_size: int = Field(8, ge=1)
    bf16: bool = Field(False, description="bf16 autocast for the greedy swap titles (the NLL test stays float32)")
    slot: Literal["medoid", "mean"] = Field("medoid", description="the cluster's slot, as generate uses it: the "
                                            "member nearest the centroid (medoid) or the mean member embedding")
    bootstrap: int = Field(2000, ge=100, description="bootstrap resamples for the 95% CIs")
    seed: int = 0
    interests_top: int = Field(3, ge=1, description="top interests shown per cluster")
    judge_samples: int = Field(0, ge=0, description="cross-cluster GSB samples (0 = no judge)")
    judge_max_tokens: int = 64
    history_len: int = 10
    llm: LLMConfig = Field(default_factory=LLMConfig)
