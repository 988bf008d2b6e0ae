"""The backbone loader: tiny config, bundled SmolLM2, truncation, attention choice, errors."""

from __future__ import annotations

import time

import pytest
import torch

from hllm_creator.llm import backbone


def test_tiny_llama_uses_smollm2_tokenizer():
    b = backbone.load_causal_lm("tiny-llama")
    assert b.model.config.hidden_size == 64 and b.n_layers == 2
    assert b.model.config.vocab_size == len(b.tokenizer) == 49152
    ids = b.tokenizer("Nitrile gloves, 100 count", return_tensors="pt")
    out = b.model(**ids)
    assert out.logits.shape == (1, ids["input_ids"].shape[1], 49152)
    # deterministic random init given the seed
    b2 = backbone.load_causal_lm("tiny-llama")
    assert torch.equal(b.model.lm_head.weight, b2.model.lm_head.weight)


def test_bundled_smollm2_truncated_and_pull_is_noop():
    d = backbone.pull()
    info = backbone.describe(d)
    assert len(info["sha256"]) == 64
    t0 = time.time()
    assert backbone.pull() == d and time.time() - t0 < 1.0  # second call: no-op
    b = backbone.load_causal_lm("smollm2-135m-instruct", n_layers=3)
    assert b.n_layers == 3 and len(b.model.model.layers) == 3 and b.model.config.hidden_size == 576
    assert b.tokenizer.chat_template
    # an HF dir path loads the same model
    b2 = backbone.load_causal_lm(str(d), n_layers=1)
    assert torch.equal(b2.model.model.embed_tokens.weight, b.model.model.embed_tokens.weight)


def test_attn_implementation_on_cpu_is_sdpa():
    assert backbone.best_attn_implementation() == "sdpa"
    b = backbone.load_causal_lm("tiny-llama")
    assert b.model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("name", ["Qwen/Qwen3-8B", "/nonexistent/dir", "smollm3"])
def test_unknown_backbone_is_a_clear_error(name):
    with pytest.raises(backbone.BackboneError, match="nothing is downloaded"):
        backbone.resolve(name)


def test_truncation_bounds():
    b = backbone.load_causal_lm("tiny-llama")
    with pytest.raises(backbone.BackboneError, match="out of range"):
        backbone.truncate_layers(b.model, 5)
