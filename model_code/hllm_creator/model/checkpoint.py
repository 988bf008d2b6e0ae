"""The model dir: what ``HLLMCreator.save`` writes and ``HLLMCreator.load`` reads.

A model dir holds ``hllm_config.json`` (the ``ModelConfig``, tied weight names, the weights hash,
the predictor's ID catalog, the prompt frame), ``model.safetensors`` (LoRA merged, the align queue
left out), ``model_hash.json``, the three backbones' ``config.json`` + tokenizers under
``<part>_llm/``, and what the caller adds (JSON files, the frozen item embeddings training used).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hllm_creator.creative.prompts import PROMPT1, PROMPT2, RESPONSE_END, SYSTEM
from hllm_creator.io import atomic_dir, sha256_file, write_json, write_parquet
from hllm_creator.llm.backbone import best_attn_implementation
from hllm_creator.model.config import ModelConfig

CONFIG_FILE = "hllm_config.json"
WEIGHTS_FILE = "model.safetensors"
ITEM_EMBEDDINGS_FILE = "item_embeddings.parquet"
PARTS = ("item", "user", "creative")


class ModelDirError(ValueError):
    """A model directory that cannot be loaded (names the dir and the missing/bad file)."""


def export_state_dict(model) -> dict[str, torch.Tensor]:
    """Weights as saved: LoRA merged (on a copy), training-only caches (the align queue) left out."""
    if hasattr(model.creative, "merge_and_unload"):
        tmp = copy.deepcopy(model)
        tmp.merge_lora()
        return export_state_dict(tmp)
    return {k: v for k, v in model.state_dict().items() if not k.startswith("queue_")}


def weights_hash(model) -> str:
    """Stable id of weights not saved yet: sha256 over the exported tensors (name + float32 bytes)."""
    h = hashlib.sha256()
    for k, v in sorted(export_state_dict(model).items()):
        h.update(k.encode())
        h.update(v.detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _untie(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """safetensors refuses shared storage (tied embeddings): each tensor once, plus {alias: stored name}."""
    seen, unique, tied = {}, {}, {}
    for k, v in sd.items():
        key = (v.data_ptr(), v.shape, v.stride()) if v.numel() else None
        if key is not None and key in seen:
            tied[k] = seen[key]
        else:
            if key is not None:
                seen[key] = k
            unique[k] = v.detach().cpu().contiguous()
    return unique, tied


def save_model_dir(model, model_dir: str | Path, *, json_files: dict[str, Any] | None = None,
                   item_embeddings: tuple[Sequence[str], Any] | None = None) -> Path:
    """``HLLMCreator.save``: the model dir written atomically (nothing half-written, nothing added
    afterwards); sets ``model._hash`` to the written weights' hash."""
    from safetensors.torch import save_file

    model_dir = Path(model_dir)
    unique, tied = _untie(export_state_dict(model))
    with atomic_dir(model_dir) as tmp:
        save_file(unique, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        model._hash = sha256_file(tmp / WEIGHTS_FILE)[:16]
        for part in PARTS:
            lm_cfg = model.creative.config if part == "creative" else getattr(model, f"{part}_llm").config
            (tmp / f"{part}_llm").mkdir()
            lm_cfg.save_pretrained(tmp / f"{part}_llm")
            model.tokenizers[part].save_pretrained(tmp / f"{part}_llm")
        write_json({"model": model.cfg.model_dump(mode="json"), "tied": tied, "model_hash": model._hash,
                    **({"predictor_items": model.predictor_items} if model.predictor_items else {}),
                    "prompts": {"system": SYSTEM, "prompt1": PROMPT1, "prompt2": PROMPT2,
                                "response_end": RESPONSE_END}},
                   tmp / CONFIG_FILE)
        write_json({"model_hash": model._hash}, tmp / "model_hash.json")
        for name, obj in (json_files or {}).items():
            write_json(obj, tmp / name)
        if item_embeddings is not None:
            import pandas as pd

            ids, emb = item_embeddings
            emb = emb.numpy() if hasattr(emb, "numpy") else np.asarray(emb)
            write_parquet(pd.DataFrame({"item_id": list(ids), "embedding": [r.astype(np.float32) for r in emb]}),
                          tmp / ITEM_EMBEDDINGS_FILE)
            write_json({"model_hash": model._hash, "note": "frozen Item LLM embeddings used in training"},
                       tmp / "item_embeddings.json")
    return model_dir


def _read_config(model_dir: Path) -> tuple[dict, ModelConfig]:
    f = model_dir / CONFIG_FILE
    if not model_dir.is_dir():
        raise ModelDirError(f"model dir {model_dir} does not exist")
    for need in [CONFIG_FILE, WEIGHTS_FILE] + [f"{p}_llm/config.json" for p in PARTS]:
        if not (model_dir / need).exists():
            raise ModelDirError(f"{model_dir} is not an HLLM-Creator model dir: missing {need}")
    try:
        meta = json.loads(f.read_text())
        # dirs saved before user_layout existed were trained with the items-first layout
        return meta, ModelConfig.model_validate({"user_layout": "items_prompt_user", **meta["model"]})
    except Exception as e:  # noqa: BLE001
        raise ModelDirError(f"{f}: bad config ({e})") from e


def load_model_dir(cls, model_dir: str | Path, device: str = "cpu"):
    """``HLLMCreator.load``: rebuild ``cls`` from a model dir (no backbone download; the architecture
    from the saved configs), in eval mode on ``device``."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    meta, cfg = _read_config(model_dir)
    lms, toks = {}, {}
    attn = best_attn_implementation() if device != "cpu" else "sdpa"
    for part in PARTS:
        c = AutoConfig.from_pretrained(model_dir / f"{part}_llm")
        c._attn_implementation = attn
        lms[part] = AutoModelForCausalLM.from_config(c)
        tok = AutoTokenizer.from_pretrained(model_dir / f"{part}_llm")
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        toks[part] = tok
    model = cls(cfg, lms["item"], lms["user"], lms["creative"], toks)
    if meta.get("predictor_items"):  # the hybrid predictor's ID catalog
        model.enable_item_ids(meta["predictor_items"])
        if cfg.predictor_text_bag:  # its buffer of catalog item vectors comes with the weights
            model.predictor.enable_text_bag(torch.zeros(len(meta["predictor_items"]), cfg.item_hidden))
    sd = load_file(str(model_dir / WEIGHTS_FILE))
    for k, src in meta.get("tied", {}).items():
        sd[k] = sd[src]
    if "logit_scale" in sd and sd["logit_scale"].dim() == 0:  # dirs saved when it was a 0-dim scalar
        sd["logit_scale"] = sd["logit_scale"].reshape(1)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    # queues are refilled; dirs saved before the fact-copy head have fact_copy off
    missing = [k for k in missing if not k.startswith("queue_") and k != "fact_copy_scale"]
    if missing or unexpected:
        raise ModelDirError(f"{model_dir / WEIGHTS_FILE}: weights do not match the config "
                            f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    model._hash = meta.get("model_hash") or None
    model.model_dir = model_dir
    return model.to(device).eval()
