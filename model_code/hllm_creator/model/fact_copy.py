"""The fact-copy head (``ModelConfig.fact_copy``): the user slot points at the facts the prompt lists,
and the Creative LLM's next-token logits get a bias toward the tokens of the fact it points at.

The pointer: over each row's F facts, ``softmax_j cos(slot, e_j) / T`` with ``e_j`` the mean input
embedding of fact j's tokens (the input embeddings are not trained, so the slot learns to point in
the Creative LLM's own word space). The bias: ``scale * sum_j (p_j - 1/F) [token in fact j]``: a
token in every fact, a row with one fact, or a uniform pointer add nothing.

The head owns no weights: its one learned number, the scale, is the composed model's
``fact_copy_scale`` (its name in every saved model dir), passed in where the bias is made.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hllm_creator.model.collate import FactBatch


class FactCopyHead(nn.Module):
    """Pointer, copy direction and logit bias of the fact-copy head over a causal LM ``lm`` (the
    Creative LLM, passed per call: LoRA wrapping and merging replace that module)."""

    POINTER_T = 0.1  # temperature of the slot's pointer over the facts (and of the slot-fact loss)

    def __init__(self, enabled: bool):
        super().__init__()
        self.enabled = enabled

    @staticmethod
    @torch.no_grad()
    def fact_embeddings(lm: nn.Module, fact_ids: torch.Tensor, fact_mask: torch.Tensor) -> torch.Tensor:
        """[R, F, T] fact token ids (+ mask) -> [R, F, d]: the mean input embedding of each fact's tokens."""
        embed = lm.get_input_embeddings()
        dev = embed.weight.device
        e = embed(fact_ids.to(dev)).float()
        m = fact_mask.to(dev)[..., None].float()
        return (e * m).sum(2) / m.sum(2).clamp(min=1)

    def pointer_logits(self, lm: nn.Module, slot_values: torch.Tensor, fact_ids: torch.Tensor,
                       fact_mask: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """[B, F] ``cos(slot, e_j) / T``; facts that are padding get -inf."""
        fe = self.fact_embeddings(lm, fact_ids, fact_mask)                     # [B, F, d]
        cos = F.cosine_similarity(slot_values.float()[:, None, :], fe, dim=-1)
        valid = fact_mask.to(fe.device).any(-1)
        return (cos / (temperature or self.POINTER_T)).masked_fill(~valid, float("-inf"))

    def pointer(self, lm: nn.Module, slot_values: torch.Tensor, facts: FactBatch) -> torch.Tensor:
        """[B, F] where the slot points: the softmax of ``pointer_logits`` (padding facts get 0)."""
        p = torch.softmax(self.pointer_logits(lm, slot_values, facts.ids, facts.mask), dim=-1)
        return torch.nan_to_num(p, nan=0.0)

    def direction(self, lm: nn.Module, slot_values: torch.Tensor, facts: FactBatch | None) -> torch.Tensor | None:
        """[B, V] ``sum_j (p_j - 1/F) [v in fact j]`` over ``lm``'s vocabulary; ``None`` when the head
        is off or the batch carries fewer than two facts a row."""
        if not self.enabled or facts is None or facts.ids.shape[1] < 2:
            return None
        dev = lm.get_input_embeddings().weight.device
        vocab = lm.get_output_embeddings().weight.shape[0]
        f = facts.to(dev)
        p = self.pointer(lm, slot_values, f)                                # [B, F]
        valid = f.mask.any(-1)
        n = valid.sum(-1, keepdim=True).clamp(min=1)
        c = (p - valid.float() / n) * valid                                    # centered
        hot = torch.zeros(*f.copy_ids.shape[:2], vocab, device=dev)
        hot.scatter_(2, f.copy_ids, f.copy_mask.float())                       # [B, F, V] multi-hot
        return torch.einsum("bf,bfv->bv", c, hot)

    def forward(self, lm: nn.Module, slot_values: torch.Tensor, facts: FactBatch | None,
                scale: torch.Tensor) -> torch.Tensor | None:
        """The [B, V] logit bias ``scale * direction`` (``None`` where ``direction`` is)."""
        d = self.direction(lm, slot_values, facts)
        return None if d is None else scale.float() * d


class _AddBias:
    """A logits processor adding a fixed [B, V] bias at every decoding step (the fact-copy head)."""

    def __init__(self, bias: torch.Tensor):
        self.bias = bias

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return scores + self.bias.to(scores.dtype)
