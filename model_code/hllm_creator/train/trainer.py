"""``hllm-creator train``: HF Trainer over step bundles; per-loss metrics to MLflow; eval; model dir.

One process on CPU (bf16 autocast where the CPU has it), or many GPUs through DeepSpeed/torchrun
(``--deepspeed configs/deepspeed/zero2.json``); the same code path.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from hllm_creator import tracking
from hllm_creator.data import leave_last_out, load_dataset
from hllm_creator.data.schema import DataError
from hllm_creator.io import atomic_path
from hllm_creator.model.hllm import HLLMCreator
from hllm_creator.paths import work_dir
from hllm_creator.train import data as tdata
from hllm_creator.train.config import TrainConfig, default_checkpoint_dir, prepare_checkpoints
from hllm_creator.train.distributed import local_only, rank0_view
from hllm_creator.train.evaluate import evaluate
from hllm_creator.train.head_fit import head_fit
from hllm_creator.train.slot_fit import refit_copy_scale, slot_fit

log = logging.getLogger(__name__)
LOSSES = ("creative", "contrast", "slot_fact", "recon", "align", "cls", "audience")
PANELS = ("loss_total",) + tuple(f"loss_{x}" for x in LOSSES) + ("loss_cls_head",)


def bf16_supported() -> bool:
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001
        return False


def _trainer_cls():
    from transformers import Trainer

    class HLLMTrainer(Trainer):
        """Trainer that logs each loss, uses two learning rates and saves compact checkpoints."""

        def __init__(self, *a, head_lr: float, user_lr: float | None = None, **kw):
            super().__init__(*a, **kw)
            self.head_lr = head_lr
            self.user_lr = user_lr  # the User LLM's own rate (rec side); None = the backbone rate
            self._acc = defaultdict(list)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = model(**inputs)
            for k in LOSSES:
                if k in out:
                    self._acc[k].append(float(out[k]))
            return (out["loss"], out) if return_outputs else out["loss"]

        def log(self, logs, start_time=None):
            if "loss" in logs and self._acc:
                for k, v in self._acc.items():
                    logs[f"loss_{k}"] = sum(v) / len(v)
                self._acc = defaultdict(list)
            super().log(logs, start_time)

        def create_optimizer(self, model=None):
            if self.optimizer is None:
                m = self.model if model is None else model
                head, body, user = [], [], []
                for n, p in m.named_parameters():
                    if p.requires_grad:
                        part = m.param_part(n)  # the model says which part a parameter belongs to
                        (head if part == "head" else
                         user if part == "user_llm" and self.user_lr is not None else body).append(p)
                groups = [g for g in ({"params": body, "lr": self.args.learning_rate},
                                      {"params": head, "lr": self.head_lr},
                                      {"params": user, "lr": self.user_lr}) if g["params"]]
                self.optimizer = torch.optim.AdamW(groups, lr=self.args.learning_rate,
                                                   weight_decay=self.args.weight_decay)
            return self.optimizer

        def _issue_warnings_after_load(self, load_result):
            # compact checkpoints leave out frozen weights: only trainable/buffer keys must be present
            m = self.accelerator.unwrap_model(self.model)
            need = {n for n, p in m.named_parameters() if p.requires_grad} | {n for n, _ in m.named_buffers()}
            missing = [k for k in load_result.missing_keys if k in need]
            if missing or load_result.unexpected_keys:
                raise RuntimeError(f"checkpoint does not match the model: missing {missing[:5]}, "
                                   f"unexpected {load_result.unexpected_keys[:5]}")

        def _save(self, output_dir=None, state_dict=None):
            # compact checkpoint: trainable weights + buffers (frozen backbones never change)
            output_dir = output_dir or self.args.output_dir
            os.makedirs(output_dir, exist_ok=True)
            m = self.accelerator.unwrap_model(self.model)
            keep = {n for n, p in m.named_parameters() if p.requires_grad} | {n for n, _ in m.named_buffers()}
            sd = {k: v.detach().cpu().clone() for k, v in m.state_dict().items() if k in keep}
            torch.save(sd, os.path.join(output_dir, "pytorch_model.bin"))

    return HLLMTrainer


def _callback(history: list, t0: float):
    from transformers import TrainerCallback

    class MLflowLosses(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if not logs or not state.is_world_process_zero:
                return
            m = {("loss_total" if k == "loss" else k): v for k, v in logs.items()
                 if k == "loss" or k.startswith("loss_") or k in ("learning_rate", "grad_norm")}
            if m:
                m["elapsed_s"] = time.time() - t0
                history.append({"step": state.global_step, **m})
                tracking.log_metrics(m, step=state.global_step)

    return MLflowLosses()


def loss_figure(history: list):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # a grid (at most 3 panels a row), not a strip of eight: readable at the UI's preview size
    cols = min(3, len(PANELS))
    rows = -(-len(PANELS) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat[len(PANELS):]:
        ax.set_visible(False)
    for ax, k in zip(axes.flat, PANELS):
        pts = [(h["step"], h[k]) for h in history if k in h]
        if pts:
            ax.plot(*zip(*pts), marker=".")
        ax.set_title(k)
        ax.set_xlabel("step")
    fig.tight_layout()
    return fig


def loss_trend(history: list) -> dict:
    """Mean of the first and last quarter of logged values per loss (``fell`` = last < first)."""
    out = {}
    for k in PANELS:
        v = [h[k] for h in history if k in h]
        if len(v) >= 2:
            q = max(1, len(v) // 4)
            first, last = sum(v[:q]) / q, sum(v[-q:]) / q
            out[k] = {"first": first, "last": last, "fell": last < first}
    return out


def item_cache_path(cfg: TrainConfig, ds) -> Path:
    m = cfg.model
    parts = [m.item_llm, m.item_layers, m.item_max_tokens, ds.manifest.get("sha256"), cfg.seed, "v1"]
    if m.item_pooling != "item_token":
        parts.append(m.item_pooling)
    key = json.dumps(parts, sort_keys=True, default=str)
    return work_dir() / "cache" / f"item_emb_{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def encode_catalog(model, cfg: TrainConfig, ds, texts: list[str], use_bf16: bool):
    """Frozen Item LLM: encode every item once; reused across runs with the same backbone + data."""
    p = item_cache_path(cfg, ds)
    if p.exists() and not cfg.model.item_llm == "tiny-llama":
        obj = torch.load(p, weights_only=True)
        if obj["emb"].shape[0] == len(texts) and torch.equal(obj["item_token"], model.item_token.detach().cpu()):
            log.info("item embeddings: cache hit %s", p)
            return obj["emb"]
    t = time.time()
    emb = model.encode_items(texts, batch_size=cfg.item_batch_size, progress=True, autocast_bf16=use_bf16)
    log.info("encoded %d items in %.1fs", len(texts), time.time() - t)
    with atomic_path(p) as tmp:
        torch.save({"emb": emb, "item_token": model.item_token.detach().cpu()}, tmp)
    return emb


def prefill_align_queue_rows(td, n: int) -> list[int]:
    return list(range(len(td.rows)))[-n:]


def prefill_queue(model, td, n: int, use_bf16: bool) -> None:
    """Fill the align queue with (detached) embeddings of some creative rows before step 1."""
    rows = prefill_align_queue_rows(td, n)
    emb = model.item_cache if model.item_cache is not None else None
    if emb is None:
        return  # Item LLM trained online: the queue fills during training instead
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16 and model.device.type == "cpu"):
        u = model.user_forward([emb[td.row_hist[r]] for r in rows])
        model.prefill_align_queue(u, model.profile_batch(td.rows["user_profile"].iloc[rows].tolist()))


@dataclass
class TrainData:
    """What training reads: the dataset, its leave-last-out split, the creative rows (teacher or
    stand-in) and the prepared tensors' sources (``train.data.TrainData``)."""

    ds: Any
    split: Any
    rows: Any
    standin: bool | str
    td: Any


