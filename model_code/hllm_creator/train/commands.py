"""``hllm-creator train``: train HLLM-Creator and write a model dir (heavy imports inside the body)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from hllm_creator.cli_options import config_options, unprefixed
from hllm_creator.model.config import ModelConfig
from hllm_creator.train.config import LossWeights, TrainConfig, build_config

PRESET_HELP = ("tiny (tiny-llama, tests, seconds) | demo (SmolLM2, pipeline demo scale, a few minutes) | "
               "cpu (SmolLM2, the full 2-core CPU run, ~14 min) | gpu (full backbones, DeepSpeed ZeRO-2, "
               "bf16, flash-attn when importable) | gpu-multinode (paper scale: TinyLlama-1.1B + Qwen3-8B, ZeRO-3, "
               "64 GPUs as a Kubeflow Trainer TrainJob; docs/train.md) | custom (only the flags)")


# the model options the CLI has always offered (the rest of ModelConfig is the training preset's)
MODEL_OPTIONS = ("item_llm", "user_llm", "creative_llm", "item_layers", "user_layers", "creative_layers",
                 "item_max_tokens", "predictor_ids", "predictor_text_bag")


@config_options(ModelConfig, only=MODEL_OPTIONS, overrides=True)
@config_options(LossWeights, prefix="w_", overrides=True)
@config_options(TrainConfig, exclude={"data", "out", "train_parquet", "preset", "model", "weights"},
                overrides=True, names={"max_creative_rows": "--creative-rows",
                                       "register_model": "--register/--no-register",
                                       "freeze_item_llm": "--freeze-item-llm/--train-item-llm"})
def train_cmd(
    data: Path = typer.Option(..., "--data", help="Dataset dir (items.parquet, interactions.parquet, manifest.json)."),
    out: Path = typer.Option(..., "--out", "-o", help="Model dir to write (atomically replaced)."),
    train_parquet: Optional[Path] = typer.Option(
        None, "--train-parquet", help="Teacher training parquet (reference schema). Without it a small "
        "deterministic STAND-IN set is built from the dataset (response = original title): not teacher data."),
    preset: str = typer.Option("cpu", help=PRESET_HELP),
    **opts,
) -> None:
    """Train HLLM-Creator (Item LLM -> User LLM -> predictor + Creative LLM) with its six losses
    (creative, recon, align, cls, slot contrast, slot-fact) on the HF Trainer, evaluate the Item-User
    predictor on held-out targets (AUC, Recall@10, NDCG@10 vs popularity and random), write the model
    dir (with eval.json), and log + register it in MLflow. Every option left out takes the preset's value."""
    from hllm_creator.train.trainer import run_train

    model = {k: opts.pop(k) for k in MODEL_OPTIONS}
    weights = unprefixed(opts, "w_")
    opts = {k: v for k, v in opts.items() if not k.startswith("w_")}
    try:
        cfg = build_config(
            preset, data=str(data), out=str(out), train_parquet=str(train_parquet) if train_parquet else None,
            model={k: v for k, v in model.items() if v is not None},
            weights={k: v for k, v in weights.items() if v is not None} or None, **opts)
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
