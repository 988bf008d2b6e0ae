"""The training objectives.

Tensor level: symmetric InfoNCE (align), BCE over (user, item) pairs (cls) and the sampled-softmax
next-item loss. They work in ONE process with batch size 1: align takes extra negatives from a
queue of detached past embeddings; cls takes negatives from the catalog (sampled) and the batch,
and, when ``torch.distributed`` is initialized with world size > 1, also from the other ranks.

Model level (``model``: an ``HLLMCreator``): the creative NLL and the slot contrast, recon, align
with its queue, and the slot-fact loss, each from the user embeddings of the rows that carry them.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from hllm_creator.model.collate import IGNORE, SlotBatch, position_ids

_LOCAL_ONLY = False  # set by train.distributed.local_only(): rank 0 alone after training, no gathers


def world_size() -> int:
    if _LOCAL_ONLY:
        return 1
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank (gradient flows back to the local part); identity on 1 rank."""
    if world_size() == 1:
        return x
    import torch.distributed.nn.functional as dnf  # only where several ranks exist (some builds lack it)

    parts = list(dnf.all_gather(x.contiguous()))
    rank = dist.get_rank()
    parts[rank] = x  # keep the local autograd path exact
    return torch.cat(parts, dim=0)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def info_nce(a: torch.Tensor, p: torch.Tensor, scale: torch.Tensor, *, fn_cos: float = 0.99,
             queue_a: torch.Tensor | None = None, queue_p: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE between ``a`` [B, d] and ``p`` [B, d] (row i of each is a positive pair).

    Negatives: the other rows (all ranks), plus queued past embeddings. A negative whose cosine to
    the positive exceeds ``fn_cos`` is a likely false negative and is masked out.
    """
    a = F.normalize(a.float(), dim=-1)
    p = F.normalize(p.float(), dim=-1)
    B = a.shape[0]
    ga, gp = gather_with_grad(a), gather_with_grad(p)
    off = 0
    if world_size() > 1:
        off = dist.get_rank() * B
    cand_p = gp if queue_p is None or len(queue_p) == 0 else torch.cat([gp, F.normalize(queue_p.float(), dim=-1)])
    cand_a = ga if queue_a is None or len(queue_a) == 0 else torch.cat([ga, F.normalize(queue_a.float(), dim=-1)])
    idx = torch.arange(B, device=a.device) + off
    pos_p = cand_p[idx]  # [B, d]
    pos_a = cand_a[idx]
    # a -> p
    logits_ap = scale * a @ cand_p.T  # [B, N]
    fn_ap = (pos_p @ cand_p.T) > fn_cos
    # p -> a
    logits_pa = scale * p @ cand_a.T
    fn_pa = (pos_a @ cand_a.T) > fn_cos
    own = torch.zeros_like(fn_ap)
    own[torch.arange(B), idx] = True
    logits_ap = logits_ap.masked_fill(fn_ap & ~own, float("-inf"))
    logits_pa = logits_pa.masked_fill(fn_pa & ~own, float("-inf"))
    return 0.5 * (F.cross_entropy(logits_ap, idx) + F.cross_entropy(logits_pa, idx))


def cls_loss(predictor, user_emb: torch.Tensor, pos_emb: torch.Tensor, pos_ids: torch.Tensor,
             neg_emb: torch.Tensor | None = None, neg_ids: torch.Tensor | None = None) -> torch.Tensor:
    """BCE: each user's target item is positive; in-batch targets of other users (all ranks) and
    sampled catalog items are negatives (an item equal to the user's own target is masked)."""
    ut = predictor.tu(user_emb)
    pt = predictor.ti(pos_emb)
    cand_t, cand_ids = gather_with_grad(pt), gather_no_grad(pos_ids)
    if neg_emb is not None and len(neg_emb):
        cand_t = torch.cat([cand_t, predictor.ti(neg_emb)])
        cand_ids = torch.cat([cand_ids, neg_ids])
    logits = predictor.pair_logits(ut, cand_t)  # [B, N]
    B = ut.shape[0]
    off = 0
    if world_size() > 1:
        off = dist.get_rank() * B
    idx = torch.arange(B, device=ut.device) + off
    pos_logit = logits[torch.arange(B), idx]
    neg_mask = cand_ids[None, :] != pos_ids[:, None]  # never a negative equal to the positive
    loss_pos = F.binary_cross_entropy_with_logits(pos_logit, torch.ones_like(pos_logit))
    neg_l = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    n_neg = neg_mask.sum().clamp(min=1)
    loss_neg = (neg_l * neg_mask).sum() / n_neg
    return loss_pos + loss_neg


def gather_var_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate ``x`` [n_r, ...] from every rank when each rank has its own n_r (padded gather,
    gradient flows back to the local part). Returns the concatenation and this rank's row offset."""
    if world_size() == 1:
        return x, 0
    sizes = gather_no_grad(torch.tensor([len(x)], device=x.device))
    n_max = int(sizes.max())
    pad = torch.cat([x, x.new_zeros(n_max - len(x), *x.shape[1:])]) if len(x) < n_max else x
    full = gather_with_grad(pad) if x.requires_grad else gather_no_grad(pad)
    parts = [full[r * n_max:r * n_max + int(sizes[r])] for r in range(len(sizes))]
    return torch.cat(parts), int(sizes[:dist.get_rank()].sum())


def next_item_loss(predictor, queries: torch.Tensor, pos_ids: torch.Tensor, embed_items,
                   neg_ids: torch.Tensor | None = None, recent: torch.Tensor | None = None,
                   id_dropout: float = 0.0, generator: torch.Generator | None = None,
                   audience_weight: float = 0.0, return_audience: bool = False):
    """Sampled-softmax next-item loss (HLLM): each query [P, dU] (the User LLM's state after an item,
    or [USER]) must pick its next item ``pos_ids`` [P] among the candidates: every positive of the
    batch (in-batch negatives), the sampled catalog items ``neg_ids`` and, when ``torch.distributed``
    is initialized, the other ranks' candidates. Each catalog item is a candidate once per rank; a
    candidate equal to the query's own positive is never its negative. ``embed_items(ids)`` ->
    item embeddings [n, dI] (frozen cache or the Item LLM with grad). ``recent`` [P, k]: each query's
    last clicked catalog ids (the hybrid predictor's ID parts, ``ItemUserHead.enable_ids``: the
    candidates then carry their output ID vectors too); None = the LLM towers alone. ``id_dropout``
    (with ``recent``): each candidate loses its ID vector with this probability (``generator``'s draw),
    so the item tower alone must score it, as it scores an ad outside the catalog (cold start).
    ``audience_weight`` w: adds w x the audience direction's loss: each positive item must pick ITS
    query among the batch's queries (a softmax over users, not items; queries with the same positive
    are not its negatives), which is how an ad's audience is ranked. ``return_audience``: return the
    two directions apart, (next-item loss, audience loss), for a caller that weighs and logs them."""
    dev = queries.device
    pos_ids = pos_ids.to(dev)
    pool = pos_ids if neg_ids is None or len(neg_ids) == 0 else torch.cat([pos_ids, neg_ids.to(dev)])
    cand = torch.unique(pool)  # sorted
    cid = cand if recent is not None else None
    if cid is not None and id_dropout > 0:
        drop = torch.rand(len(cand), generator=generator) < id_dropout
        cid = torch.where(drop.to(dev), torch.full_like(cand, predictor.n_ids), cand)
    ct, off = gather_var_with_grad(predictor.ti(embed_items(cand), cid))
    ids, _ = gather_var_with_grad(cand)
    logits = predictor.pair_logits(predictor.tu(queries, recent), ct).float()  # [P, N]
    target = torch.searchsorted(cand, pos_ids) + off
    dup = (ids[None, :] == pos_ids[:, None])
    dup[torch.arange(len(pos_ids), device=dev), target] = False
    loss = F.cross_entropy(logits.masked_fill(dup, float("-inf")), target)
    if audience_weight > 0 or return_audience:
        cols = logits[:, target].T  # [P, P]: row p = every query's logit for query p's positive
        same = pos_ids[:, None] == pos_ids[None, :]
        same.fill_diagonal_(False)
        audience = F.cross_entropy(cols.masked_fill(same, float("-inf")), torch.arange(len(pos_ids), device=dev))
        if return_audience:
            return loss, audience
        loss = loss + audience_weight * audience
    return loss


# ---------------------------------------------------------------------- model level
def response_nll(model, slot_values: torch.Tensor, batch: SlotBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row summed NLL of the response tokens [B] and their counts [B], with ``slot_values``
    [B, creative_hidden] in the slot (grad flows)."""
    out = model._slot_forward(batch, slot_values, labels=False)
    labels = batch.labels.to(model.device)
    logits = out.logits[:, :-1].float()
    tgt = labels[:, 1:]
    mask = tgt != IGNORE
    nll = F.cross_entropy(logits.transpose(1, 2), tgt.clamp(min=0), reduction="none") * mask
    return nll.sum(1), mask.sum(1)


def creative_contrast(model, user_emb: torch.Tensor, batch: SlotBatch, swap: torch.Tensor,
                      margin: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The creative NLL (mean per response token) and the slot contrast: for row i with a partner
    ``swap[i]`` (same ad, another user, another target), the response must be likelier with the
    own user's slot than with the partner's: ``softplus(margin - (NLL_partner - NLL_own))``,
    NLLs summed over the response tokens. Both in ONE forward of 2B rows."""
    dev = model.device
    slot = model.slot_embedding(user_emb)
    swap = swap.to(dev)
    valid = swap != torch.arange(len(swap), device=dev)
    if not bool(valid.any()):
        nll, cnt = response_nll(model, slot, batch)
        return nll.sum() / cnt.sum().clamp(min=1), None
    both = batch.repeat(2)
    nll, cnt = response_nll(model, torch.cat([slot, slot[swap]]), both)
    B = len(swap)
    own, other = nll[:B], nll[B:]
    creative = own.sum() / cnt[:B].sum().clamp(min=1)
    contrast = F.softplus(margin - (other - own))[valid].mean()
    return creative, contrast


def recon_loss(model, user_emb: torch.Tensor, batch: SlotBatch) -> torch.Tensor:
    """The Creative LLM writes the user's profile from ``profile_projector(user)`` in the slot."""
    return model._slot_forward(batch, model.profile_projector(model.predictor.std_user(user_emb))).loss


def decoder_body(lm):
    """The decoder stack (``LlamaModel``) of a causal LM, through a peft wrapper if any."""
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    return base.model


def profile_embedding(model, batch: SlotBatch) -> torch.Tensor:
    """The decoder's embedding of a text: mean of its last hidden states over real tokens."""
    b = batch.to(model.device)
    h = decoder_body(model.creative)(input_ids=b.input_ids, attention_mask=b.attention_mask,
                 position_ids=position_ids(b.attention_mask)).last_hidden_state
    m = b.attention_mask[..., None].to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp(min=1)


def align_loss(model, user_emb: torch.Tensor, profile: SlotBatch) -> torch.Tensor:
    """InfoNCE between ``align_projector(user)`` and the decoder's embedding of the user's profile,
    with the model's queue of past pairs as extra negatives (and the batch's pairs enqueued)."""
    a = model.align_projector(model.predictor.std_user(user_emb))
    p = profile_embedding(model, profile)
    scale = model.logit_scale.exp().clamp(max=model.cfg.align_max_scale)
    n = int(model.queue_n)
    loss = info_nce(a, p, scale, fn_cos=model.cfg.false_negative_cos,
                    queue_a=model.queue_a[:n] if n else None, queue_p=model.queue_p[:n] if n else None)
    if model.training and model.cfg.align_queue:
        # every rank enqueues every rank's rows (as MoCo does): the queues stay identical across
        # ranks under any engine (DDP would overwrite them with rank 0's; DeepSpeed would not)
        enqueue(model, gather_no_grad(a.detach().float()), gather_no_grad(p.detach().float()))
    return loss


@torch.no_grad()
def prefill_align_queue(model, user_emb: torch.Tensor, profile: SlotBatch) -> None:
    """Fill the align queue before training, so the align loss has the same negatives at every step."""
    if model.cfg.align_queue:
        enqueue(model, model.align_projector(model.predictor.std_user(user_emb)).float(),
                profile_embedding(model, profile).float())


@torch.no_grad()
def enqueue(model, a: torch.Tensor, p: torch.Tensor) -> None:
    """Push pairs into the model's align queue (buffers ``queue_a``/``queue_p``, newest first;
    ``queue_n`` = the filled entries)."""
    q = model.cfg.align_queue
    a, p = a[-q:], p[-q:]
    k = len(a)
    model.queue_a.copy_(torch.cat([a, model.queue_a[:-k] if k < q else model.queue_a[:0]])[:q])
    model.queue_p.copy_(torch.cat([p, model.queue_p[:-k] if k < q else model.queue_p[:0]])[:q])
    model.queue_n.fill_(min(q, int(model.queue_n) + k))


def slot_fact_loss(model, user_emb: torch.Tensor, fact_ids: torch.Tensor, fact_mask: torch.Tensor,
                   chosen: torch.Tensor, temperature: float | None = None) -> torch.Tensor | None:
    """The slot points at the fact its user cares about: over each row's ad facts ([R, F, T] token
    ids), cross-entropy of the fact-copy head's pointer logits against the teacher's chosen fact.
    The slot then carries the user's interests in the Creative LLM's own word space, where
    attention can match it to the prompt's facts. ``None`` when no row has a choice among >= 2 facts."""
    ok = (chosen >= 0) & (fact_mask.any(-1).sum(-1) >= 2)
    if not bool(ok.any()):
        return None
    slot = model.slot_embedding(user_emb[ok.to(user_emb.device)])
    logits = model.fact_copy_head.pointer_logits(model.creative, slot, fact_ids[ok], fact_mask[ok], temperature)
    return F.cross_entropy(logits, chosen[ok].to(model.device))


def next_item_queries(model, users, pos_h, hist_idx, hist_len, pos_idx) -> tuple[torch.Tensor, torch.Tensor]:
    """Every next-item example of the cls users: the hidden state after history item t -> item
    t + 1, and [USER] (after the whole history) -> the user's target. Returns queries [P, dU]
    and their target catalog ids [P]."""
    dev = model.device
    L = pos_h.shape[1]
    lens = hist_len.to(dev).clamp(max=model.cfg.max_history)
    # the last `lens` items of each history are what the User LLM read (oldest first)
    read = torch.stack([torch.cat([hist_idx[b, max(0, int(hist_len[b]) - L):int(hist_len[b])],
                                   hist_idx.new_zeros(L - int(lens[b]))]) for b in range(len(lens))])
    t = torch.arange(L - 1, device=dev)
    valid = t[None, :] < (lens[:, None] - 1)  # position t has a next item inside the history
    q = torch.cat([pos_h[:, :-1][valid], users])
    ids = torch.cat([read[:, 1:].to(dev)[valid], pos_idx.to(dev)])
    return q, ids


def training_losses(model, hist_idx, hist_len, pos_idx, neg_idx=None, cre_rows=None, creative=None, recon=None,
                    profile=None, weights=None, swap=None, contrast_margin: float = 2.0, fact_ids=None,
                    fact_mask=None, fact_chosen=None, next_item: bool = False) -> dict:
    """``HLLMCreator.forward``: one training step's losses (see there). The cls loss on the cls users;
    on the creative rows' users the creative NLL (with the slot contrast when ``swap`` pairs rows and
    its weight is on), the slot-fact loss, and recon/align on as many rows as their batches hold.
    A loss whose weight is 0 is not computed."""
    w = weights or {}
    uniq, inv = torch.unique(torch.cat([hist_idx.flatten(), pos_idx, neg_idx if neg_idx is not None
                                        else pos_idx[:0]]), return_inverse=True)
    iemb = model.item_embeddings(uniq)
    nh = hist_idx.numel()
    h_emb = iemb[inv[:nh]].view(*hist_idx.shape, -1)
    p_emb = iemb[inv[nh:nh + len(pos_idx)]]
    n_emb = iemb[inv[nh + len(pos_idx):]] if neg_idx is not None else None
    n = int(cre_rows or 0)
    out = {}
    hists = [h_emb[b, :int(hist_len[b])] for b in range(len(hist_len))]
    if next_item and len(pos_idx):
        users, pos_h = model.user_forward(hists, return_positions=True)
        q, q_ids = next_item_queries(model, users[n:], pos_h[n:], hist_idx[n:], hist_len[n:], pos_idx)
        if w.get("audience", 0.0):  # the audience direction on the User LLM's states too (cold start)
            out["cls"], out["audience"] = next_item_loss(model.predictor, q, q_ids, model.item_embeddings, neg_idx,
                                                         return_audience=True)
        else:
            out["cls"] = next_item_loss(model.predictor, q, q_ids, model.item_embeddings, neg_idx)
    else:
        users = model.user_forward(hists)
        if len(pos_idx):
            out["cls"] = cls_loss(model.predictor, users[n:], p_emb, pos_idx.to(model.device), n_emb,
                                  None if neg_idx is None else neg_idx.to(model.device))
    if n:
        u = users[:n]
        if creative is not None and swap is not None and w.get("contrast", 0.0):
            out["creative"], c = creative_contrast(model, u, creative, swap, contrast_margin)
            if c is not None:
                out["contrast"] = c
        elif creative is not None and w.get("creative", 1.0):
            out["creative"] = model.creative_loss(u, creative)
        if fact_ids is not None and w.get("slot_fact", 0.0):
            sf = slot_fact_loss(model, u, fact_ids, fact_mask, fact_chosen)
            if sf is not None:
                out["slot_fact"] = sf
        # recon/align may run on the first rows only (aux_rows): their batches say how many
        if recon is not None and w.get("recon", 1.0):
            out["recon"] = recon_loss(model, u[:len(recon.input_ids)], recon)
        if profile is not None and w.get("align", 1.0):
            out["align"] = align_loss(model, u[:len(profile.input_ids)], profile)
    total = sum(w.get(k, 1.0) * v for k, v in out.items())
    return {"loss": total, **{k: v.detach() for k, v in out.items()}}
