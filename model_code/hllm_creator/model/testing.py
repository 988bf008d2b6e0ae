"""Helpers for other areas' tests: a tiny (random, tiny-llama) HLLM-Creator model dir in ~2 s."""

from __future__ import annotations

from pathlib import Path


def tiny_model(seed: int = 0, **overrides):
    """An untrained tiny-llama HLLMCreator (hidden 64, 2 layers per LLM; SmolLM2 tokenizer)."""
    from hllm_creator.model.config import ModelConfig
    from hllm_creator.model.hllm import HLLMCreator

    cfg = ModelConfig(item_llm="tiny-llama", user_llm="tiny-llama", creative_llm="tiny-llama",
                      predictor_dim=32, predictor_hidden=64, **overrides)
    return HLLMCreator.from_config(cfg, seed=seed)


def tiny_model_dir(path: str | Path, seed: int = 0, **overrides) -> Path:
    """Build an untrained tiny-llama HLLMCreator and save it as a model dir at ``path``.

    Loads with ``HLLMCreator.load(path)``; has the same files as a trained dir, plus an
    ``eval.json`` marked ``"untrained": true``.
    """
    m = tiny_model(seed=seed, **overrides)
    m.extra_files = {"eval.json": {"untrained": True, "note": "tiny random model for tests"}}
    return m.save(path)
