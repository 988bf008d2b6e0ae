"""What an ``HLLMCreator`` (``model``) does without gradients: generate, encode, score.

``generate``: batched (left padding) from ``prompt1 + [projector(user_emb)] + prompt2``, with the
fact-copy head's bias as a logits processor. ``encode_items`` / ``encode_users``: texts / histories
to float32 embeddings, in batches of similar length (little padding), the caller's order kept.
``score``: the Item-User predictor's match probabilities of all (user, item) pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hllm_creator.model.collate import check_history
from hllm_creator.model.fact_copy import _AddBias


def _stop_ids(tok) -> list[int]:
    """The Creative LLM's end-of-turn ids: eos and ChatML's ``<|im_end|>`` where the vocabulary has it."""
    return [t for t in {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")}
            if isinstance(t, int) and t >= 0 and t != tok.unk_token_id]


@torch.no_grad()
def generate(model, user_emb: torch.Tensor, prompt1: list[str], prompt2: list[str], *, do_sample: bool = True,
             temperature: float = 0.8, top_p: float = 0.95, top_k: int = 50, max_new_tokens: int = 128,
             seed: int | None = None, batch_size: int = 16, autocast_bf16: bool = False) -> list[str]:
    """``HLLMCreator.generate``: one title per user embedding, from ``prompt1 + [slot] + prompt2``.

    ``autocast_bf16``: run the Creative LLM under bf16 autocast (faster prefill on CPUs with
    AMX / AVX-512-bf16 and on GPUs; outputs can differ slightly from float32)."""
    if isinstance(prompt1, str) or isinstance(prompt2, str):
        raise TypeError("generate takes lists of prompt1/prompt2 (one per user embedding)")
    if not (len(user_emb) == len(prompt1) == len(prompt2)):
        raise ValueError(f"generate: {len(user_emb)} user embeddings but {len(prompt1)} prompt1 and "
                         f"{len(prompt2)} prompt2")
    if user_emb.dim() != 2 or user_emb.shape[1] != model.user_hidden_size:
        raise ValueError(f"generate: user_emb must be [n, {model.user_hidden_size}], got {tuple(user_emb.shape)}")
    if len(user_emb) == 0:
        return []
    was = model.training
    model.eval()
    tok = model.tokenizers["creative"]
    stop = _stop_ids(tok)
    if seed is not None:
        torch.manual_seed(seed)
    texts: list[str] = []
    for s in range(0, len(prompt1), batch_size):
        b = model.creative_batch(prompt1[s:s + batch_size], prompt2[s:s + batch_size], padding_side="left")
        b = b.to(model.device)
        emb = model.creative.get_input_embeddings()(b.input_ids)
        u = model.slot_embedding(user_emb[s:s + batch_size].to(model.device)).to(emb.dtype)
        full = torch.zeros_like(emb)
        full[b.slot_mask] = u
        emb = torch.where(b.slot_mask[..., None], full, emb)
        kw = dict(do_sample=do_sample, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                  eos_token_id=stop or None)
        bias = model.fact_copy_bias(u, b.facts)
        if bias is not None:
            from transformers import LogitsProcessorList

            kw["logits_processor"] = LogitsProcessorList([_AddBias(bias)])
        if do_sample:
            kw.update(temperature=temperature, top_p=top_p, top_k=top_k)
        with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
            out = model.creative.generate(inputs_embeds=emb, attention_mask=b.attention_mask, **kw)
        texts += [t.strip() for t in tok.batch_decode(out, skip_special_tokens=True)]
    model.train(was)
    return texts


def _in_length_order(n: int, length, batch_size: int, run, progress: bool, desc: str) -> torch.Tensor | None:
    """``run(indices)`` -> [len(indices), d] over batches of indices sorted by ``length(i)``; the rows
    put back in index order (None when ``n`` is 0)."""
    order = sorted(range(n), key=length)
    starts = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=desc, unit="batch")
    out = [run(order[s:s + batch_size]) for s in starts]
    if not out:
        return None
    emb = torch.cat(out)
    res = torch.empty_like(emb)
    res[torch.tensor(order)] = emb
    return res


@torch.no_grad()
def encode_items(model, texts: list[str], batch_size: int = 32, progress: bool = False,
                 autocast_bf16: bool = False) -> torch.Tensor:
    """``HLLMCreator.encode_items``: item texts -> [n, item_hidden] float32 (no grad)."""
    if isinstance(texts, str):
        raise TypeError("encode_items takes a list of texts, not one string")
    if not texts:
        return torch.zeros(0, model.item_hidden_size)
    was = model.training
    model.eval()

    def run(idx):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast_bf16 and model.device.type == "cpu"):
            return model.item_forward(model.tokenize_items([texts[i] for i in idx])).float().cpu()

    res = _in_length_order(len(texts), lambda i: len(texts[i]), batch_size, run, progress, "encode items")
    model.train(was)
    return res


@torch.no_grad()
def encode_users(model, item_emb_seqs: Sequence[torch.Tensor], batch_size: int = 64, autocast_bf16: bool = False,
                 progress: bool = False, desc: str = "encode users") -> torch.Tensor:
    """``HLLMCreator.encode_users``: histories -> [n, user_hidden] float32 (no grad)."""
    was = model.training
    model.eval()
    for i, seq in enumerate(item_emb_seqs):  # errors name the caller's index, not the sorted one
        check_history(i, seq, model.item_hidden_size)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast_bf16 and model.device.type == "cpu"):
        res = _in_length_order(len(item_emb_seqs), lambda i: len(item_emb_seqs[i]), batch_size,
                               lambda idx: model.user_forward([item_emb_seqs[i] for i in idx]).float().cpu(),
                               progress, desc)
    model.train(was)
    return torch.zeros(0, model.user_hidden_size) if res is None else res


@torch.no_grad()
def score(model, user_emb: torch.Tensor, item_emb: torch.Tensor, *, recent: torch.Tensor | None = None,
          item_index: torch.Tensor | None = None, user_id_part: torch.Tensor | None = None) -> torch.Tensor:
    """``HLLMCreator.score``: all (user, item) pairs -> match probabilities [n, m] in [0, 1].

    With ID embeddings (``enable_item_ids``): ``recent`` [n, k] (``recent_index`` of the users'
    histories) or ``user_id_part`` [n, d] (already summed, e.g. a cluster's member mean of
    ``predictor.recent_part``) adds the user-side ID part, ``item_index`` [m] (``item_index`` of
    the items) the item side; None leaves that side to the LLM tower alone."""
    for name, t, d in (("user_emb", user_emb, model.user_hidden_size), ("item_emb", item_emb, model.item_hidden_size)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.shape[1] != d:
            raise ValueError(f"score: {name} must be [n, {d}], got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
    p = model.predictor.to(model.device)
    return torch.sigmoid(p(user_emb.to(model.device).float(), item_emb.to(model.device).float(), recent=recent,
                           item_ids=item_index, user_id_part=user_id_part)).cpu()
