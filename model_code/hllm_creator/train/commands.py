"""``hllm-creator train``: train HLLM-Creator and write a model dir (heavy imports inside the body)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

PRESET_HELP = ("tiny (tiny-llama, tests, seconds) | demo (SmolLM2, pipeline demo scale, a few minutes) | "
               "cpu (SmolLM2, the full 2-core CPU run, ~11 min) | gpu (full backbones, DeepSpeed ZeRO-2, "
               "bf16, flash-attn when importable) | gpu-multinode (paper scale: TinyLlama-1.1B + Qwen3-8B, ZeRO-3, "
               "64 GPUs as a Kubeflow Trainer TrainJob; docs/train.md) | custom (only the flags)")


def train_cmd(
    data: Path = typer.Option(..., "--data", help="Dataset dir (items.parquet, interactions.parquet, manifest.json)."),
    out: Path = typer.Option(..., "--out", "-o", help="Model dir to write (atomically replaced)."),
    train_parquet: Optional[Path] = typer.Option(
        None, "--train-parquet", help="Teacher training parquet (reference schema). Without it a small "
        "deterministic STAND-IN set is built from the dataset (response = original title): not teacher data."),
    preset: str = typer.Option("cpu", help=PRESET_HELP),
    item_llm: Optional[str] = typer.Option(None, help="Item LLM backbone: smollm2-135m-instruct | tiny-llama | HF dir."),
    user_llm: Optional[str] = typer.Option(None, help="User LLM backbone."),
    creative_llm: Optional[str] = typer.Option(None, help="Creative LLM backbone (also the recon/align decoder)."),
    item_layers: Optional[int] = typer.Option(None, help="Keep the first N layers of the Item LLM."),
    user_layers: Optional[int] = typer.Option(None, help="Keep the first N layers of the User LLM."),
    creative_layers: Optional[int] = typer.Option(None, help="Keep the first N layers of the Creative LLM."),
    max_steps: Optional[int] = typer.Option(None, help="Override the number of optimizer steps."),
    cls_epochs: Optional[float] = typer.Option(None, help="Passes over ALL users for the cls objective."),
    head_steps: Optional[int] = typer.Option(
        None, help="Predictor fit after joint training: cls steps on frozen user embeddings, best step picked "
        "on held-out users (0 = off; preset cpu 800, demo 300)."),
    predictor_ids: Optional[bool] = typer.Option(
        None, "--predictor-ids/--no-predictor-ids", help="Hybrid predictor: ID vectors of the training catalog's "
        "items beside the LLM towers (the user's last 8 clicks + the item's own), fitted in the next-item predictor "
        "fit (preset cpu: on; needs the next-item objective and --head-steps > 0). --no-predictor-ids: the LLM "
        "towers alone (what scores items and histories outside the catalog)."),
    head_id_dropout: Optional[float] = typer.Option(
        None, help="Hybrid predictor fit: the probability that a candidate item loses its ID vector in a step (the "
        "item tower alone scores it, as a new ad; cold start, docs/train.md)."),
    head_audience_weight: Optional[float] = typer.Option(
        None, help="Next-item predictor fit: weight of the audience direction's loss (each positive item picks its "
        "user among the batch's; ranks an ad's audience; cold start, docs/train.md)."),
    predictor_text_bag: Optional[bool] = typer.Option(
        None, "--predictor-text-bag/--no-predictor-text-bag", help="Hybrid predictor: the user side also adds the "
        "item tower's vectors of the last clicks (their text; what a new ad is compared with; cold start, "
        "docs/train.md)."),
    cls_per_step: Optional[int] = typer.Option(None, help="Users per step (per rank) for the cls objective."),
    creative_rows: Optional[int] = typer.Option(None, "--creative-rows",
                                                help="Use at most N rows of the training parquet."),
    standin_rows: Optional[int] = typer.Option(None, help="Rows of the stand-in set (no --train-parquet)."),
    w_creative: Optional[float] = typer.Option(None, help="Weight of the creative NLL loss (default 1)."),
    w_recon: Optional[float] = typer.Option(None, help="Weight of the profile-reconstruction loss (default 1)."),
    w_align: Optional[float] = typer.Option(None, help="Weight of the InfoNCE align loss (default 1)."),
    w_cls: Optional[float] = typer.Option(None, help="Weight of the (user, item) BCE loss (default 1)."),
    w_contrast: Optional[float] = typer.Option(None, help="Weight of the slot contrast loss: a row's response "
                                               "likelier under its own user's slot than under the slot of "
                                               "another user of the same ad (default 1; 0 = off)."),
    w_slot_fact: Optional[float] = typer.Option(None, help="Weight of the slot-fact loss: the slot points, in the "
                                                "Creative LLM's word space, at the fact the teacher chose for "
                                                "its user (default 1; 0 = off)."),
    slot_fit_steps: Optional[int] = typer.Option(None, help="Slot pre-fit: steps of the slot-fact loss on the "
                                                 "projector alone before joint training (0 = off)."),
    creative_per_step: Optional[int] = typer.Option(None, help="Creative rows per step (pairs of the same ad "
                                                    "with different targets stay together)."),
    creative_epochs: Optional[float] = typer.Option(None, help="Passes over the creative rows."),
    lora: Optional[bool] = typer.Option(None, "--lora/--no-lora", help="LoRA (peft) on the Creative LLM."),
    freeze_item_llm: Optional[bool] = typer.Option(
        None, "--freeze-item-llm/--train-item-llm", help="Freeze the Item LLM and encode the catalog once (cached)."),
    bf16: Optional[str] = typer.Option(None, help="auto | on | off (auto: on where the hardware has bf16)."),
    gradient_checkpointing: Optional[bool] = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing"),
    deepspeed: Optional[Path] = typer.Option(None, help="DeepSpeed JSON (configs/deepspeed/zero2.json|zero3.json); "
                                                        "launch with `deepspeed` or `torchrun` (docs/train.md)."),
    lr: Optional[float] = typer.Option(None, help="Backbone learning rate."),
    head_lr: Optional[float] = typer.Option(None, help="Learning rate of the new parts (predictor, projectors)."),
    checkpoint_dir: Optional[Path] = typer.Option(None, help="Trainer checkpoints (default <out>.checkpoints)."),
    save_steps: Optional[int] = typer.Option(None, help="Checkpoint every N steps."),
    resume: bool = typer.Option(False, "--resume", help="Resume from the latest checkpoint in --checkpoint-dir."),
    eval_users: Optional[int] = typer.Option(None, help="Held-out users to evaluate (default: preset)."),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads."),
    seed: Optional[int] = typer.Option(None, help="Random seed."),
    register: Optional[bool] = typer.Option(None, "--register/--no-register",
                                            help="Log and register the model in MLflow (alias candidate)."),
) -> None:
    """Train HLLM-Creator (Item LLM -> User LLM -> predictor + Creative LLM) with its four losses
    (creative, recon, align, cls) on the HF Trainer, evaluate the Item-User predictor on held-out
    targets (AUC, Recall@10, NDCG@10 vs popularity and random), write the model dir (with eval.json),
    and log + register it in MLflow."""
    from hllm_creator.train.config import build_config
    from hllm_creator.train.trainer import run_train

    model = {k: v for k, v in dict(item_llm=item_llm, user_llm=user_llm, creative_llm=creative_llm,
                                    item_layers=item_layers, user_layers=user_layers,
                                    creative_layers=creative_layers, predictor_ids=predictor_ids,
                                    predictor_text_bag=predictor_text_bag).items()
             if v is not None}
    weights = {k: v for k, v in dict(creative=w_creative, recon=w_recon, align=w_align, cls=w_cls,
                                     contrast=w_contrast, slot_fact=w_slot_fact).items()
               if v is not None}
    try:
        cfg = build_config(
            preset, data=str(data), out=str(out), train_parquet=str(train_parquet) if train_parquet else None,
            model=model, weights=weights or None, max_steps=max_steps, cls_epochs=cls_epochs, head_steps=head_steps,
            max_creative_rows=creative_rows, creative_per_step=creative_per_step, slot_fit_steps=slot_fit_steps,
            creative_epochs=creative_epochs, standin_rows=standin_rows, lora=lora, freeze_item_llm=freeze_item_llm,
            cls_per_step=cls_per_step, head_id_dropout=head_id_dropout,
            head_audience_weight=head_audience_weight,
            bf16=bf16, gradient_checkpointing=gradient_checkpointing, deepspeed=str(deepspeed) if deepspeed else None,
            lr=lr, head_lr=head_lr, checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None,
            save_steps=save_steps, resume=resume or None, eval_users=eval_users, threads=threads, seed=seed,
            register_model=register)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    res = run_train(cfg)
    ev = res["eval"] or {}
    summary = {"out": res["out"], "run_id": res["run_id"], "steps": res["steps"], "standin_data": res["standin"],
               "loss_trend": res["loss_trend"],
               "recall@10": {k: ev.get(k, {}).get("recall@10") for k in ("model", "popularity", "random")},
               "ndcg@10": {k: ev.get(k, {}).get("ndcg@10") for k in ("model", "popularity", "random")},
               "auc": {k: ev.get(k, {}).get("auc") for k in ("model", "popularity", "random")},
               "head_fit": {k: v for k, v in (ev.get("head_fit") or {}).items() if k != "curve"} or None,
               "seconds": res["metrics"]}
    typer.echo(json.dumps(summary, indent=2, default=str))
