"""The HLLM-Creator model (issue 4): Item LLM, User LLM, Creative LLM, Item-User predictor, losses.

``from hllm_creator.model import HLLMCreator`` (imports torch; keep it out of CLI import paths).
"""

from __future__ import annotations


def __getattr__(name):  # lazy: importing the package does not import torch
    if name in ("HLLMCreator", "ModelDirError"):
        from hllm_creator.model import hllm

        return getattr(hllm, name)
    if name == "ModelConfig":
        from hllm_creator.model.config import ModelConfig

        return ModelConfig
    raise AttributeError(name)


__all__ = ["HLLMCreator", "ModelConfig", "ModelDirError"]
