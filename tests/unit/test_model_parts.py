"""The seams of HLLMCreator: which part each parameter trains with, the fact-copy head's (absent)
state, the model dir's weight names, the predictor's ID catalog."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from hllm_creator.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from hllm_creator.model.hllm import HLLMCreator

# every trainable top-level name outside the three backbones: what the trainer gives the head rate
HEADS = {"item_token", "user_token", "item_to_user", "projector", "profile_projector", "align_projector",
         "logit_scale", "fact_copy_scale", "predictor"}


@pytest.fixture(scope="module")
def model():
    from helpers import tiny_model

    m = tiny_model(seed=0, fact_copy=True)
    m.enable_item_ids([f"i{k}" for k in range(6)], recent=2)
    return m


def test_param_part_names_the_backbone_or_the_head(model):
    parts = {n: model.param_part(n) for n, _ in model.named_parameters()}
    assert {n.split(".")[0] for n, p in parts.items() if p == "head"} == HEADS
    for n, p in parts.items():
        top = n.split(".")[0]
        assert p == (top if top in HLLMCreator.BACKBONES else "head"), n
    assert {"item_llm", "user_llm", "creative"} <= set(parts.values())


def test_param_part_sees_through_lora(model):
    import copy

    from peft import LoraConfig, get_peft_model

    m = copy.deepcopy(model)
    m.creative = get_peft_model(m.creative, LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, task_type="CAUSAL_LM",
                                                       target_modules=["q_proj", "v_proj"]))
    lora = [n for n, p in m.named_parameters() if p.requires_grad and "lora_" in n]
    assert lora and {m.param_part(n) for n in lora} == {"creative"}


def test_fact_copy_head_holds_no_state_and_the_dir_keeps_every_weight_name(model, tmp_path):
    assert not list(model.fact_copy_head.state_dict()) and not list(model.fact_copy_head.parameters())
    assert "fact_copy_scale" in dict(model.named_parameters())
    d = model.save(tmp_path / "m")
    with safe_open(str(d / WEIGHTS_FILE), framework="pt") as f:
        stored = set(f.keys())
    tied = json.loads((d / CONFIG_FILE).read_text())["tied"]
    expected = {k for k in model.state_dict() if not k.startswith("queue_")}
    assert stored | set(tied) == expected and not stored & set(tied)
    back = HLLMCreator.load(d)
    assert list(back.state_dict()) == list(model.state_dict())
    for k, v in model.state_dict().items():
        if not k.startswith("queue_"):
            assert torch.equal(back.state_dict()[k], v), k


def test_predictor_catalog_switches_off_and_back(model):
    hist = [["i1", "i0"], ["nope"]]
    on = model.recent_index(hist)
    assert on.tolist() == [[1, 0], [6, 6]] and model.item_index(["i3", "x"]).tolist() == [3, 6]
    keep = model.predictor_items
    model.predictor_items = None
    try:
        assert model.recent_index(hist) is None and model.item_index(["i3"]) is None
    finally:
        model.predictor_items = keep
    assert torch.equal(model.recent_index(hist), on)
    with pytest.raises(ValueError, match="twice"):
        model.enable_item_ids(["a", "a"])


def test_inference_entry_points_show_their_options():
    """infer.generate and the personalization swap read ``batch_size`` / ``autocast_bf16`` from these
    signatures before passing them: a ``**kw`` wrapper would drop the options silently."""
    import inspect

    for name in ("generate", "encode_items", "encode_users"):
        params = inspect.signature(getattr(HLLMCreator, name)).parameters
        assert {"batch_size", "autocast_bf16"} <= set(params), name


def test_title_gain_leaves_the_shared_catalog_alone(model):
    """The server's per-request do-no-harm estimate scores an ad outside the catalog without switching
    the shared model's ID catalog off and on (a rebuild of its index per request)."""
    import numpy as np

    from hllm_creator.infer.harm import title_gain

    catalog = model.predictor.catalog
    ad = {"title": "Gorilla Glue Stick, 2 Pack", "description": "", "selling_points": ["dries clear"]}
    g = title_gain(model, np.zeros(model.user_hidden_size, dtype="float32"), ad, "Gorilla Glue Stick, Dries Clear")
    assert np.isfinite(g) and model.predictor.catalog is catalog