@dataclass
class Plan:
    """The optimizer steps (bundles of creative + cls rows) and the collator that batches them."""

    bundles: list
    collator: Any


@dataclass
class Fitted:
    """The trained model and what the fit left behind."""

    model: Any
    history: list[dict]
    train_s: float
    training_loss: float
    is_main: bool


def load_data(cfg: TrainConfig) -> TrainData:
    """Dataset -> split -> creative rows (the teacher parquet, topped up or replaced by stand-in rows,
    loudly) -> ``train.data.prepare_train_data``."""
    ds = load_dataset(cfg.data)
    split = leave_last_out(ds.interactions)
    if len(split.users) == 0:
        raise DataError("no user has >= 3 clicks: nothing to train or evaluate", file=str(cfg.data))
    index = {str(x): i for i, x in enumerate(ds.items["item_id"].astype(str))}
    if cfg.train_parquet:
        rows = tdata.load_train_parquet(cfg.train_parquet, index, allow_empty=cfg.min_teacher_rows > 0)
        standin = False
        if len(rows) < cfg.min_teacher_rows:
            # a small teacher (SmolLM2-135M) can keep very few rows: top up, loudly, rather than fail
            extra = tdata.build_standin(ds, split.users, cfg.standin_rows, seed=cfg.seed)
            extra = extra[~extra["user_id"].isin(set(rows["user_id"]))] if "user_id" in rows else extra
            log.warning("teacher parquet %s kept %d rows (< min_teacher_rows=%d): topped up with %d stand-in "
                        "rows. %s", cfg.train_parquet, len(rows), cfg.min_teacher_rows, len(extra),
                        tdata.STANDIN_NOTE)
            rows = pd.concat([rows, extra], ignore_index=True)
            standin = "partial" if len(rows) > len(extra) else True
    else:
        rows = tdata.build_standin(ds, split.users, cfg.standin_rows, seed=cfg.seed)
        standin = True
        log.warning(tdata.STANDIN_NOTE)
    if cfg.max_creative_rows:
        rows = rows.iloc[:cfg.max_creative_rows]
    td = tdata.prepare_train_data(ds, split.users, rows, standin=standin, cls_users=cfg.cls_users,
                                  max_history=cfg.model.max_history, seed=cfg.seed, val_users=cfg.cls_val_users)
    return TrainData(ds=ds, split=split, rows=rows, standin=standin, td=td)


