"""What the benchmarks share: the repo root, the results folder, the machine record, the bundled
dataset and the demo-architecture model. Outside the library on purpose: nothing the product runs
needs it. Run the benchmarks as modules from the repo root (``python -m benchmarks.speed.kmeans``),
so ``benchmarks`` and ``tests`` import as packages without touching ``sys.path``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

from hllm_creator.data import load_dataset
from hllm_creator.data.prepare import prepare_bundled
from hllm_creator.io import write_json
from hllm_creator.paths import work_dir

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT / "benchmarks" / "results"  # the figures the docs cite
# where a run writes: `make bench` points it elsewhere, so its quick runs leave the recorded figures alone
RESULTS = Path(os.environ.get("HLLM_BENCH_RESULTS") or RECORDED)


def machine() -> dict:
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else (None,)
    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "loadavg_1m_at_start": round(load[0], 2) if load[0] is not None else None,
            "note": "shared 2-core machine: other jobs ran at the same time; figures are wall-clock"}


def save(name: str, result: dict) -> Path:
    result = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **result}
    result.setdefault("machine", machine())
    result["machine"]["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    p = write_json(result, RESULTS / f"{name}.json")
    print(json.dumps(result, indent=2, default=str))
    print(f"wrote {p}")
    return p


def dataset(path: str | None):
    """The bundled dataset (prepared into the work dir once) or a given dataset dir."""
    if path:
        return load_dataset(path)
    d = work_dir() / "data" / "amazon_scientific"
    if (d / "manifest.json").exists():
        return load_dataset(d)
    return prepare_bundled(d)


def model(model_dir: str | None, *, creative: str = "smollm2-135m-instruct"):
    """A trained model dir when given; else an untrained model of the train ``demo`` architecture
    (SmolLM2 first 2 layers as Item and User LLM, ``creative`` as Creative LLM). Speed does not
    depend on training, only on the architecture."""
    from hllm_creator.model import HLLMCreator, ModelConfig  # torch and transformers: only the model benchmarks

    if model_dir:
        return HLLMCreator.load(model_dir), str(model_dir)
    cfg = ModelConfig(item_llm="smollm2-135m-instruct", item_layers=2, user_llm="smollm2-135m-instruct",
                      user_layers=2, creative_llm=creative, max_history=20, item_max_tokens=32)
    return HLLMCreator.from_config(cfg).eval(), f"untrained demo architecture (creative: {creative})"
