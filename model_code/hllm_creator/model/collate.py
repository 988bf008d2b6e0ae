"""Collators: ``prompt1 + [slot] + prompt2 + response`` with labels on the response only.

The slot is one position whose input embedding the model replaces (by ``projector(user_emb)`` for
the creative objective, ``profile_projector(user_emb)`` for recon). Left or right padding; the model
derives position ids from the attention mask, so both give the same logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hllm_creator.creative.prompts import RESPONSE_END, prompt_facts

IGNORE = -100
PROFILE_MAX_TOKENS = 96  # a user profile's tokens (recon response, align text)


@dataclass
class FactBatch:
    """The facts each creative prompt lists (``creative.prompts.prompt_facts``), for the fact-copy head."""
    ids: torch.Tensor        # [B, F, T] each fact's token ids as a phrase of its own (the pointer's keys)
    mask: torch.Tensor       # [B, F, T] bool
    copy_ids: torch.Tensor   # [B, F, C] every token id the fact can be written with (alone, after a space)
    copy_mask: torch.Tensor  # [B, F, C] bool

    def to(self, device) -> FactBatch:
        return FactBatch(*(t.to(device) for t in (self.ids, self.mask, self.copy_ids, self.copy_mask)))

    def repeat(self, n: int) -> FactBatch:
        return FactBatch(*(torch.cat([t] * n) for t in (self.ids, self.mask, self.copy_ids, self.copy_mask)))


@dataclass
class SlotBatch:
    input_ids: torch.Tensor       # [B, T] (slot positions hold pad_id; they are replaced by embeddings)
    attention_mask: torch.Tensor  # [B, T] 1 = real token
    slot_mask: torch.Tensor       # [B, T] bool, exactly one True per row
    labels: torch.Tensor | None   # [B, T] IGNORE except response tokens (None when no response)
    facts: FactBatch | None = None  # the prompts' facts (creative batches only)

    def to(self, device) -> SlotBatch:
        return SlotBatch(*(None if t is None else t.to(device) for t in
                           (self.input_ids, self.attention_mask, self.slot_mask, self.labels, self.facts)))

    def repeat(self, n: int) -> SlotBatch:
        """The batch stacked ``n`` times (rows ``i``, ``B + i``, ... are the same row)."""
        return SlotBatch(*(None if t is None else torch.cat([t] * n) for t in
                           (self.input_ids, self.attention_mask, self.slot_mask, self.labels)),
                         None if self.facts is None else self.facts.repeat(n))


def fact_batch(tokenizer, facts: list[list[str]], max_tokens: int = 16) -> FactBatch:
    """Token ids of each row's fact phrases ([B, F, T], F = the most facts of a row, zero padded)."""
    B = len(facts)
    F_ = max([len(f) for f in facts] + [1])
    keys = [[encode_text(tokenizer, f, max_tokens) for f in fs] for fs in facts]
    # a fact is written alone ("Waterproof") or inside a title (" waterproof" after a space): both spellings
    copies = [[sorted(set(k) | set(encode_text(tokenizer, " " + f, max_tokens + 2)))
               for f, k in zip(fs, ks)] for fs, ks in zip(facts, keys)]

    def pack(rows, width):
        ids = torch.zeros(B, F_, width, dtype=torch.long)
        mask = torch.zeros(B, F_, width, dtype=torch.bool)
        for b, ts in enumerate(rows):
            for j, t in enumerate(ts):
                if t:
                    ids[b, j, :len(t)] = torch.tensor(t)
                    mask[b, j, :len(t)] = True
        return ids, mask

    ids, mask = pack(keys, max([len(t) for ks in keys for t in ks] + [1]))
    cids, cmask = pack(copies, max([len(t) for cs in copies for t in cs] + [1]))
    return FactBatch(ids, mask, cids, cmask)


def encode_text(tokenizer, text: str, max_tokens: int | None = None) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
    return ids[:max_tokens] if max_tokens else ids


