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


def small_dataset(out_dir: str | Path, n_users: int = 150, seed: int = 0, source_dir: str | Path | None = None):
    """A small real dataset dir: ``n_users`` seeded users of the bundled data and the items they touched.

    Fast unit tests of training/inference (the full catalog has 4,344 items and 8,317 users).
    """
    import numpy as np

    from hllm_creator.data.prepare import prepare, prepare_bundled
    from hllm_creator.data.schema import load_dataset

    out_dir = Path(out_dir)
    src = load_dataset(source_dir) if source_dir else prepare_bundled(out_dir.with_name(out_dir.name + ".full"))
    inter = src.interactions
    users = np.sort(inter["user_id"].unique())
    pick = set(np.random.default_rng(seed).choice(users, size=min(n_users, len(users)), replace=False).tolist())
    sub = inter[inter["user_id"].isin(pick)]
    items = src.items[src.items["item_id"].isin(set(sub["item_id"]))]
    return prepare(items.reset_index(drop=True), sub.reset_index(drop=True), out_dir,
                   name=f"small-{n_users}", source=f"subset of {src.path}", license="see bundled data")