def build_model(cfg: TrainConfig, data: TrainData, use_bf16: bool):
    """HLLMCreator from the config, with what training freezes frozen (the Item LLM's catalog encoded
    once into ``item_cache``), head statistics set, LoRA on the Creative LLM."""
    td = data.td
    model = HLLMCreator.from_config(cfg.model, seed=cfg.seed)
    if cfg.model.predictor_ids:  # the hybrid predictor's ID vectors, over the training catalog
        model.enable_item_ids(td.item_ids)
    if cfg.freeze_item_llm:
        for p in list(model.item_llm.parameters()) + [model.item_token]:
            p.requires_grad_(False)
        model.item_cache = encode_catalog(model, cfg, data.ds, td.item_texts, use_bf16)
    else:
        model.item_tokens = model.tokenize_items(td.item_texts)
    if cfg.model.predictor_text_bag:  # the user side's text bag reads the catalog's frozen item vectors
        model.predictor.enable_text_bag(model.item_cache)
    # standardize LLM hidden states for the heads (massive-activation dims would drown the signal)
    stat_hist = random.Random(cfg.seed).sample(td.cls_hist, min(512, len(td.cls_hist)))
    if model.item_cache is not None:
        model.set_stats(model.item_cache, stat_hist)
    else:
        sub = random.Random(cfg.seed).sample(range(len(td.item_texts)), min(512, len(td.item_texts)))
        emb = torch.zeros(len(td.item_texts), model.item_hidden_size)
        emb[sub] = model.encode_items([td.item_texts[i] for i in sub])
        model.predictor.set_stats(item_emb=emb[sub])
        model.set_stats(emb, [[i for i in h if i in set(sub)] or [sub[0]] for h in stat_hist[:64]])
        model.predictor.set_stats(item_emb=emb[sub])
    if cfg.freeze_user_llm:
        for p in model.user_llm.parameters():
            p.requires_grad_(False)
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        model.creative = get_peft_model(model.creative, LoraConfig(
            r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    if cfg.weights.recon == 0 and cfg.weights.align == 0 and cfg.weights.creative == 0:
        for p in model.creative.parameters():
            p.requires_grad_(False)
    return model


def plan_steps(cfg: TrainConfig, model, data: TrainData) -> Plan:
    td = data.td
    bundles = tdata.make_bundles(td, creative_per_step=cfg.creative_per_step, cls_per_step=cfg.cls_per_step,
                                 cls_epochs=cfg.cls_epochs, creative_epochs=cfg.creative_epochs,
                                 max_steps=cfg.max_steps, seed=cfg.seed, group_by_length=cfg.group_by_length)
    collator = tdata.BundleCollator(model, td, cls_negatives=cfg.cls_negatives,
                                    weights=cfg.weights.model_dump(), seed=cfg.seed, neg_sampling=cfg.neg_sampling,
                                    contrast_margin=cfg.contrast_margin, aux_rows=cfg.aux_rows_per_step,
                                    next_item=cfg.cls_objective == "next_item")
    return Plan(bundles=bundles, collator=collator)


def fit(cfg: TrainConfig, model, data: TrainData, plan: Plan, use_bf16: bool, *, rank0: bool) -> Fitted:
    """The joint fit on the HF Trainer (resumes from this config's latest checkpoint), preceded on a
    fresh start by the slot pre-fit and the align-queue prefill. Per-loss metrics go to the active
    MLflow run (rank 0)."""
    from transformers import TrainingArguments

    td, bundles = data.td, plan.bundles
    ckpt_dir = Path(cfg.checkpoint_dir or default_checkpoint_dir(cfg))
    args = TrainingArguments(
        output_dir=str(ckpt_dir), per_device_train_batch_size=1, num_train_epochs=1, max_steps=len(bundles),
        learning_rate=cfg.lr, weight_decay=cfg.weight_decay, warmup_steps=int(cfg.warmup_ratio * len(bundles)),
        lr_scheduler_type="cosine", logging_steps=cfg.logging_steps, logging_first_step=True,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=2, report_to="none",
        remove_unused_columns=False, label_names=[], dataloader_num_workers=0, seed=cfg.seed,
        data_seed=cfg.seed, bf16=use_bf16, use_cpu=not torch.cuda.is_available(), max_grad_norm=1.0,
        gradient_checkpointing=cfg.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        deepspeed=cfg.deepspeed, disable_tqdm=False,
    )
    history: list[dict] = []
    trainer = _trainer_cls()(model=model, args=args, train_dataset=tdata.BundleDataset(bundles),
                             data_collator=plan.collator, head_lr=cfg.head_lr, user_lr=cfg.user_lr,
                             callbacks=[_callback(history, time.time())])
    # the latest complete checkpoint of THIS config (resume is on by default, in a durable dir)
    resume = prepare_checkpoints(cfg, ckpt_dir, is_main=rank0)
    log.info("resume: %s", resume or "no checkpoint of this config found, starting fresh")
    if resume is None and cfg.slot_fit_steps and cfg.weights.slot_fact and model.item_cache is not None:
        def on_slot_log(step, m):
            if rank0:
                tracking.log_metrics(m, step=step)

        sf = slot_fit(model, td, model.item_cache, steps=cfg.slot_fit_steps, lr=cfg.head_lr, seed=cfg.seed,
                      bf16=use_bf16, on_log=on_slot_log)
        if sf is not None and rank0:
            tracking.log_metrics({f"slot_fit_{k}": v for k, v in sf.items() if isinstance(v, (int, float))})
        model.train()
    if resume is None and cfg.model.align_queue and len(td.rows):
        prefill_queue(model, td, cfg.model.align_queue, use_bf16)
    t_train = time.time()
    result = trainer.train(resume_from_checkpoint=resume)
    train_s = time.time() - t_train
    rank0_view(trainer)  # ZeRO-3: every rank gathers the full weights once, before rank 0 works alone
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.eval()
    return Fitted(model=model, history=history, train_s=train_s, training_loss=float(result.training_loss),
                  is_main=trainer.is_world_process_zero() and rank0)


def refit_heads(cfg: TrainConfig, fitted: Fitted, data: TrainData, plan: Plan, use_bf16: bool,
                metrics: dict) -> tuple[Any, dict | None]:
    """Rank 0, after the joint fit: the item embeddings evaluation and the heads use, the slot's
    post-training refit and the predictor's head fit on frozen user embeddings. Returns
    (item embeddings, head-fit report or None)."""
    model, td = fitted.model, data.td
    item_emb = (model.item_cache if model.item_cache is not None
                else model.encode_items(td.item_texts, batch_size=cfg.item_batch_size, progress=True))
    refit = None
    if cfg.slot_refit and cfg.slot_fit_steps and cfg.weights.slot_fact:
        # the slot's pointer against the FINAL user embeddings (measured: after joint training
        # with the next-item objective the pre-fit pointer was back at chance)
        with local_only():
            refit = slot_fit(model, td, item_emb, steps=cfg.slot_fit_steps, lr=cfg.head_lr, seed=cfg.seed + 1,
                             bf16=use_bf16)
        if refit is not None:
            tracking.log_metrics({f"slot_refit_{k}": v for k, v in refit.items() if isinstance(v, (int, float))})
            metrics["slot_refit_val_acc"] = refit["val_acc"]
    if model.cfg.fact_copy:  # the fact-copy scale for the (re)fitted pointer, on the refit's validation users
        with local_only():
            fc = refit_copy_scale(model, td, item_emb, rows=(refit or {}).get("val_index"), seed=cfg.seed,
                                  bf16=use_bf16)
        if fc is not None:
            tracking.log_metrics({f"fact_copy_{k}": v for k, v in fc.items()})
            metrics["fact_copy_scale"] = fc["scale"]
    head = None
    if cfg.head_steps:
        step0 = len(plan.bundles)

        def on_log(step, m):
            fitted.history.append({"step": step0 + step, **m})
            tracking.log_metrics(m, step=step0 + step)

        t_head = time.time()
        with local_only():  # rank 0 alone: the cls loss must not wait for the other ranks
            head = head_fit(model, td, item_emb, steps=cfg.head_steps,
                            batch_size=cfg.head_batch_size or cfg.cls_per_step,
                            negatives=cfg.cls_negatives if cfg.head_negatives is None else cfg.head_negatives,
                            lr=cfg.head_lr, seed=cfg.seed, neg_p=plan.collator.neg_p,
                            val_users=cfg.head_val_users, bf16=use_bf16, on_log=on_log,
                            log_every=cfg.logging_steps, next_item=cfg.cls_objective == "next_item",
                            weight_decay=cfg.head_weight_decay, id_dropout=cfg.head_id_dropout,
                            audience_weight=cfg.head_audience_weight,
                            tower_weight_decay=cfg.head_tower_weight_decay)
        metrics["head_fit_seconds"] = time.time() - t_head
        tracking.log_metrics({"head_fit_chosen_step": head["chosen_step"]})
    return item_emb, head


def evaluate_model(cfg: TrainConfig, model, item_emb, data: TrainData, trend: dict, head: dict | None,
                   use_bf16: bool) -> dict:
    """Held-out Recall/NDCG/AUC of the predictor vs popularity and random (``train.evaluate``), logged."""
    t_eval = time.time()
    ev = evaluate(model, item_emb, data.td, data.split.users, eval_users=cfg.eval_users, seed=cfg.seed,
                  bf16=use_bf16)
    ev["eval_seconds"] = time.time() - t_eval
    ev["loss_trend"] = trend
    ev["standin_data"] = data.standin
    if head is not None:
        ev["head_fit"] = head
    for name in ("model", "popularity", "random"):
        tracking.log_metrics({f"eval_{name}_{k.replace('@', '_at_')}": v for k, v in ev[name].items()
                              if isinstance(v, (int, float))})
    for k, v in trend.items():
        tracking.log_metrics({f"{k}_first": v["first"], f"{k}_last": v["last"]})
    return ev


def save_model(cfg: TrainConfig, model, data: TrainData, plan: Plan, fitted: Fitted, ev: dict,
               metrics: dict) -> Path:
    """The model dir, atomically as a whole: weights (LoRA merged), eval.json, train_summary.json and,
    with a frozen Item LLM, the item embeddings training used."""
    td = data.td
    model.merge_lora()
    ie = model.item_cache
    summary = {"config": cfg.model_dump(mode="json"), "steps": len(plan.bundles), "train_seconds": fitted.train_s,
               "standin_data": data.standin, "creative_rows": len(td.rows), "cls_users": len(td.cls_pos),
               "head_fit_seconds": metrics.get("head_fit_seconds", 0.0), "val_users": len(td.val_hist or [])}
    return model.save(cfg.out, json_files={"eval.json": ev, "train_summary.json": summary},
                      item_embeddings=(td.item_ids, ie) if ie is not None else None)


def register(cfg: TrainConfig) -> None:
    """Register the model dir in MLflow (alias ``candidate``) under the active train run."""
    tracking.register_model(cfg.out)


def run_train(cfg: TrainConfig) -> dict:
    """The whole step: load_data -> build_model -> plan_steps -> fit -> refit_heads -> evaluate_model
    -> save_model -> register, inside the step's MLflow run (rank 0 alone talks to MLflow)."""
    from transformers import set_seed

    t_start = time.time()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    data = load_data(cfg)
    use_bf16 = cfg.bf16 == "on" or (cfg.bf16 == "auto" and bf16_supported())
    model = build_model(cfg, data, use_bf16)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    plan = plan_steps(cfg, model, data)
    rank0 = int(os.environ.get("RANK", "0")) == 0  # under torchrun/deepspeed only rank 0 talks to MLflow
    ctx = (tracking.step_run("train", cfg, tags={"standin_data": str(data.standin).lower()}) if rank0
           else contextlib.nullcontext(None))
    with ctx as run:
        if rank0:
            # what the run was set up with: params (one value per run), not metrics
            tracking.log_params({"params_trainable": n_train, "params_total": n_all, "planned_steps": len(plan.bundles),
                                 "creative_rows_used": len(data.td.rows), "cls_users_used": len(data.td.cls_pos),
                                 "bf16_used": use_bf16})
        if data.standin and rank0:
            tracking.log_json({"note": tdata.STANDIN_NOTE, "rows": len(data.rows)}, "standin_data")
        fitted = fit(cfg, model, data, plan, use_bf16, rank0=rank0)
        model = fitted.model
        metrics = {"train_seconds": fitted.train_s, "train_loss": fitted.training_loss}
        ev = head = item_emb = None
        if fitted.is_main:
            item_emb, head = refit_heads(cfg, fitted, data, plan, use_bf16, metrics)
        trend = loss_trend(fitted.history)
        if fitted.is_main:
            ev = evaluate_model(cfg, model, item_emb, data, trend, head, use_bf16)
            if fitted.history:
                tracking.log_figure(loss_figure(fitted.history), "loss_curves.png")
                tracking.log_table(pd.DataFrame(fitted.history), "loss_history")
            save_model(cfg, model, data, plan, fitted, ev, metrics)
            tracking.log_json(ev, "eval.json")
            metrics["total_seconds"] = time.time() - t_start
            tracking.log_metrics(metrics)
            if cfg.register_model:
                register(cfg)
        return {"out": cfg.out, "run_id": run.info.run_id if run is not None else None, "eval": ev,
                "metrics": metrics, "loss_trend": trend, "history": fitted.history, "standin": data.standin,
                "steps": len(plan.bundles)}
