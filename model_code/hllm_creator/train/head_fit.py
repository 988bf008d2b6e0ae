"""Predictor fit: after joint training, train the Item-User predictor on frozen user embeddings.

Joint training moves the User LLM a little per step and each cls step costs a User LLM forward and
backward (seconds on a CPU); the predictor head needs many more steps than that budget allows
(measured: cls loss 1.390 -> 1.384 over 40 joint steps). Here every training user is encoded ONCE
with the trained, now frozen, backbones, and only the predictor is trained on those embeddings
(about 0.1 s a step on 2 cores) with the same BCE objective, in-batch + sampled negatives.
A validation slice of users (held out of this stage) picks the best step (Recall@10), so the head
cannot overfit the few thousand users it sees. Nothing upstream changes: the Creative LLM reads
``projector(std_user(u))``, and neither the projector nor the standardization is touched.

With ``next_item=True`` (``TrainConfig.cls_objective="next_item"``) the fit is a full next-item fit:
the frozen User LLM's state after EVERY history item (-> the next item) and at [USER] (-> the valid
target) is cached once for every cls user (about 5x as many examples as users), and the predictor
is trained with the sampled-softmax next-item loss (``negatives`` >= the catalog size = full
softmax) under bf16 autocast; the validation users are ``td.val_hist`` (held out of every
positive the model trains on, ``TrainConfig.cls_val_users``).

With ID embeddings (``ModelConfig.predictor_ids``, the hybrid predictor) each query also carries its
user's last clicks up to that position (``recent``) and the candidates their catalog ids, and the
ID vectors are trained here, only here (the joint steps train the LLM towers alone); weight decay
(``TrainConfig.head_weight_decay``) keeps the ID vectors of rarely clicked items small.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from hllm_creator.model.losses import cls_loss, next_item_loss
from hllm_creator.model.predictor import recent_rows
from hllm_creator.train.evaluate import rank_metrics

log = logging.getLogger(__name__)


@torch.no_grad()
def next_item_queries(model, td, item_emb, *, bf16: bool = False, batch_size: int = 64, progress: bool = True,
                      with_recent: bool = False):
    """Frozen backbones: every next-item example of the cls users as (query [P, dU], target [P]):
    the User LLM's state after each history item -> the next item, [USER] -> the valid target.
    ``with_recent``: also [P, k] the clicks up to each query's position (the hybrid predictor's
    user-side ID part), in the same order."""
    from tqdm.auto import tqdm

    was = model.training
    model.eval()
    order = sorted(range(len(td.cls_hist)), key=lambda u: len(td.cls_hist[u]))
    qs, ids, recents = [], [], []
    H, k, none = model.cfg.max_history, 0, 0
    if with_recent:
        k, none = model.predictor.id_recency.numel(), model.predictor.n_ids
    starts = range(0, len(order), batch_size)
    for s in (tqdm(starts, desc="predictor fit: encode positions", unit="batch") if progress else starts):
        b = order[s:s + batch_size]
        hl = torch.tensor([len(td.cls_hist[u]) for u in b])
        hi = torch.zeros(len(b), int(hl.max()), dtype=torch.long)
        for r, u in enumerate(b):
            hi[r, :len(td.cls_hist[u])] = torch.tensor(td.cls_hist[u])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16 and model.device.type == "cpu"):
            users, pos_h = model.user_forward([item_emb[td.cls_hist[u]] for u in b], return_positions=True)
            q, t = model._next_item_queries(users, pos_h, hi, hl, torch.tensor([td.cls_pos[u] for u in b]))
        qs.append(q.float().cpu())
        ids.append(t.cpu())
        if with_recent:  # the order of _next_item_queries: each user's positions, then every [USER]
            read = [td.cls_hist[u][-H:] for u in b]
            upto = [r[:t + 1] for r in read for t in range(len(r) - 1)] + read
            recents.append(recent_rows(upto, k, none))
    model.train(was)
    if with_recent:
        return torch.cat(qs), torch.cat(ids), torch.cat(recents)
    return torch.cat(qs), torch.cat(ids)


def head_fit(model, td, item_emb, *, steps: int, batch_size: int, negatives: int, lr: float, seed: int = 0,
             neg_p: np.ndarray | None = None, val_users: int = 400, eval_every: int = 100,
             bf16: bool = False, on_log=None, log_every: int = 10, next_item: bool = False,
             weight_decay: float = 0.01, id_dropout: float = 0.0, audience_weight: float = 0.0,
             tower_weight_decay: float | None = None) -> dict:
    """Train ``model.predictor`` for ``steps`` steps on cached user embeddings; keep the best state.

    ``item_emb`` [n_items, item_hidden]: the catalog's item embeddings (frozen Item LLM).

    ``on_log(step, metrics)`` is called every ``log_every`` steps and at each validation.
    Returns a summary: losses, validation curve, the chosen step.

    ``id_dropout`` (hybrid predictor): each step every candidate loses its ID vector with this
    probability, so the item tower learns to score an item by its text alone (a new ad's case).
    ``audience_weight`` (next-item fit): + that weight x the audience direction's loss (each positive
    item picks its query among the batch's queries: ranking users for an ad, ``next_item_loss``).
    ``tower_weight_decay``: the LLM towers' and the head's own decay (None = ``weight_decay`` for all;
    else ``weight_decay`` applies to the ID vectors and recency weights only).
    """
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    item_emb = item_emb.float()
    n = len(td.cls_hist)
    pred = model.predictor
    ids_on = bool(pred.n_ids)
    if ids_on and not next_item:
        raise ValueError("the hybrid predictor (ID embeddings) is fitted with the next-item objective only "
                         "(cls_objective='next_item')")
    if id_dropout and not ids_on:
        raise ValueError("id_dropout needs the hybrid predictor (ID embeddings)")
    if ids_on and pred.n_ids != len(item_emb):
        raise ValueError(f"the predictor's ID catalog has {pred.n_ids} items, the item embeddings {len(item_emb)}")
    k_recent = pred.id_recency.numel() if ids_on else 0
    all_items = torch.arange(len(item_emb)) if ids_on else None
    val_recent = None
    rng = np.random.default_rng([seed, 7])
    gen = torch.Generator().manual_seed(seed + 17)  # the ID-dropout draws
    model.eval()
    if td.val_hist:  # users held out of every cls positive (TrainConfig.cls_val_users)
        n_val = len(td.val_hist)
        val_hist, val_emb = td.val_hist, model.encode_users([item_emb[h] for h in td.val_hist], autocast_bf16=bf16,
                                                           progress=True, desc="predictor fit: val users").float()
        val_pos = np.asarray(td.val_pos)
        val = np.arange(n_val)
        if ids_on:
            val_recent = recent_rows(td.val_hist, k_recent, pred.n_ids)
    else:
        perm = rng.permutation(n)
        n_val = min(val_users, max(n // 10, 1)) if n >= 20 else 0
        val = perm[:n_val]
    if next_item:
        if not td.val_hist:
            raise ValueError("head_fit(next_item=True) needs validation users held out of every positive "
                             "(TrainConfig.cls_val_users > 0)")
        recent = None
        if ids_on:
            user_emb, pos, recent = next_item_queries(model, td, item_emb, bf16=bf16, with_recent=True)
        else:
            user_emb, pos = next_item_queries(model, td, item_emb, bf16=bf16)
        tr = np.arange(len(pos))
    else:
        user_emb = model.encode_users([item_emb[h] for h in td.cls_hist], autocast_bf16=bf16, progress=True,
                                      desc="head fit: encode users").float()
        pos = torch.as_tensor(td.cls_pos, dtype=torch.long)
        tr = np.setdiff1d(np.arange(n), val) if not td.val_hist else np.arange(n)
    if not td.val_hist:
        val_hist, val_emb, val_pos = [td.cls_hist[u] for u in val], user_emb[val], pos[val].numpy()
    params = list(pred.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    if tower_weight_decay is None:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    else:  # the ID vectors (and recency weights) at weight_decay, the LLM towers and the head at their own
        ids, rest = pred.id_and_other_parameters()
        opt = torch.optim.AdamW([{"params": ids, "weight_decay": weight_decay},
                                 {"params": rest, "weight_decay": tower_weight_decay}], lr=lr)
    sched = get_cosine_schedule_with_warmup(opt, max(1, steps // 20), steps)

    # the next-item fit selects by validation MRR (graded: far less noisy than Recall@10 on a few
    # hundred users; measured: Recall@10-picked steps swung by +-0.01 between neighbouring checks)
    key = "mrr" if next_item else "recall@10"

    def validate() -> dict:
        if not n_val:
            return {"recall@10": float("nan"), "mrr": float("nan")}
        pred.eval()
        with torch.no_grad():
            s = pred(val_emb, item_emb, recent=val_recent, item_ids=all_items).numpy()
        for r, h in enumerate(val_hist):  # the user's own history is not a candidate
            s[r, h] = -np.inf
        pred.train()
        return rank_metrics(s, val_pos)

    v0 = validate()
    best = {"step": 0, "recall@10": v0["recall@10"], key: v0[key],
            "state": {k: v.clone() for k, v in pred.state_dict().items()}}
    curve = [{"step": 0, "val_recall@10": v0["recall@10"], "val_mrr": v0["mrr"]}]
    losses = []
    pred.train()
    bar = tqdm(range(1, steps + 1), desc="head fit", unit="step")
    for step in bar:
        idx = torch.as_tensor(rng.choice(tr, size=min(batch_size, len(tr)), replace=False))
        neg = torch.as_tensor(rng.choice(len(item_emb), size=min(negatives, len(item_emb)), replace=False, p=neg_p))
        if next_item:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16 and item_emb.device.type == "cpu"):
                loss = next_item_loss(pred, user_emb[idx], pos[idx], lambda ids: item_emb[ids], neg,
                                      recent=recent[idx] if ids_on else None, id_dropout=id_dropout,
                                      generator=gen, audience_weight=audience_weight)
        else:
            loss = cls_loss(pred, user_emb[idx], item_emb[pos[idx]], pos[idx], item_emb[neg] if len(neg) else None,
                            neg if len(neg) else None)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if step % log_every == 0 and on_log:
            on_log(step, {"loss_cls_head": float(np.mean(losses[-log_every:]))})
        if step % eval_every == 0 or step == steps:
            v = validate()
            r = v["recall@10"]
            curve.append({"step": step, "val_recall@10": r, "val_mrr": v["mrr"]})
            bar.set_postfix(loss=f"{np.mean(losses[-log_every:]):.3f}", val_r10=f"{r:.3f}", val_mrr=f"{v['mrr']:.4f}")
            if on_log:
                on_log(step, {"head_val_recall_at_10": r, "head_val_mrr": v["mrr"]})
            if not math.isnan(v[key]) and (v[key] > best[key] or (next_item and v[key] == best[key])):
                best = {"step": step, "recall@10": r, key: v[key],
                        "state": {k: v.clone() for k, v in pred.state_dict().items()}}
    if n_val:
        pred.load_state_dict(best.pop("state"))
    else:
        best.pop("state")
        best["step"] = steps
    for p, f in zip(params, flags):
        p.requires_grad_(f)
    q = max(1, len(losses) // 4)
    out = {"steps": steps, "val_users": int(n_val), "chosen_step": best["step"],
           "val_recall@10": best["recall@10"], "selected_by": f"val_{key}", "curve": curve,
           "loss_first": float(np.mean(losses[:q])) if losses else None,
           "loss_last": float(np.mean(losses[-q:])) if losses else None}
    log.info("head fit: cls loss %.4f -> %.4f, best val Recall@10 %.4f at step %d", out["loss_first"] or 0,
             out["loss_last"] or 0, best["recall@10"], best["step"])
    return out
