"""HLLM-Creator: Item LLM -> User LLM -> (Item-User predictor, Creative LLM), one torch module.

- Item LLM: item text + one learnable [ITEM] embedding appended; the last hidden state at [ITEM]
  is the item embedding.
- User LLM: a short text prompt, then the item embeddings of the history (oldest first, projected to
  its width), then one learnable [USER] embedding; its last hidden state is the user embedding.
  (``user_layout="items_prompt_user"`` gives the original order: items, prompt, [USER].)
- Creative LLM (causal LM): ``prompt1`` + ONE slot holding ``projector(user_emb)`` + ``prompt2``
  (+ response in training). It is also the recon/align decoder.
- Item-User predictor: ``user_tower``, ``item_tower`` and an MLP (or MLP-Mixer) head (``predictor``).
- The fact-copy head (``fact_copy``): a logit bias toward the facts the slot points at.

This module composes them; the model dir is ``checkpoint``, the objectives ``losses``, the batches
``collate``, generation and batched encoding ``generation``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hllm_creator.creative.prompts import VERSION, creative_prompts
from hllm_creator.llm.backbone import load_causal_lm
from hllm_creator.model import checkpoint, collate, generation, losses
from hllm_creator.model.checkpoint import PARTS
from hllm_creator.model.collate import FactBatch, SlotBatch, encode_text, position_ids, text_batch
from hllm_creator.model.config import ModelConfig
from hllm_creator.model.fact_copy import FactCopyHead
from hllm_creator.model.predictor import ItemUserHead


def _projector(kind: str, d_in: int, d_out: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(d_in, d_out)
    return nn.Sequential(nn.Linear(d_in, d_out), nn.GELU(), nn.Linear(d_out, d_out))


class HLLMCreator(nn.Module):
    BACKBONES = ("item_llm", "user_llm", "creative")  # every other parameter belongs to a head

    def __init__(self, cfg: ModelConfig, item_lm, user_lm, creative_lm, tokenizers: dict):
        super().__init__()
        self.cfg = cfg
        self.tokenizers = tokenizers  # part -> tokenizer (not a module)
        self.item_llm = losses.decoder_body(item_lm)   # decoder stack only: no LM head needed
        self.user_llm = losses.decoder_body(user_lm)
        self.creative = creative_lm      # causal LM (may become a peft model)
        dI, dU, dC = (self.item_llm.config.hidden_size, self.user_llm.config.hidden_size,
                      creative_lm.config.hidden_size)
        cfg.item_hidden, cfg.user_hidden, cfg.creative_hidden = dI, dU, dC
        g = torch.Generator().manual_seed(0)
        std = 0.02
        self.item_token = nn.Parameter(torch.randn(dI, generator=g) * std)   # [ITEM]
        self.user_token = nn.Parameter(torch.randn(dU, generator=g) * std)   # [USER]
        # standardized item embedding -> User LLM input space, scaled like its token embeddings
        self.item_to_user = nn.Linear(dI, dU)
        with torch.no_grad():
            tok_rms = float(self.user_llm.get_input_embeddings().weight.float().pow(2).mean().sqrt())
            nn.init.normal_(self.item_to_user.weight, std=tok_rms / math.sqrt(dI))
            self.item_to_user.bias.zero_()
        self.projector = _projector(cfg.projector, dU, dC)
        self.profile_projector = _projector(cfg.projector, dU, dC)
        self.align_projector = _projector(cfg.projector, dU, dC)
        # shape [1], not a 0-dim scalar: DeepSpeed broadcasts parameters as byte views, which 0-dim refuses
        self.logit_scale = nn.Parameter(torch.tensor([math.log(1.0 / cfg.align_temperature)]))
        # the fact-copy head's scale lives here under the name model dirs save it by (shape [1] as logit_scale)
        self.fact_copy_scale = nn.Parameter(torch.tensor([float(cfg.fact_copy_init)]), requires_grad=cfg.fact_copy)
        self.fact_copy_head = FactCopyHead(cfg.fact_copy)
        self.predictor = ItemUserHead(dU, dI, cfg.predictor_dim, cfg.predictor_hidden, cfg.predictor_head)
        q = cfg.align_queue
        self.register_buffer("queue_a", torch.zeros(q, dC))
        self.register_buffer("queue_p", torch.zeros(q, dC))
        self.register_buffer("queue_n", torch.zeros((), dtype=torch.long))  # filled entries
        self._uprompt = None
        self.item_cache: torch.Tensor | None = None   # [n_items, dI] frozen item embeddings (training)
        self.item_tokens: SlotBatch | None = None     # tokenized catalog (training, Item LLM not frozen)
        self._hash: str | None = None
        cfg.prompt_version = cfg.prompt_version or VERSION

    def param_part(self, name: str) -> str:
        """Which part a parameter (its ``named_parameters`` name) trains with: the backbone's
        attribute name (``BACKBONES``) or ``"head"`` (the tokens, projectors, scales, predictor)."""
        top = name.split(".")[0]
        return top if top in self.BACKBONES else "head"

    # ------------------------------------------------------------------ hybrid predictor: item IDs
    def enable_item_ids(self, item_ids: Sequence[str], recent: int | None = None) -> None:
        """Give the predictor ID embeddings for this catalog (``ModelConfig.predictor_ids``): the
        item side adds a learned vector per catalog item, the user side a recency-weighted sum of the
        vectors of the user's last ``recent`` clicks (``ItemUserHead.enable_ids``). Items outside
        the catalog (a new ad) get none: the LLM towers alone score them."""
        self.predictor.enable_catalog(item_ids, recent or self.cfg.predictor_recent)
        self.cfg.predictor_recent = recent or self.cfg.predictor_recent  # saved: load rebuilds the same sizes
        self.predictor.to(self.device)

    @property
    def predictor_items(self) -> list[str] | None:
        """The predictor's ID catalog (None: no ID embeddings, or switched off by setting None)."""
        return self.predictor.catalog

    @predictor_items.setter
    def predictor_items(self, item_ids: Sequence[str] | None) -> None:
        self.predictor.set_catalog(item_ids)

    def item_index(self, item_ids: Sequence[str]) -> torch.Tensor | None:
        return self.predictor.catalog_index(item_ids)

    def recent_index(self, histories: Sequence[Sequence[str]]) -> torch.Tensor | None:
        return self.predictor.catalog_recent(histories)

    # ------------------------------------------------------------------ building / io
    @classmethod
    def from_config(cls, cfg: ModelConfig | dict, *, seed: int = 0) -> HLLMCreator:
        """Build from backbones (pretrained weights where the backbone has them; tiny-llama is random)."""
        cfg = ModelConfig.model_validate(cfg) if isinstance(cfg, dict) else cfg.model_copy()
        lms, toks = {}, {}
        for i, part in enumerate(PARTS):
            lb = load_causal_lm(getattr(cfg, f"{part}_llm"), n_layers=getattr(cfg, f"{part}_layers"),
                                seed=seed + i)
            lms[part], toks[part] = lb.model, lb.tokenizer
        torch.manual_seed(seed)
        return cls(cfg, lms["item"], lms["user"], lms["creative"], toks)

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "cpu") -> HLLMCreator:
        """Rebuild from a model dir (no backbone download; architecture from the saved configs); eval mode."""
        return checkpoint.load_model_dir(cls, model_dir, device)

    def save(self, model_dir: str | Path, *, json_files: dict[str, Any] | None = None,
             item_embeddings: tuple[Sequence[str], Any] | None = None) -> Path:
        """Write the model dir atomically; returns its path. ``json_files``: {file name: JSON object}
        (e.g. eval.json); ``item_embeddings``: (item ids, [n_items, dI]) the frozen Item LLM vectors
        training used, saved for inference to reuse (``checkpoint.save_model_dir``)."""
        return checkpoint.save_model_dir(self, model_dir, json_files=json_files, item_embeddings=item_embeddings)

    @property
    def item_hidden_size(self) -> int:
        return int(self.cfg.item_hidden)

    @property
    def user_hidden_size(self) -> int:
        return int(self.cfg.user_hidden)

    @property
    def device(self) -> torch.device:
        return self.item_token.device

    @property
    def model_hash(self) -> str:
        """Stable id of the weights (sha256 of the saved weights file; computed from tensors if unsaved)."""
        if self._hash is None:
            self._hash = checkpoint.weights_hash(self)
        return self._hash

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        """Recompute activations in backward for every backbone (the HF Trainer calls this)."""
        kw = gradient_checkpointing_kwargs or {"use_reentrant": False}
        for lm in (self.item_llm, self.user_llm, self.creative):
            if hasattr(lm, "gradient_checkpointing_enable"):
                lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kw)

    def merge_lora(self) -> None:
        """Fold LoRA adapters of the Creative LLM into its weights (in place)."""
        if hasattr(self.creative, "merge_and_unload"):
            self.creative = self.creative.merge_and_unload()

    def build_prompts(self, ad: dict) -> tuple[str, str]:
        version = self.cfg.prompt_version if (self.cfg.prompt_version or "").startswith("v") else "v1"
        return creative_prompts(ad, version=version)

    # ------------------------------------------------------------------ item LLM
    def item_forward(self, batch: SlotBatch) -> torch.Tensor:
        """Tokenized item texts with one slot each -> hidden state at [ITEM] [B, dI] (with grad)."""
        b = batch.to(self.device)
        emb = self.item_llm.get_input_embeddings()(b.input_ids)
        emb = torch.where(b.slot_mask[..., None], self.item_token.to(emb.dtype), emb)
        out = self.item_llm(inputs_embeds=emb, attention_mask=b.attention_mask,
                            position_ids=position_ids(b.attention_mask))
        if getattr(self.cfg, "item_pooling", "item_token") == "mean":  # mean over the item's tokens + [ITEM]
            m = b.attention_mask[..., None].to(out.last_hidden_state.dtype)
            return (out.last_hidden_state * m).sum(1) / m.sum(1).clamp(min=1)
        return out.last_hidden_state[b.slot_mask]

    def tokenize_items(self, texts: list[str]) -> SlotBatch:
        return text_batch(self.tokenizers["item"], texts, self.cfg.item_max_tokens, append_slot=True)

    # the inference entry points are the ``generation`` functions themselves (their own signatures:
    # callers such as infer.generate read ``batch_size`` / ``autocast_bf16`` from them)
    encode_items = generation.encode_items

    def item_embeddings(self, idx: torch.Tensor) -> torch.Tensor:
        """Catalog indices -> item embeddings: from the frozen cache, else encoded with grad."""
        if self.item_cache is not None:
            return self.item_cache.to(self.device)[idx.to(self.device)]
        if self.item_tokens is None:
            raise RuntimeError("set model.item_cache (frozen Item LLM) or model.item_tokens before training")
        t = self.item_tokens
        sub = SlotBatch(t.input_ids[idx.cpu()], t.attention_mask[idx.cpu()], t.slot_mask[idx.cpu()], None)
        keep = sub.attention_mask.sum(0) > 0  # drop all-pad columns
        sub = SlotBatch(sub.input_ids[:, keep], sub.attention_mask[:, keep], sub.slot_mask[:, keep], None)
        return self.item_forward(sub)

    # ------------------------------------------------------------------ user LLM
    def user_forward(self, item_emb_seqs: list[torch.Tensor], return_positions: bool = False):
        """Histories (each [L_i, dI], oldest first) -> user embeddings [B, dU] (with grad).

        ``return_positions``: also the User LLM's hidden state after each history item,
        ``[B, L_max, dU]`` (right padded; row b valid for its first ``min(L_b, max_history)``
        positions): causal attention makes position t a summary of items 0..t, the HLLM next-item
        query for item t + 1."""
        if len(item_emb_seqs) == 0:
            raise ValueError("encode_users: no histories given")
        dev = self.device
        if self._uprompt is None:
            self._uprompt = torch.tensor(encode_text(self.tokenizers["user"], self.cfg.user_prompt), dtype=torch.long)
        prompt = self.user_llm.get_input_embeddings()(self._uprompt.to(dev))  # [P, dU]
        rows = []
        for i, seq in enumerate(item_emb_seqs):
            collate.check_history(i, seq, self.item_hidden_size)
            seq = seq[-self.cfg.max_history:].to(dev)
            x = self.item_to_user(self.predictor.std_item(seq).to(self.item_token.dtype))
            parts = ([prompt.to(x.dtype), x] if self.cfg.user_layout == "prompt_items_user"
                     else [x, prompt.to(x.dtype)])
            rows.append(torch.cat(parts + [self.user_token[None].to(x.dtype)]))
        emb, attn, last = collate.pad_rows(rows)
        out = self.user_llm(inputs_embeds=emb, attention_mask=attn, position_ids=position_ids(attn))
        user = out.last_hidden_state[torch.arange(len(rows), device=dev), last]
        if not return_positions:
            return user
        n_items = [min(len(s), self.cfg.max_history) for s in item_emb_seqs]
        start = len(prompt) if self.cfg.user_layout == "prompt_items_user" else 0
        return user, out.last_hidden_state[:, start:start + max(n_items)]

    encode_users = generation.encode_users

    @torch.no_grad()
    def set_stats(self, item_emb: torch.Tensor, histories: list[list[int]], n_users: int = 512) -> None:
        """Standardization of item and user embeddings from data (call before training)."""
        self.predictor.set_stats(item_emb=item_emb)
        sample = histories[:n_users]
        if len(sample) > 1:
            self.predictor.set_stats(user_emb=self.encode_users([item_emb[h] for h in sample]))

    # ------------------------------------------------------------------ predictor
    score = generation.score

    # ------------------------------------------------------------------ creative LLM
    def slot_embedding(self, user_emb: torch.Tensor) -> torch.Tensor:
        """What goes into the Creative LLM's slot: ``projector(standardized user_emb)``."""
        return self.projector(self.predictor.std_user(user_emb))

    def _slot_forward(self, batch: SlotBatch, slot_values: torch.Tensor, labels: bool = True):
        b = batch.to(self.device)
        emb = self.creative.get_input_embeddings()(b.input_ids)
        full = torch.zeros_like(emb)
        full[b.slot_mask] = slot_values.to(emb.dtype)
        emb = torch.where(b.slot_mask[..., None], full, emb)
        bias = self.fact_copy_bias(slot_values, b.facts)
        out = self.creative(inputs_embeds=emb, attention_mask=b.attention_mask,
                            position_ids=position_ids(b.attention_mask),
                            labels=b.labels if labels and bias is None else None)
        if bias is not None:
            out.logits = out.logits + bias[:, None, :].to(out.logits.dtype)
            if labels and b.labels is not None:
                tgt = b.labels[:, 1:]
                out.loss = F.cross_entropy(out.logits[:, :-1].float().transpose(1, 2), tgt, ignore_index=-100)
        return out

    def fact_embeddings(self, fact_ids: torch.Tensor, fact_mask: torch.Tensor) -> torch.Tensor:
        return self.fact_copy_head.fact_embeddings(self.creative, fact_ids, fact_mask)

    def fact_pointer(self, slot_values: torch.Tensor, facts: FactBatch) -> torch.Tensor:
        return self.fact_copy_head.pointer(self.creative, slot_values, facts)

    def fact_copy_bias(self, slot_values: torch.Tensor, facts: FactBatch | None) -> torch.Tensor | None:
        """The fact-copy head's [B, V] logit bias (None when off or without facts)."""
        return self.fact_copy_head(self.creative, slot_values, facts, self.fact_copy_scale)

    def creative_batch(self, prompt1, prompt2, response=None, padding_side="right") -> SlotBatch:
        return collate.creative_batch(self.tokenizers["creative"], prompt1, prompt2, response,
                                      padding_side=padding_side, fact_copy=self.cfg.fact_copy)

    def recon_batch(self, profiles: list[str], padding_side="right") -> SlotBatch:
        return collate.recon_batch(self.tokenizers["creative"], self.cfg.recon_prompt, profiles, padding_side)

    def profile_batch(self, profiles: list[str]) -> SlotBatch:
        return collate.profile_batch(self.tokenizers["creative"], profiles)

    generate = generation.generate

    # ------------------------------------------------------------------ objectives (``losses``)
    def creative_loss(self, user_emb: torch.Tensor, batch: SlotBatch) -> torch.Tensor:
        return self._slot_forward(batch, self.slot_embedding(user_emb)).loss

    def response_nll(self, slot_values: torch.Tensor, batch: SlotBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return losses.response_nll(self, slot_values, batch)

    def creative_contrast_losses(self, user_emb, batch: SlotBatch, swap, margin: float):
        return losses.creative_contrast(self, user_emb, batch, swap, margin)

    def slot_fact_loss(self, user_emb, fact_ids, fact_mask, chosen, temperature: float | None = None):
        return losses.slot_fact_loss(self, user_emb, fact_ids, fact_mask, chosen, temperature)

    def prefill_align_queue(self, user_emb: torch.Tensor, profile_batch: SlotBatch) -> None:
        losses.prefill_align_queue(self, user_emb, profile_batch)

    def _next_item_queries(self, users, pos_h, hist_idx, hist_len, pos_idx):
        return losses.next_item_queries(self, users, pos_h, hist_idx, hist_len, pos_idx)

    def forward(self, hist_idx, hist_len, pos_idx, neg_idx=None, cre_rows=None, creative=None, recon=None,
                profile=None, weights=None, swap=None, contrast_margin: float = 2.0, fact_ids=None,
                fact_mask=None, fact_chosen=None, next_item: bool = False, **_) -> dict:
        """One training step's losses (``losses.training_losses``). ``hist_idx`` [B, L] catalog indices
        (right padded, lengths ``hist_len``); the first ``cre_rows`` users carry the creative/recon/profile
        batches, the other ``B - cre_rows`` users are the cls users with targets ``pos_idx``
        [B - cre_rows]; ``neg_idx`` [K] sampled catalog negatives. Returns ``loss`` (weighted sum) and
        each loss."""
        return losses.training_losses(self, hist_idx, hist_len, pos_idx, neg_idx, cre_rows, creative, recon, profile,
                                      weights, swap, contrast_margin, fact_ids, fact_mask, fact_chosen, next_item)
