"""The objectives besides the LM NLLs: symmetric InfoNCE (align) and BCE over (user, item) pairs (cls).

Both work in ONE process with batch size 1: align takes extra negatives from a queue of detached
past embeddings; cls takes negatives from the catalog (sampled) and the batch, and, when
``torch.distributed`` is initialized with world size > 1, also from the other ranks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


_LOCAL_ONLY = False  # set by train.distributed.local_only(): rank 0 alone after training, no gathers


def world_size() -> int:
    import torch.distributed as dist

    if _LOCAL_ONLY:
        return 1
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank (gradient flows back to the local part); identity on 1 rank."""
    if world_size() == 1:
        return x
    import torch.distributed as dist
    import torch.distributed.nn.functional as dnf

    parts = list(dnf.all_gather(x.contiguous()))
    rank = dist.get_rank()
    parts[rank] = x  # keep the local autograd path exact
    return torch.cat(parts, dim=0)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    if world_size() == 1:
        return x
    import torch.distributed as dist

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
        import torch.distributed as dist

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
        import torch.distributed as dist

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
    import torch.distributed as dist

    sizes = gather_no_grad(torch.tensor([len(x)], device=x.device))
    n_max = int(sizes.max())
    pad = torch.cat([x, x.new_zeros(n_max - len(x), *x.shape[1:])]) if len(x) < n_max else x
    full = gather_with_grad(pad) if x.requires_grad else gather_no_grad(pad)
    parts = [full[r * n_max:r * n_max + int(sizes[r])] for r in range(len(sizes))]
    return torch.cat(parts), int(sizes[:dist.get_rank()].sum())


def next_item_loss(predictor, queries: torch.Tensor, pos_ids: torch.Tensor, embed_items,
                   neg_ids: torch.Tensor | None = None, recent: torch.Tensor | None = None,
                   id_dropout: float = 0.0, generator: torch.Generator | None = None,
                   audience_weight: float = 0.0) -> torch.Tensor:
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
    are not its negatives), which is how an ad's audience is ranked."""
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
    if audience_weight > 0:
        cols = logits[:, target].T  # [P, P]: row p = every query's logit for query p's positive
        same = pos_ids[:, None] == pos_ids[None, :]
        same.fill_diagonal_(False)
        loss = loss + audience_weight * F.cross_entropy(cols.masked_fill(same, float("-inf")),
                                                        torch.arange(len(pos_ids), device=dev))
    return loss
