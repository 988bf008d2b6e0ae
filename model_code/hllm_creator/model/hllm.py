"""HLLM-Creator: Item LLM -> User LLM -> (Item-User predictor, Creative LLM), one torch module.

- Item LLM: item text + one learnable [ITEM] embedding appended; the last hidden state at [ITEM]
  is the item embedding.
- User LLM: a short text prompt, then the item embeddings of the history (oldest first, projected to
  its width), then one learnable [USER] embedding; its last hidden state is the user embedding.
  (``user_layout="items_prompt_user"`` gives DESIGN's original order: items, prompt, [USER].)
- Creative LLM (causal LM): ``prompt1`` + ONE slot holding ``projector(user_emb)`` + ``prompt2``
  (+ response in training). It is also the recon/align decoder.
- Item-User predictor: ``user_tower``, ``item_tower`` and an MLP (or MLP-Mixer) head.

A model dir (``save``/``load``) holds ``hllm_config.json``, ``model.safetensors`` (LoRA merged),
the three backbone ``config.json``s, the tokenizers and the weights hash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hllm_creator.model.collate import FactBatch, SlotBatch, fact_batch, position_ids, slot_batch, text_batch
from hllm_creator.model.config import ModelConfig
from hllm_creator.model.losses import cls_loss, gather_no_grad, info_nce, next_item_loss
from hllm_creator.model.predictor import ItemUserHead

log = logging.getLogger(__name__)

CONFIG_FILE = "hllm_config.json"
WEIGHTS_FILE = "model.safetensors"
ITEM_EMBEDDINGS_FILE = "item_embeddings.parquet"
PARTS = ("item", "user", "creative")


class ModelDirError(ValueError):
    """A model directory that cannot be loaded (names the dir and the missing/bad file)."""


def _projector(kind: str, d_in: int, d_out: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(d_in, d_out)
    return nn.Sequential(nn.Linear(d_in, d_out), nn.GELU(), nn.Linear(d_out, d_out))


def _body(lm):
    """The decoder stack (``LlamaModel``) of a causal LM, through a peft wrapper if any."""
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    return base.model


class HLLMCreator(nn.Module):
    def __init__(self, cfg: ModelConfig, item_lm, user_lm, creative_lm, tokenizers: dict):
        super().__init__()
        self.cfg = cfg
        self.tokenizers = tokenizers  # part -> tokenizer (not a module)
        self.item_llm = _body(item_lm)   # decoder stack only: no LM head needed
        self.user_llm = _body(user_lm)
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
        # the fact-copy head's scale (used when cfg.fact_copy; shape [1] for DeepSpeed as logit_scale)
        self.fact_copy_scale = nn.Parameter(torch.tensor([float(cfg.fact_copy_init)]), requires_grad=cfg.fact_copy)
        self.predictor = ItemUserHead(dU, dI, cfg.predictor_dim, cfg.predictor_hidden, cfg.predictor_head)
        self.predictor_items: list[str] | None = None  # the ID embeddings' catalog (enable_item_ids)
        self._id_index: dict[str, int] = {}
        q = cfg.align_queue
        self.register_buffer("queue_a", torch.zeros(q, dC))
        self.register_buffer("queue_p", torch.zeros(q, dC))
        self.register_buffer("queue_n", torch.zeros((), dtype=torch.long))  # filled entries
        self._uprompt = None
        self.item_cache: torch.Tensor | None = None   # [n_items, dI] frozen item embeddings (training)
        self.item_tokens: SlotBatch | None = None     # tokenized catalog (training, Item LLM not frozen)
        self._hash: str | None = None
        from hllm_creator.creative.prompts import PROMPT_VERSION

        cfg.prompt_version = cfg.prompt_version or PROMPT_VERSION

    # ------------------------------------------------------------------ hybrid predictor: item IDs
    def enable_item_ids(self, item_ids: Sequence[str], recent: int | None = None) -> None:
        """Give the predictor ID embeddings for this catalog (``ModelConfig.predictor_ids``): the
        item side adds a learned vector per catalog item, the user side a recency-weighted sum of the
        vectors of the user's last ``recent`` clicks (``ItemUserHead.enable_ids``). Items outside
        the catalog (a new ad) get none: the LLM towers alone score them."""
        ids = [str(x) for x in item_ids]
        if len(set(ids)) != len(ids):
            raise ValueError("enable_item_ids: the catalog lists an item id twice")
        self.cfg.predictor_recent = recent or self.cfg.predictor_recent  # saved: load rebuilds the same sizes
        self.predictor.enable_ids(len(ids), self.cfg.predictor_recent)
        self.predictor.to(self.device)
        self.predictor_items = ids
        self._id_index = {x: i for i, x in enumerate(ids)}

    def item_index(self, item_ids: Sequence[str]) -> torch.Tensor | None:
        """Item ids -> [m] indices into the predictor's ID catalog (unknown -> "none"); None when the
        predictor has no ID embeddings."""
        if not self.predictor_items:
            return None
        none = len(self.predictor_items)
        return torch.tensor([self._id_index.get(str(x), none) for x in item_ids], dtype=torch.long)

    def recent_index(self, histories: Sequence[Sequence[str]]) -> torch.Tensor | None:
        """Click histories (item ids, oldest first) -> [n, k] indices of each user's last k clicks,
        right-aligned, "none"-padded (the predictor's user-side ID part); None without ID embeddings."""
        if not self.predictor_items:
            return None
        from hllm_creator.model.predictor import recent_rows

        none, k = len(self.predictor_items), self.predictor.id_recency.numel()
        return recent_rows([[self._id_index.get(str(x), none) for x in list(h)[-k:]] for h in histories], k, none)

    # ------------------------------------------------------------------ building / io
    @classmethod
    def from_config(cls, cfg: ModelConfig | dict, *, seed: int = 0) -> "HLLMCreator":
        """Build from backbones (pretrained weights where the backbone has them; tiny-llama is random)."""
        from hllm_creator.llm.backbone import load_causal_lm

        cfg = ModelConfig.model_validate(cfg) if isinstance(cfg, dict) else cfg.model_copy()
        lms, toks = {}, {}
        for i, part in enumerate(PARTS):
            lb = load_causal_lm(getattr(cfg, f"{part}_llm"), n_layers=getattr(cfg, f"{part}_layers"),
                                seed=seed + i)
            lms[part], toks[part] = lb.model, lb.tokenizer
        torch.manual_seed(seed)
        return cls(cfg, lms["item"], lms["user"], lms["creative"], toks)

    @property
    def item_hidden_size(self) -> int:
        return int(self.cfg.item_hidden)

    @property
    def user_hidden_size(self) -> int:
        return int(self.cfg.user_hidden)

    @property
    def creative_hidden_size(self) -> int:
        return int(self.cfg.creative_hidden)

    @property
    def device(self) -> torch.device:
        return self.item_token.device

    @property
    def model_hash(self) -> str:
        """Stable id of the weights (sha256 of the saved weights file; computed from tensors if unsaved)."""
        if self._hash is None:
            h = hashlib.sha256()
            for k, v in sorted(self.export_state_dict().items()):
                h.update(k.encode())
                h.update(v.detach().cpu().float().contiguous().numpy().tobytes())
            self._hash = h.hexdigest()[:16]
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

    def export_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights as saved: LoRA merged (on a copy), training-only caches left out."""
        if hasattr(self.creative, "merge_and_unload"):
            import copy

            tmp = copy.deepcopy(self)
            tmp.merge_lora()
            return tmp.export_state_dict()
        return {k: v for k, v in self.state_dict().items() if not k.startswith("queue_")}

    def save(self, model_dir: str | Path, *, json_files: dict[str, Any] | None = None,
             item_embeddings: tuple[Sequence[str], Any] | None = None) -> Path:
        """Write the model dir atomically (nothing half-written, nothing added afterwards); returns its path.

        The dir holds the weights, the three LLM configs + tokenizers and ``hllm_config.json``, plus
        what the caller passes: ``json_files`` ({file name: JSON object}, e.g. eval.json,
        train_summary.json) and ``item_embeddings`` ((item ids, [n_items, dI] array): the frozen Item
        LLM vectors training used, written as item_embeddings.parquet + item_embeddings.json naming
        this model's hash, so inference can reuse them).
        """
        from safetensors.torch import save_file

        from hllm_creator.io import atomic_dir, sha256_file, write_json

        model_dir = Path(model_dir)
        sd = self.export_state_dict()
        # safetensors refuses shared storage (tied embeddings): store each tensor once
        seen, unique, tied = {}, {}, {}
        for k, v in sd.items():
            key = (v.data_ptr(), v.shape, v.stride()) if v.numel() else None
            if key is not None and key in seen:
                tied[k] = seen[key]
            else:
                if key is not None:
                    seen[key] = k
                unique[k] = v.detach().cpu().contiguous()
        with atomic_dir(model_dir) as tmp:
            save_file(unique, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
            self._hash = sha256_file(tmp / WEIGHTS_FILE)[:16]
            for part in PARTS:
                lm_cfg = self.creative.config if part == "creative" else getattr(self, f"{part}_llm").config
                (tmp / f"{part}_llm").mkdir()
                lm_cfg.save_pretrained(tmp / f"{part}_llm")
                self.tokenizers[part].save_pretrained(tmp / f"{part}_llm")
            from hllm_creator.creative.prompts import PROMPT1, PROMPT2, RESPONSE_END, SYSTEM

            write_json({"model": self.cfg.model_dump(mode="json"), "tied": tied, "model_hash": self._hash,
                        **({"predictor_items": self.predictor_items} if self.predictor_items else {}),
                        "prompts": {"system": SYSTEM, "prompt1": PROMPT1, "prompt2": PROMPT2,
                                    "response_end": RESPONSE_END}},
                       tmp / CONFIG_FILE)
            write_json({"model_hash": self._hash}, tmp / "model_hash.json")
            for name, obj in (json_files or {}).items():
                write_json(obj, tmp / name)
            if item_embeddings is not None:
                import pandas as pd

                from hllm_creator.io import write_parquet

                ids, emb = item_embeddings
                emb = emb.numpy() if hasattr(emb, "numpy") else np.asarray(emb)
                write_parquet(pd.DataFrame({"item_id": list(ids), "embedding": [r.astype(np.float32) for r in emb]}),
                              tmp / ITEM_EMBEDDINGS_FILE)
                write_json({"model_hash": self._hash, "note": "frozen Item LLM embeddings used in training"},
                           tmp / "item_embeddings.json")
        return model_dir

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "cpu") -> "HLLMCreator":
        """Rebuild from a model dir (no backbone download; architecture from the saved configs); eval mode."""
        from safetensors.torch import load_file
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        from hllm_creator.llm.backbone import best_attn_implementation

        model_dir = Path(model_dir)
        f = model_dir / CONFIG_FILE
        if not model_dir.is_dir():
            raise ModelDirError(f"model dir {model_dir} does not exist")
        for need in [CONFIG_FILE, WEIGHTS_FILE] + [f"{p}_llm/config.json" for p in PARTS]:
            if not (model_dir / need).exists():
                raise ModelDirError(f"{model_dir} is not an HLLM-Creator model dir: missing {need}")
        try:
            meta = json.loads(f.read_text())
            # dirs saved before user_layout existed were trained with the items-first layout
            cfg = ModelConfig.model_validate({"user_layout": "items_prompt_user", **meta["model"]})
        except Exception as e:  # noqa: BLE001
            raise ModelDirError(f"{f}: bad config ({e})") from e
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
        if "logit_scale" in sd and sd["logit_scale"].dim() == 0:  # dirs saved before it became shape [1]
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

    # ------------------------------------------------------------------ prompts
    def build_prompts(self, ad: dict) -> tuple[str, str]:
        from hllm_creator.creative.prompts import creative_prompts

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

    @torch.no_grad()
    def encode_items(self, texts: list[str], batch_size: int = 32, progress: bool = False,
                     autocast_bf16: bool = False) -> torch.Tensor:
        """Item texts -> [n, item_hidden] float32 embeddings (no grad)."""
        if isinstance(texts, str):
            raise TypeError("encode_items takes a list of texts, not one string")
        if not texts:
            return torch.zeros(0, self.item_hidden_size)
        was = self.training
        self.eval()
        out = []
        # sort by length so batches pad little; restore order at the end
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        rng = range(0, len(texts), batch_size)
        if progress:
            from tqdm.auto import tqdm

            rng = tqdm(rng, desc="encode items", unit="batch")
        for s in rng:
            idx = order[s:s + batch_size]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast_bf16 and self.device.type == "cpu"):
                out.append(self.item_forward(self.tokenize_items([texts[i] for i in idx])).float().cpu())
        emb = torch.cat(out)
        res = torch.empty_like(emb)
        res[torch.tensor(order)] = emb
        self.train(was)
        return res

    # ------------------------------------------------------------------ user LLM
    def _user_prompt_ids(self) -> torch.Tensor:
        from hllm_creator.model.collate import encode_text

        if self._uprompt is None:
            self._uprompt = torch.tensor(encode_text(self.tokenizers["user"], self.cfg.user_prompt), dtype=torch.long)
        return self._uprompt.to(self.device)

    def user_forward(self, item_emb_seqs: list[torch.Tensor], return_positions: bool = False):
        """Histories (each [L_i, dI], oldest first) -> user embeddings [B, dU] (with grad).

        ``return_positions``: also the User LLM's hidden state after each history item,
        ``[B, L_max, dU]`` (right padded; row b valid for its first ``min(L_b, max_history)``
        positions): causal attention makes position t a summary of items 0..t, the HLLM next-item
        query for item t + 1."""
        if len(item_emb_seqs) == 0:
            raise ValueError("encode_users: no histories given")
        dev = self.device
        prompt = self.user_llm.get_input_embeddings()(self._user_prompt_ids())  # [P, dU]
        rows = []
        for i, seq in enumerate(item_emb_seqs):
            self._check_history(i, seq)
            seq = seq[-self.cfg.max_history:].to(dev)
            x = self.item_to_user(self.predictor.std_item(seq).to(self.item_token.dtype))
            parts = ([prompt.to(x.dtype), x] if self.cfg.user_layout == "prompt_items_user"
                     else [x, prompt.to(x.dtype)])
            rows.append(torch.cat(parts + [self.user_token[None].to(x.dtype)]))
        T = max(len(r) for r in rows)
        B, d = len(rows), rows[0].shape[1]
        emb = rows[0].new_zeros(B, T, d)
        attn = torch.zeros(B, T, dtype=torch.long, device=dev)
        last = torch.zeros(B, dtype=torch.long, device=dev)
        for b, r in enumerate(rows):  # right padding: causal attention makes it exact
            emb[b, :len(r)] = r
            attn[b, :len(r)] = 1
            last[b] = len(r) - 1
        out = self.user_llm(inputs_embeds=emb, attention_mask=attn, position_ids=position_ids(attn))
        user = out.last_hidden_state[torch.arange(B, device=dev), last]
        if not return_positions:
            return user
        n_items = [min(len(s), self.cfg.max_history) for s in item_emb_seqs]
        start = len(prompt) if self.cfg.user_layout == "prompt_items_user" else 0
        return user, out.last_hidden_state[:, start:start + max(n_items)]

    def _check_history(self, i: int, seq) -> None:
        if not isinstance(seq, torch.Tensor) or seq.dim() != 2 or seq.shape[1] != self.item_hidden_size:
            shape = tuple(seq.shape) if isinstance(seq, torch.Tensor) else type(seq).__name__
            raise ValueError(f"history {i}: expected a tensor [L, {self.item_hidden_size}], got {shape}")
        if seq.shape[0] == 0:
            raise ValueError(f"history {i} is empty: a user needs at least one item")

    @torch.no_grad()
    def encode_users(self, item_emb_seqs: list[torch.Tensor], batch_size: int = 64,
                     autocast_bf16: bool = False, progress: bool = False, desc: str = "encode users") -> torch.Tensor:
        """Histories -> [n, user_hidden] float32 (no grad)."""
        was = self.training
        self.eval()
        for i, seq in enumerate(item_emb_seqs):  # errors name the caller's index, not the sorted one
            self._check_history(i, seq)
        # batches of similar length pad little; the original order is restored at the end
        order = sorted(range(len(item_emb_seqs)), key=lambda i: len(item_emb_seqs[i]))
        starts = range(0, len(order), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=desc, unit="batch")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast_bf16 and self.device.type == "cpu"):
            out = [self.user_forward([item_emb_seqs[i] for i in order[s:s + batch_size]]).float().cpu()
                   for s in starts]
        self.train(was)
        if not out:
            return torch.zeros(0, self.user_hidden_size)
        emb = torch.cat(out)
        res = torch.empty_like(emb)
        res[torch.tensor(order)] = emb
        return res

    # ------------------------------------------------------------------ predictor
    @torch.no_grad()
    def score(self, user_emb: torch.Tensor, item_emb: torch.Tensor, *, recent: torch.Tensor | None = None,
              item_index: torch.Tensor | None = None, user_id_part: torch.Tensor | None = None) -> torch.Tensor:
        """All (user, item) pairs -> match probabilities [n, m] in [0, 1].

        With ID embeddings (``enable_item_ids``): ``recent`` [n, k] (``recent_index`` of the users'
        histories) or ``user_id_part`` [n, d] (already summed, e.g. a cluster's member mean of
        ``predictor.recent_part``) adds the user-side ID part, ``item_index`` [m] (``item_index`` of
        the items) the item side; None leaves that side to the LLM tower alone."""
        for name, t, d in (("user_emb", user_emb, self.user_hidden_size), ("item_emb", item_emb, self.item_hidden_size)):
            if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.shape[1] != d:
                raise ValueError(f"score: {name} must be [n, {d}], got "
                                 f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
        p = self.predictor.to(self.device)
        return torch.sigmoid(p(user_emb.to(self.device).float(), item_emb.to(self.device).float(), recent=recent,
                               item_ids=item_index, user_id_part=user_id_part)).cpu()

    # ------------------------------------------------------------------ creative LLM
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

    POINTER_T = 0.1  # temperature of the slot's pointer over the facts (slot_fact_loss, the fact-copy head)

    def fact_pointer(self, slot_values: torch.Tensor, facts: FactBatch) -> torch.Tensor:
        """[B, F] softmax over each row's facts of cos(slot, mean input embedding of fact j) / T: where the
        slot points (padding facts get 0)."""
        fe = self.fact_embeddings(facts.ids, facts.mask)                      # [B, F, d]
        cos = F.cosine_similarity(slot_values.float()[:, None, :], fe, dim=-1)
        valid = facts.mask.to(self.device).any(-1)
        logits = (cos / self.POINTER_T).masked_fill(~valid, float("-inf"))
        p = torch.softmax(logits, dim=-1)
        return torch.nan_to_num(p, nan=0.0)

    def fact_copy_direction(self, slot_values: torch.Tensor, facts: FactBatch | None) -> torch.Tensor | None:
        """[B, V] ``sum_j (p_j - 1/F) [v in fact j]`` with ``p`` the slot's pointer over the F facts the prompt
        lists: a token in every fact (or a row with one fact) gets 0; a uniform pointer adds nothing.
        ``None`` when the head is off or the batch carries no facts."""
        if not self.cfg.fact_copy or facts is None or facts.ids.shape[1] < 2:
            return None
        f = facts.to(self.device)
        p = self.fact_pointer(slot_values, f)                                  # [B, F]
        valid = f.mask.any(-1)
        n = valid.sum(-1, keepdim=True).clamp(min=1)
        c = (p - valid.float() / n) * valid                                    # centered
        V = self.creative.get_output_embeddings().weight.shape[0]
        hot = torch.zeros(*f.copy_ids.shape[:2], V, device=self.device)
        hot.scatter_(2, f.copy_ids, f.copy_mask.float())                       # [B, F, V] multi-hot
        return torch.einsum("bf,bfv->bv", c, hot)

    def fact_copy_bias(self, slot_values: torch.Tensor, facts: FactBatch | None) -> torch.Tensor | None:
        """The fact-copy head (``cfg.fact_copy``): the [B, V] logit bias ``scale * fact_copy_direction``."""
        d = self.fact_copy_direction(slot_values, facts)
        return None if d is None else self.fact_copy_scale.float() * d

    def slot_embedding(self, user_emb: torch.Tensor) -> torch.Tensor:
        """What goes into the Creative LLM's slot: ``projector(standardized user_emb)``."""
        return self.projector(self.predictor.std_user(user_emb))

    @torch.no_grad()
    def set_stats(self, item_emb: torch.Tensor, histories: list[list[int]], n_users: int = 512) -> None:
        """Standardization of item and user embeddings from data (call before training)."""
        self.predictor.set_stats(item_emb=item_emb)
        sample = histories[:n_users]
        if len(sample) > 1:
            self.predictor.set_stats(user_emb=self.encode_users([item_emb[h] for h in sample]))

    def creative_loss(self, user_emb: torch.Tensor, batch: SlotBatch) -> torch.Tensor:
        return self._slot_forward(batch, self.slot_embedding(user_emb)).loss

    def response_nll(self, slot_values: torch.Tensor, batch: SlotBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row summed NLL of the response tokens [B] and their counts [B], with ``slot_values``
        [B, creative_hidden] in the slot (grad flows)."""
        out = self._slot_forward(batch, slot_values, labels=False)
        labels = batch.labels.to(self.device)
        logits = out.logits[:, :-1].float()
        tgt = labels[:, 1:]
        mask = tgt != -100
        nll = F.cross_entropy(logits.transpose(1, 2), tgt.clamp(min=0), reduction="none") * mask
        return nll.sum(1), mask.sum(1)

    @torch.no_grad()
    def fact_embeddings(self, fact_ids: torch.Tensor, fact_mask: torch.Tensor) -> torch.Tensor:
        """[R, F, T] fact token ids (+ mask) -> [R, F, creative_hidden]: the mean input embedding of
        each fact's tokens (what the slot points at; the input embeddings are not trained)."""
        e = self.creative.get_input_embeddings()(fact_ids.to(self.device)).float()
        m = fact_mask.to(self.device)[..., None].float()
        return (e * m).sum(2) / m.sum(2).clamp(min=1)

    def slot_fact_loss(self, user_emb: torch.Tensor, fact_ids: torch.Tensor, fact_mask: torch.Tensor,
                       chosen: torch.Tensor, temperature: float | None = None) -> torch.Tensor | None:
        """The slot points at the fact its user cares about: over each row's ad facts ([R, F, T] token
        ids), cross-entropy of cos(slot, mean input embedding of fact j) / T against the teacher's
        chosen fact. The slot then carries the user's interests in the Creative LLM's own word space,
        where attention can match it to the prompt's facts (the input embeddings are not trained)."""
        ok = (chosen >= 0) & (fact_mask.any(-1).sum(-1) >= 2)
        if not bool(ok.any()):
            return None
        slot = self.slot_embedding(user_emb[ok.to(user_emb.device)])
        mask = fact_mask[ok].to(self.device)
        fe = self.fact_embeddings(fact_ids[ok], fact_mask[ok])  # [R, F, d]
        logits = F.cosine_similarity(slot.float()[:, None, :], fe, dim=-1) / (temperature or self.POINTER_T)
        logits = logits.masked_fill(~mask.any(-1), float("-inf"))
        return F.cross_entropy(logits, chosen[ok].to(self.device))

    def creative_contrast_losses(self, user_emb: torch.Tensor, batch: SlotBatch, swap: torch.Tensor,
                                 margin: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The creative NLL (mean per response token) and the slot contrast: for row i with a partner
        ``swap[i]`` (same ad, another user, another target), the response must be likelier with the
        own user's slot than with the partner's: ``softplus(margin - (NLL_partner - NLL_own))``,
        NLLs summed over the response tokens. Both in ONE forward of 2B rows."""
        slot = self.slot_embedding(user_emb)
        swap = swap.to(self.device)
        valid = swap != torch.arange(len(swap), device=self.device)
        if not bool(valid.any()):
            nll, cnt = self.response_nll(slot, batch)
            return nll.sum() / cnt.sum().clamp(min=1), None
        both = batch.repeat(2)
        nll, cnt = self.response_nll(torch.cat([slot, slot[swap]]), both)
        B = len(swap)
        own, other = nll[:B], nll[B:]
        creative = own.sum() / cnt[:B].sum().clamp(min=1)
        contrast = F.softplus(margin - (other - own))[valid].mean()
        return creative, contrast

    def recon_loss(self, user_emb: torch.Tensor, batch: SlotBatch) -> torch.Tensor:
        return self._slot_forward(batch, self.profile_projector(self.predictor.std_user(user_emb))).loss

    def profile_embedding(self, batch: SlotBatch) -> torch.Tensor:
        """The decoder's embedding of a text: mean of its last hidden states over real tokens."""
        b = batch.to(self.device)
        h = _body(self.creative)(input_ids=b.input_ids, attention_mask=b.attention_mask,
                                 position_ids=position_ids(b.attention_mask)).last_hidden_state
        m = b.attention_mask[..., None].to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1)

    def align_loss(self, user_emb: torch.Tensor, profile_batch: SlotBatch) -> torch.Tensor:
        a = self.align_projector(self.predictor.std_user(user_emb))
        p = self.profile_embedding(profile_batch)
        scale = self.logit_scale.exp().clamp(max=self.cfg.align_max_scale)
        n = int(self.queue_n)
        loss = info_nce(a, p, scale, fn_cos=self.cfg.false_negative_cos,
                        queue_a=self.queue_a[:n] if n else None, queue_p=self.queue_p[:n] if n else None)
        if self.training and self.cfg.align_queue:
            # every rank enqueues every rank's rows (as MoCo does): the queues stay identical across
            # ranks under any engine (DDP used to overwrite them with rank 0's; DeepSpeed did not)
            self._enqueue(gather_no_grad(a.detach().float()), gather_no_grad(p.detach().float()))
        return loss

    @torch.no_grad()
    def prefill_align_queue(self, user_emb: torch.Tensor, profile_batch: SlotBatch) -> None:
        """Fill the align queue before training, so the align loss has the same negatives at every step."""
        if self.cfg.align_queue:
            self._enqueue(self.align_projector(self.predictor.std_user(user_emb)).float(),
                          self.profile_embedding(profile_batch).float())

    @torch.no_grad()
    def _enqueue(self, a: torch.Tensor, p: torch.Tensor) -> None:
        q = self.cfg.align_queue
        a, p = a[-q:], p[-q:]
        k = len(a)
        self.queue_a.copy_(torch.cat([a, self.queue_a[:-k] if k < q else self.queue_a[:0]])[:q])
        self.queue_p.copy_(torch.cat([p, self.queue_p[:-k] if k < q else self.queue_p[:0]])[:q])
        self.queue_n.fill_(min(q, int(self.queue_n) + k))

    def creative_batch(self, prompt1, prompt2, response=None, padding_side="right") -> SlotBatch:
        from hllm_creator.creative.prompts import RESPONSE_END

        b = slot_batch(self.tokenizers["creative"], list(prompt1), list(prompt2),
                       None if response is None else list(response), padding_side=padding_side,
                       response_suffix=RESPONSE_END, max_prompt2_tokens=None)
        if self.cfg.fact_copy:
            from hllm_creator.creative.prompts import prompt_facts

            b.facts = fact_batch(self.tokenizers["creative"], [prompt_facts(p) for p in prompt2])
        return b

    def recon_batch(self, profiles: list[str], padding_side="right") -> SlotBatch:
        n = len(profiles)
        return slot_batch(self.tokenizers["creative"], [""] * n, [self.cfg.recon_prompt] * n, list(profiles),
                          padding_side=padding_side, max_response_tokens=96,
                          response_suffix=self.tokenizers["creative"].eos_token or "")

    def profile_batch(self, profiles: list[str]) -> SlotBatch:
        return text_batch(self.tokenizers["creative"], list(profiles), 96)

    @torch.no_grad()
    def generate(self, user_emb: torch.Tensor, prompt1: list[str], prompt2: list[str], *, do_sample: bool = True,
                 temperature: float = 0.8, top_p: float = 0.95, top_k: int = 50, max_new_tokens: int = 128,
                 seed: int | None = None, batch_size: int = 16, autocast_bf16: bool = False) -> list[str]:
        """Batched generation (left padding) from prompt1 + [projector(user_emb)] + prompt2.

        ``autocast_bf16``: run the Creative LLM under bf16 autocast (faster prefill on CPUs with
        AMX / AVX-512-bf16 and on GPUs; outputs can differ slightly from float32)."""
        if isinstance(prompt1, str) or isinstance(prompt2, str):
            raise TypeError("generate takes lists of prompt1/prompt2 (one per user embedding)")
        if not (len(user_emb) == len(prompt1) == len(prompt2)):
            raise ValueError(f"generate: {len(user_emb)} user embeddings but {len(prompt1)} prompt1 and "
                             f"{len(prompt2)} prompt2")
        if user_emb.dim() != 2 or user_emb.shape[1] != self.user_hidden_size:
            raise ValueError(f"generate: user_emb must be [n, {self.user_hidden_size}], got {tuple(user_emb.shape)}")
        if len(user_emb) == 0:
            return []
        was = self.training
        self.eval()
        tok = self.tokenizers["creative"]
        stop = [t for t in {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")}
                if isinstance(t, int) and t >= 0 and t != tok.unk_token_id]
        if seed is not None:
            torch.manual_seed(seed)
        texts: list[str] = []
        for s in range(0, len(prompt1), batch_size):
            b = self.creative_batch(prompt1[s:s + batch_size], prompt2[s:s + batch_size], padding_side="left")
            b = b.to(self.device)
            emb = self.creative.get_input_embeddings()(b.input_ids)
            u = self.slot_embedding(user_emb[s:s + batch_size].to(self.device)).to(emb.dtype)
            full = torch.zeros_like(emb)
            full[b.slot_mask] = u
            emb = torch.where(b.slot_mask[..., None], full, emb)
            kw = dict(do_sample=do_sample, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                      eos_token_id=stop or None)
            bias = self.fact_copy_bias(u, b.facts)
            if bias is not None:
                from transformers import LogitsProcessorList

                kw["logits_processor"] = LogitsProcessorList([_AddBias(bias)])
            if do_sample:
                kw.update(temperature=temperature, top_p=top_p, top_k=top_k)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
                out = self.creative.generate(inputs_embeds=emb, attention_mask=b.attention_mask, **kw)
            texts += [t.strip() for t in tok.batch_decode(out, skip_special_tokens=True)]
        self.train(was)
        return texts

    # ------------------------------------------------------------------ training forward
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

    def _next_item_queries(self, users, pos_h, hist_idx, hist_len, pos_idx):
        """Every next-item example of the cls users: the hidden state after history item t -> item
        t + 1, and [USER] (after the whole history) -> the user's target. Returns queries [P, dU]
        and their target catalog ids [P]."""
        dev = self.device
        L = pos_h.shape[1]
        lens = hist_len.to(dev).clamp(max=self.cfg.max_history)
        # the last `lens` items of each history are what the User LLM read (oldest first)
        read = torch.stack([torch.cat([hist_idx[b, max(0, int(hist_len[b]) - L):int(hist_len[b])],
                                       hist_idx.new_zeros(L - int(lens[b]))]) for b in range(len(lens))])
        t = torch.arange(L - 1, device=dev)
        valid = t[None, :] < (lens[:, None] - 1)  # position t has a next item inside the history
        q = torch.cat([pos_h[:, :-1][valid], users])
        ids = torch.cat([read[:, 1:].to(dev)[valid], pos_idx.to(dev)])
        return q, ids

    def forward(self, hist_idx, hist_len, pos_idx, neg_idx=None, cre_rows=None, creative=None, recon=None,
                profile=None, weights=None, swap=None, contrast_margin: float = 2.0, fact_ids=None,
                fact_mask=None, fact_chosen=None, next_item: bool = False, **_) -> dict:
        """One training step's losses. ``hist_idx`` [B, L] catalog indices (right padded, lengths
        ``hist_len``); the first ``cre_rows`` users carry the creative/recon/profile batches, the
        other ``B - cre_rows`` users are the cls users with targets ``pos_idx`` [B - cre_rows];
        ``neg_idx`` [K] sampled catalog negatives. Returns ``loss`` (weighted sum) and each loss."""
        w = weights or {}
        uniq, inv = torch.unique(torch.cat([hist_idx.flatten(), pos_idx, neg_idx if neg_idx is not None
                                            else pos_idx[:0]]), return_inverse=True)
        iemb = self.item_embeddings(uniq)
        nh = hist_idx.numel()
        h_emb = iemb[inv[:nh]].view(*hist_idx.shape, -1)
        p_emb = iemb[inv[nh:nh + len(pos_idx)]]
        n_emb = iemb[inv[nh + len(pos_idx):]] if neg_idx is not None else None
        n = int(cre_rows or 0)
        losses = {}
        if next_item and len(pos_idx):
            users, pos_h = self.user_forward([h_emb[b, :int(hist_len[b])] for b in range(len(hist_len))],
                                             return_positions=True)
            q, q_ids = self._next_item_queries(users[n:], pos_h[n:], hist_idx[n:], hist_len[n:], pos_idx)
            losses["cls"] = next_item_loss(self.predictor, q, q_ids, self.item_embeddings, neg_idx)
        else:
            users = self.user_forward([h_emb[b, :int(hist_len[b])] for b in range(len(hist_len))])
            if len(pos_idx):
                losses["cls"] = cls_loss(self.predictor, users[n:], p_emb, pos_idx.to(self.device), n_emb,
                                         None if neg_idx is None else neg_idx.to(self.device))
        if n:
            u = users[:n]
            if creative is not None and swap is not None and w.get("contrast", 0.0):
                losses["creative"], c = self.creative_contrast_losses(u, creative, swap, contrast_margin)
                if c is not None:
                    losses["contrast"] = c
            elif creative is not None and w.get("creative", 1.0):
                losses["creative"] = self.creative_loss(u, creative)
            if fact_ids is not None and w.get("slot_fact", 0.0):
                sf = self.slot_fact_loss(u, fact_ids, fact_mask, fact_chosen)
                if sf is not None:
                    losses["slot_fact"] = sf
            # recon/align may run on the first rows only (aux_rows): their batches say how many
            if recon is not None and w.get("recon", 1.0):
                losses["recon"] = self.recon_loss(u[:len(recon.input_ids)], recon)
            if profile is not None and w.get("align", 1.0):
                losses["align"] = self.align_loss(u[:len(profile.input_ids)], profile)
        total = sum(w.get(k, 1.0) * v for k, v in losses.items())
        return {"loss": total, **{k: v.detach() for k, v in losses.items()}}


class _AddBias:
    """A logits processor adding a fixed [B, V] bias at every decoding step (the fact-copy head)."""

    def __init__(self, bias: torch.Tensor):
        self.bias = bias

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return scores + self.bias.to(scores.dtype)


def l2norm(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)
