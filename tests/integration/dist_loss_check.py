"""The cross-rank losses of model/losses.py on 2 real gloo ranks vs one process on the whole batch.

Run as ``torchrun --nproc_per_node 2 dist_loss_check.py OUT_DIR``: each rank takes its block of
rows of one seeded global batch, computes ``info_nce`` (align) and ``cls_loss`` (cls) with the real
gathers, backpropagates, averages the predictor's gradients like DDP does, and saves what it got to
``OUT_DIR/rank{R}.pt``. ``reference()`` computes the same in ONE process on the concatenated batch
(tests/integration/test_distributed_losses.py compares the two).

Besides the full losses, a "cross" pass backpropagates ONLY rank 0's loss (rank 1 contributes a
zero loss): the gradient that then reaches rank 1's own rows can only have come from rank 0's use
of them as negatives, through all_gather's backward.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

W, B, D, H = 2, 4, 16, 24  # ranks, rows per rank, embedding dim, tower input dim


def make_inputs():
    g = torch.Generator().manual_seed(0)
    return {
        "a": torch.randn(W * B, D, generator=g), "p": torch.randn(W * B, D, generator=g),
        "queue_a": torch.randn(3, D, generator=g), "queue_p": torch.randn(3, D, generator=g),
        "user": torch.randn(W * B, H, generator=g), "pos": torch.randn(W * B, H, generator=g),
        "pos_ids": torch.arange(W * B) * 7 + 1,  # distinct targets: no masked pair
        "scale": torch.tensor([5.0]),
    }


def make_predictor():
    from hllm_creator.model.predictor import ItemUserHead

    torch.manual_seed(0)
    return ItemUserHead(H, H, d=8, hidden=16)


def losses_on(x, pred, rows: slice | None = None):
    """(align, cls) on the given rows of the batch (all rows = the one-process reference)."""
    from hllm_creator.model.losses import cls_loss, info_nce

    r = rows or slice(None)
    a = x["a"][r].clone().requires_grad_()
    p = x["p"][r].clone().requires_grad_()
    u = x["user"][r].clone().requires_grad_()
    pos = x["pos"][r].clone().requires_grad_()
    scale = x["scale"].clone().requires_grad_()
    align = info_nce(a, p, scale, queue_a=x["queue_a"], queue_p=x["queue_p"])
    cls = cls_loss(pred, u, pos, x["pos_ids"][r])
    return align, cls, {"a": a, "p": p, "user": u, "pos": pos, "scale": scale}


def grads(leaves, pred):
    out = {k: v.grad.clone() for k, v in leaves.items()}
    out.update({f"pred.{n}": p.grad.clone() for n, p in pred.named_parameters() if p.grad is not None})
    return out


def reference() -> dict:
    """One process, the concatenated batch: the losses and gradients DDP must reproduce."""
    x, pred = make_inputs(), make_predictor()
    align, cls, leaves = losses_on(x, pred)
    (align + cls).backward()
    full = {"align": align.item(), "cls": cls.item(), "grads": grads(leaves, pred)}
    # the cross pass, written out independently of losses.py: rank 0's losses only (its rows
    # 0..B-1 as anchors, every row of both ranks as candidates)
    import torch.nn.functional as F

    x, pred = make_inputs(), make_predictor()
    a, p = x["a"].clone().requires_grad_(), x["p"].clone().requires_grad_()
    u, pos = x["user"].clone().requires_grad_(), x["pos"].clone().requires_grad_()
    # rank 0's align loss = InfoNCE with anchors 0..B-1 against all rows (+ queue), both directions
    an, pn = F.normalize(a, dim=-1), F.normalize(p, dim=-1)
    cp = torch.cat([pn, F.normalize(x["queue_p"], dim=-1)])
    ca = torch.cat([an, F.normalize(x["queue_a"], dim=-1)])
    idx = torch.arange(B)
    l0 = 0.5 * (F.cross_entropy(x["scale"] * an[:B] @ cp.T, idx) + F.cross_entropy(x["scale"] * pn[:B] @ ca.T, idx))
    ut, it = pred.tu(u[:B]), pred.ti(pos)
    logits = pred.pair_logits(ut, it)
    c0 = (F.binary_cross_entropy_with_logits(logits[idx, idx], torch.ones(B))
          + F.binary_cross_entropy_with_logits(logits[:, B:], torch.zeros(B, B), reduction="none").sum()
          / (B * (W * B - 1))
          + F.binary_cross_entropy_with_logits(logits[:, :B], torch.zeros(B, B), reduction="none")
          .masked_fill(torch.eye(B, dtype=torch.bool), 0).sum() / (B * (W * B - 1)))
    (l0 + c0).backward()
    full["cross"] = {"a": a.grad.clone(), "p": p.grad.clone(), "pos": pos.grad.clone(),
                     "align0": l0.item(), "cls0": c0.item()}
    return full


def main() -> None:
    import torch.distributed as dist

    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank, ws = dist.get_rank(), dist.get_world_size()
    assert ws == W, f"run with --nproc_per_node {W}"
    rows = slice(rank * B, (rank + 1) * B)
    x, pred = make_inputs(), make_predictor()
    align, cls, leaves = losses_on(x, pred, rows)
    (align + cls).backward()
    for p in pred.parameters():  # what DDP does with replicated parameters' gradients
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= ws
    scale_grad = leaves["scale"].grad.clone()
    dist.all_reduce(scale_grad)
    res = {"align": align.item(), "cls": cls.item(), "grads": grads(leaves, pred), "scale_grad_mean": scale_grad / ws}
    # cross pass: rank 0 backpropagates its losses, rank 1 a zero loss over the same graph
    x, pred = make_inputs(), make_predictor()
    align, cls, leaves = losses_on(x, pred, rows)
    ((align + cls) * (1.0 if rank == 0 else 0.0)).backward()
    res["cross"] = {"a": leaves["a"].grad.clone(), "p": leaves["p"].grad.clone(), "pos": leaves["pos"].grad.clone(),
                    "align": align.item(), "cls": cls.item()}
    torch.save(res, out / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
