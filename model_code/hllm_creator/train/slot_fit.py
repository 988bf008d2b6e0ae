"""Slot pre-fit: before joint training, point the Creative LLM's user slot at what its user cares
about, so the Creative LLM has a slot worth reading from its first step.

Every creative row's user is encoded once with the (still frozen, untrained) User LLM; then only the
``projector`` is trained with the slot-fact loss (``HLLMCreator.slot_fact_loss``: the slot against
the mean input embedding of each of the ad's facts, cross-entropy on the teacher's choice). No
Creative-LLM forward is needed, so a few hundred steps take seconds. A tenth of the rows (whole
users) is held out and picks the step that is kept (accuracy of the chosen fact), so the small
projector cannot simply memorize the rows it sees.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from hllm_creator.train.data import fact_tensors

log = logging.getLogger(__name__)


def slot_fit(model, td, item_emb, *, steps: int, lr: float, batch_size: int = 64, seed: int = 0,
             val_share: float = 0.1, eval_every: int = 10, bf16: bool = False, on_log=None) -> dict | None:
    """Train ``model.projector`` on the slot-fact loss over ``td.rows``; keep the best validated state."""
    rows = td.rows
    if not steps or "facts" not in rows.columns or "fact_index" not in rows.columns or len(rows) < 10:
        return None
    t = fact_tensors(model.tokenizers["creative"], rows)
    usable = (t["fact_chosen"] >= 0) & (t["fact_mask"].any(-1).sum(-1) >= 2)
    if int(usable.sum()) < 10:
        return None
    model.eval()
    with torch.no_grad():
        u = model.encode_users([item_emb[h] for h in td.row_hist], autocast_bf16=bf16).float()
    users = rows["user_id"].astype(str).to_numpy() if "user_id" in rows.columns else np.arange(len(rows)).astype(str)
    rng = np.random.default_rng([seed, 11])
    uniq = np.unique(users)
    val_users = set(rng.choice(uniq, size=max(1, int(val_share * len(uniq))), replace=False).tolist())
    is_val = torch.tensor([x in val_users for x in users]) & usable
    is_tr = ~torch.tensor([x in val_users for x in users]) & usable
    tr_idx = torch.nonzero(is_tr).flatten()
    params = list(model.projector.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)

    def accuracy(mask) -> float:
        if not bool(mask.any()):
            return float("nan")
        with torch.no_grad():
            slot = model.slot_embedding(u[mask]).float()
            fe = model.fact_embeddings(t["fact_ids"][mask], t["fact_mask"][mask])
            lg = F.cosine_similarity(slot[:, None], fe, dim=-1).masked_fill(~t["fact_mask"][mask].any(-1), -1e9)
            return float((lg.argmax(1) == t["fact_chosen"][mask]).float().mean())

    best = {"step": 0, "val_acc": accuracy(is_val), "state": {k: v.clone() for k, v in model.projector.state_dict().items()}}
    first_acc = best["val_acc"]
    losses = []
    for step in range(1, steps + 1):
        b = tr_idx[torch.as_tensor(rng.choice(len(tr_idx), size=min(batch_size, len(tr_idx)), replace=False))]
        loss = model.slot_fact_loss(u[b], t["fact_ids"][b], t["fact_mask"][b], t["fact_chosen"][b])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if step % eval_every == 0 or step == steps:
            acc = accuracy(is_val)
            if on_log:
                on_log(step, {"slot_fit_loss": float(np.mean(losses[-eval_every:])), "slot_fit_val_acc": acc})
            if acc > best["val_acc"]:
                best = {"step": step, "val_acc": acc,
                        "state": {k: v.clone() for k, v in model.projector.state_dict().items()}}
    model.projector.load_state_dict(best.pop("state"))
    chance = float((1.0 / t["fact_mask"][is_val].any(-1).sum(-1).float()).mean()) if bool(is_val.any()) else float("nan")
    out = {"steps": steps, "rows": int(usable.sum()), "val_rows": int(is_val.sum()), "chosen_step": best["step"],
           "val_acc": best["val_acc"], "val_acc_before": first_acc, "val_chance": chance,
           "train_acc": accuracy(is_tr), "val_index": torch.nonzero(is_val).flatten().tolist()}
    log.info("slot fit: held-out fact accuracy %.3f (before %.3f, chance %.3f) at step %d", out["val_acc"],
             first_acc, chance, best["step"])
    return out


def fit_copy_scale(model, prompt1: list[str], prompt2: list[str], responses: list[str], user_emb, *,
                   batch_size: int = 16, max_scale: float = 40.0, bf16: bool = False) -> dict | None:
    """Refit the fact-copy head's one scalar (``model.fact_copy_scale``) on teacher rows: the scale that
    minimizes the response NLL with each row's own user in the slot, a convex 1-D problem (the logits are
    affine in the scale) solved by ternary search over [0, max_scale]. The decoder runs once; only the
    response positions' logits are kept. Call it after the slot refit (the pointer it scales changed)."""
    if not model.cfg.fact_copy or len(prompt1) == 0:
        return None
    base, dirs, tgts = [], [], []
    scale = float(model.fact_copy_scale.detach())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for s in range(0, len(prompt1), batch_size):
            b = model.creative_batch(prompt1[s:s + batch_size], prompt2[s:s + batch_size],
                                     responses[s:s + batch_size]).to(model.device)
            slot = model.slot_embedding(user_emb[s:s + batch_size].to(model.device))
            d = model.fact_copy_head.direction(model.creative, slot, b.facts)
            tgt = b.labels[:, 1:]
            rows, pos = torch.nonzero(tgt != -100, as_tuple=True)
            if d is None or not len(rows):
                continue
            logits = model._slot_forward(b, slot, labels=False).logits[:, :-1].float()[rows, pos]
            d = d.float()[rows]
            base.append(logits - scale * d)  # the decoder alone: the head's bias taken off again
            dirs.append(d)
            tgts.append(tgt[rows, pos])
    if not base:
        return None
    base, dirs, tgts = torch.cat(base), torch.cat(dirs), torch.cat(tgts)

    def nll(a: float) -> float:
        return float(F.cross_entropy(base + a * dirs, tgts))

    lo, hi = 0.0, float(max_scale)
    for _ in range(40):
        m1, m2 = lo + (hi - lo) / 3, hi - (hi - lo) / 3
        if nll(m1) <= nll(m2):
            hi = m2
        else:
            lo = m1
    best = (lo + hi) / 2
    out = {"scale_before": scale, "scale": best, "nll_at_0": nll(0.0), "nll_before": nll(scale), "nll": nll(best),
           "tokens": int(len(tgts))}
    model.fact_copy_scale.data.fill_(best)
    log.info("fact-copy scale %.2f -> %.2f (response NLL %.4f at 0, %.4f fitted; %d tokens)", out["scale_before"],
             best, out["nll_at_0"], out["nll"], out["tokens"])
    return out


def refit_copy_scale(model, td, item_emb, *, rows: list[int] | None = None, max_rows: int = 96, seed: int = 0,
                     bf16: bool = False) -> dict | None:
    """``fit_copy_scale`` on teacher rows ``rows`` of ``td.rows`` (the slot refit's validation users, whose
    pointer the refit did not train on, so the scale is not fitted to an over-confident pointer); a
    random sample of ``max_rows`` when not given."""
    if not model.cfg.fact_copy or not len(td.rows):
        return None
    idx = list(rows) if rows else np.random.default_rng([seed, 13]).permutation(len(td.rows)).tolist()
    idx = idx[:max_rows]
    r = td.rows.iloc[idx]
    model.eval()
    with torch.no_grad():
        u = model.encode_users([item_emb[td.row_hist[i]] for i in idx], autocast_bf16=bf16).float()
    return fit_copy_scale(model, r["prompt1"].tolist(), r["prompt2"].tolist(), r["response"].tolist(), u, bf16=bf16)

