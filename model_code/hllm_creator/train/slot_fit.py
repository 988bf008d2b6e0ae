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

log = logging.getLogger(__name__)


def slot_fit(model, td, item_emb, *, steps: int, lr: float, batch_size: int = 64, seed: int = 0,
             val_share: float = 0.1, eval_every: int = 10, bf16: bool = False, on_log=None) -> dict | None:
    """Train ``model.projector`` on the slot-fact loss over ``td.rows``; keep the best validated state."""
    import torch

    from hllm_creator.train.data import fact_tensors

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
        import torch.nn.functional as F

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
           "train_acc": accuracy(is_tr)}
    log.info("slot fit: held-out fact accuracy %.3f (before %.3f, chance %.3f) at step %d", out["val_acc"],
             first_acc, chance, best["step"])
    return out