def slot_batch(tokenizer, prompt1: list[str], prompt2: list[str], response: list[str] | None = None, *,
               padding_side: str = "right", max_prompt2_tokens: int | None = 192,
               max_response_tokens: int | None = 48, response_suffix: str = "") -> SlotBatch:
    """Tokenize ``prompt1 + [slot] + prompt2 (+ response + suffix)``; labels only on response tokens."""
    if len(prompt1) != len(prompt2) or (response is not None and len(response) != len(prompt1)):
        raise ValueError(f"prompt1/prompt2/response lengths differ: {len(prompt1)}/{len(prompt2)}/"
                         f"{None if response is None else len(response)}")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = []
    for b in range(len(prompt1)):
        p1 = encode_text(tokenizer, prompt1[b])
        p2 = encode_text(tokenizer, prompt2[b], max_prompt2_tokens)
        ids = p1 + [pad] + p2
        lab = [IGNORE] * len(ids)
        if response is not None:
            r = encode_text(tokenizer, response[b], max_response_tokens)
            if not r:
                raise ValueError(f"row {b}: empty response")
            r = r + encode_text(tokenizer, response_suffix)
            ids, lab = ids + r, lab + r
        rows.append((ids, lab, len(p1)))
    T = max(len(r[0]) for r in rows)
    B = len(rows)
    input_ids = torch.full((B, T), pad, dtype=torch.long)
    attn = torch.zeros((B, T), dtype=torch.long)
    slot = torch.zeros((B, T), dtype=torch.bool)
    labels = torch.full((B, T), IGNORE, dtype=torch.long)
    for b, (ids, lab, s) in enumerate(rows):
        off = T - len(ids) if padding_side == "left" else 0
        input_ids[b, off:off + len(ids)] = torch.tensor(ids)
        attn[b, off:off + len(ids)] = 1
        labels[b, off:off + len(ids)] = torch.tensor(lab)
        slot[b, off + s] = True
    return SlotBatch(input_ids, attn, slot, labels if response is not None else None)


def text_batch(tokenizer, texts: list[str], max_tokens: int, *, append_slot: bool = False) -> SlotBatch:
    """Right-padded text batch; with ``append_slot`` one slot right after each text's last token."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = []
    for i, t in enumerate(texts):
        ids = encode_text(tokenizer, t, max_tokens)
        if not ids and not append_slot:
            raise ValueError(f"text {i} is empty")
        rows.append(ids)
    T = max(len(r) for r in rows) + int(append_slot)
    B = len(rows)
    input_ids = torch.full((B, T), pad, dtype=torch.long)
    attn = torch.zeros((B, T), dtype=torch.long)
    slot = torch.zeros((B, T), dtype=torch.bool)
    for b, ids in enumerate(rows):
        n = len(ids)
        if n:
            input_ids[b, :n] = torch.tensor(ids)
        attn[b, :n + int(append_slot)] = 1
        if append_slot:
            slot[b, n] = True
    return SlotBatch(input_ids, attn, slot, None)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """0.. over real tokens (left padding shifts nothing); padded positions get 0 (masked anyway)."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.clamp(min=0)


def creative_batch(tokenizer, prompt1, prompt2, response=None, *, padding_side: str = "right",
                   fact_copy: bool = False) -> SlotBatch:
    """The Creative LLM's batch: ``prompt1 + [slot] + prompt2 (+ response + RESPONSE_END)``, prompt2
    untruncated; with ``fact_copy`` also the facts each prompt2 lists (the fact-copy head's input)."""
    b = slot_batch(tokenizer, list(prompt1), list(prompt2), None if response is None else list(response),
                   padding_side=padding_side, response_suffix=RESPONSE_END, max_prompt2_tokens=None)
    if fact_copy:
        b.facts = fact_batch(tokenizer, [prompt_facts(p) for p in prompt2])
    return b


def recon_batch(tokenizer, recon_prompt: str, profiles: list[str], padding_side: str = "right") -> SlotBatch:
    """The recon objective's batch: ``[slot] + recon_prompt + profile + eos`` per user."""
    n = len(profiles)
    return slot_batch(tokenizer, [""] * n, [recon_prompt] * n, list(profiles), padding_side=padding_side,
                      max_response_tokens=PROFILE_MAX_TOKENS, response_suffix=tokenizer.eos_token or "")


def profile_batch(tokenizer, profiles: list[str]) -> SlotBatch:
    """The align objective's text side: each profile alone, right padded."""
    return text_batch(tokenizer, list(profiles), PROFILE_MAX_TOKENS)


def check_history(i: int, seq, item_hidden: int) -> None:
    """A user's history must be a non-empty [L, item_hidden] tensor (errors name history ``i``)."""
    if not isinstance(seq, torch.Tensor) or seq.dim() != 2 or seq.shape[1] != item_hidden:
        shape = tuple(seq.shape) if isinstance(seq, torch.Tensor) else type(seq).__name__
        raise ValueError(f"history {i}: expected a tensor [L, {item_hidden}], got {shape}")
    if seq.shape[0] == 0:
        raise ValueError(f"history {i} is empty: a user needs at least one item")


def pad_rows(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Input-embedding rows [L_b, d] -> right-padded [B, T, d], attention mask [B, T] and each row's
    last position [B] (causal attention makes right padding exact)."""
    T = max(len(r) for r in rows)
    B, d = len(rows), rows[0].shape[1]
    dev = rows[0].device
    emb = rows[0].new_zeros(B, T, d)
    attn = torch.zeros(B, T, dtype=torch.long, device=dev)
    last = torch.zeros(B, dtype=torch.long, device=dev)
    for b, r in enumerate(rows):
        emb[b, :len(r)] = r
        attn[b, :len(r)] = 1
        last[b] = len(r) - 1
    return emb, attn, last
