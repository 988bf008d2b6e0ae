"""The HLLM-Creator model: Item LLM, User LLM, Creative LLM, Item-User predictor, fact-copy head, losses.

``from hllm_creator.model import HLLMCreator`` imports torch; the package itself does not (the
configs and prompts under it are read by light CLI paths), so these names resolve on first use.
"""

from __future__ import annotations

from hllm_creator.model.config import ModelConfig


def __getattr__(name):  # lazy: importing the package does not import torch
    if name == "HLLMCreator":
        from hllm_creator.model.hllm import HLLMCreator

        return HLLMCreator
    if name == "ModelDirError":
        from hllm_creator.model.checkpoint import ModelDirError

        return ModelDirError
    raise AttributeError(name)


__all__ = ["HLLMCreator", "ModelConfig", "ModelDirError"]
