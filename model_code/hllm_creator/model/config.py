"""The model's architecture config: everything needed to rebuild an HLLMCreator from a model dir."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hllm_creator.config import StepConfig


class ModelConfig(StepConfig):
    """Backbones, truncation and head sizes of the hierarchical model (saved as ``hllm_config.json``)."""

    item_llm: str = Field("tiny-llama", description="Item LLM backbone: smollm2-135m-instruct, tiny-llama or an HF dir")
    item_layers: int | None = Field(None, ge=1, description="keep the first N decoder layers of the Item LLM")
    user_llm: str = Field("tiny-llama", description="User LLM backbone")
    user_layers: int | None = Field(None, ge=1, description="keep the first N decoder layers of the User LLM")
    creative_llm: str = Field("tiny-llama", description="Creative LLM backbone (also the recon/align decoder)")
    creative_layers: int | None = Field(None, ge=1, description="keep the first N decoder layers of the Creative LLM")
    max_history: int = Field(50, ge=1, description="the User LLM reads at most the last N items")
    item_max_tokens: int = Field(64, ge=4, description="item text truncated to N tokens before [ITEM]")
    user_prompt: str = Field("The items this user clicked, oldest first:",
                             description="the User LLM's text prompt (placed per user_layout)")
    user_layout: Literal["prompt_items_user", "items_prompt_user"] = Field(
        "prompt_items_user", description="order of the User LLM input. prompt_items_user (default) puts the "
        "newest item right before [USER], where a pretrained LLM's local attention carries it; "
        "items_prompt_user is DESIGN's original order (model dirs saved before this field load with it)")
    recon_prompt: str = Field(" Describe this user's interests:",
                              description="text after the profile slot; the decoder then regenerates the profile")
    projector: Literal["linear", "mlp"] = "mlp"
    predictor_dim: int = Field(128, ge=4, description="user_tower / item_tower output size")
    predictor_hidden: int = Field(256, ge=4, description="hidden size of the predictor's MLP head")
    predictor_head: Literal["mlp", "mixer", "dot"] = Field(
        "mlp", description="mlp: MLP over [u, i, u*i] + scaled dot; mixer: one MLP-Mixer block; dot: cosine of "
        "the tower outputs times a learnable scale (what a sampled-softmax next-item objective trains)")
    item_pooling: Literal["item_token", "mean"] = Field(
        "item_token", description="item embedding = the Item LLM's hidden state at [ITEM] (paper), or the mean "
        "of its last hidden states over the item's tokens (better when the Item LLM is frozen: the [ITEM] "
        "query is then never trained)")
    predictor_ids: bool = Field(False, description="hybrid predictor: learned ID vectors of the training catalog's "
                                "items added to both towers (item side: the item's own; user side: a "
                                "recency-weighted sum over the last predictor_recent clicks), trained in the "
                                "predictor fit; items outside the catalog fall back to the LLM towers")
    predictor_recent: int = Field(8, ge=1, description="clicks the hybrid predictor's user-side ID part reads")
    predictor_text_bag: bool = Field(False, description="hybrid predictor: the user-side part also adds a "
                                     "recency-weighted sum of item_tower(Item LLM vector) of the same last clicks "
                                     "(the history's content in the space a new ad is scored in; cold start, "
                                     "docs/train.md); needs predictor_ids and a frozen Item LLM")
    align_temperature: float = Field(0.05, gt=0, description="initial InfoNCE temperature (scale 1/T)")
    align_max_scale: float = Field(100.0, gt=0, description="clamp of the learnable InfoNCE scale")
    false_negative_cos: float = Field(0.99, description="mask negatives whose cosine to the positive exceeds this")
    align_queue: int = Field(32, ge=0, description="detached past embeddings used as extra align negatives "
                                                   "(makes batch size 1 work); 0 = off")
    fact_copy: bool = Field(False, description="the fact-copy head: the slot's pointer over the facts the prompt "
                            "lists (the slot-fact head) adds scale * (p_j - 1/F) to the logits of fact j's tokens at "
                            "every response position, so the user embedding moves the decoder's choice directly "
                            "(docs/train.md); off = the paper's single slot")
    fact_copy_init: float = Field(2.0, ge=0, description="initial fact-copy scale (trained; refit after training)")
    # filled by the builder
    item_hidden: int | None = None
    user_hidden: int | None = None
    creative_hidden: int | None = None
    prompt_version: str | None = None
