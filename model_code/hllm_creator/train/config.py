"""The train step's config (one pydantic object, logged to MLflow as params) and its presets."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from hllm_creator.config import StepConfig
from hllm_creator.model.config import ModelConfig


class LossWeights(StepConfig):
    creative: float = Field(1.0, ge=0, description="weight of the creative NLL loss")
    recon: float = Field(1.0, ge=0, description="weight of the profile-reconstruction loss")
    align: float = Field(1.0, ge=0, description="weight of the InfoNCE align loss")
    cls: float = Field(1.0, ge=0, description="weight of the (user, item) BCE loss")
    slot_fact: float = Field(1.0, ge=0, description="the slot points at the fact its user cares about: the slot vs "
                             "the mean word embedding of each of the ad's facts, cross-entropy on the teacher's "
                             "choice (0 = off)")
    contrast: float = Field(1.0, ge=0, description="slot contrast: the own user's response likelier than under "
                            "the slot of another user of the same ad with another target (0 = off)")
    audience: float = Field(0.0, ge=0, description="next-item joint steps: the audience direction on the User LLM's "
                            "states, each positive item picks its query among the step's (ranking users for an ad: "
                            "cold start; needs cls_objective='next_item'; 0 = off)")


class TrainConfig(StepConfig):
    """Everything ``hllm-creator train`` does, in one typed object."""

    data: str = Field(..., description="dataset dir (items.parquet, interactions.parquet, manifest.json)")
    train_parquet: str | None = Field(None, description="teacher training parquet; None = deterministic "
                                                        "stand-in built from the dataset (NOT teacher data)")
    out: str = Field(..., description="model dir to write (atomically)")
    preset: str = "custom"
    model: ModelConfig = ModelConfig()
    weights: LossWeights = LossWeights()
    # objectives / data
    standin_rows: int = Field(256, ge=1, description="rows of the stand-in training parquet")
    min_teacher_rows: int = Field(1, ge=0, description="a teacher parquet with fewer kept rows than this is "
                                  "topped up with stand-in rows (logged, tagged standin_data=partial); "
                                  "0 = never top up, an empty parquet is an error")
    max_creative_rows: int | None = Field(None, ge=1, description="use at most N rows of the training parquet")
    creative_per_step: int = Field(2, ge=1, description="creative/recon/align rows per step")
    cls_per_step: int = Field(64, ge=1, description="users per step for the cls objective")
    cls_negatives: int = Field(128, ge=0, description="catalog negatives sampled per step (shared by the batch)")
    neg_sampling: Literal["uniform", "pop"] = Field("uniform", description="catalog negatives: uniform or sqrt-popularity")
    cls_epochs: float = Field(1.0, gt=0, description="passes over ALL users of the dataset for cls")
    cls_users: int | None = Field(None, ge=1, description="cap the users used for cls (tests)")
    creative_epochs: float = Field(1.0, gt=0, description="passes over the creative rows")
    aux_rows_per_step: int | None = Field(None, ge=1, description="recon/align on the first N creative rows of a "
                                          "step only (each costs two more Creative-LLM passes); None = all")
    slot_refit: bool = Field(False, description="after joint training, fit the projector on the slot-fact loss "
                             "again (slot_fit_steps steps) on the final, frozen User LLM: joint training moves the "
                             "user embeddings (the next-item objective) and the slot's pointer with them")
    slot_fit_steps: int = Field(0, ge=0, description="slot pre-fit before joint training: steps of the slot-fact "
                                "loss on the projector alone, users encoded once (train/slot_fit.py); 0 = off")
    contrast_margin: float = Field(2.0, ge=0, description="margin (nats, summed over the response) of the slot "
                                   "contrast loss")
    group_by_length: int = Field(8, ge=1, description="cls users of every N steps are grouped by history "
                                 "length (less padding in the User LLM); 1 = off")
    head_steps: int = Field(0, ge=0, description="predictor fit after joint training: steps of the cls "
                            "objective on frozen user embeddings (train/head_fit.py); 0 = off")
    head_val_users: int = Field(400, ge=0, description="users held out of the predictor fit to pick its best step")
    head_batch_size: int | None = Field(None, ge=1, description="predictor fit: examples per step (None = cls_per_step)")
    head_negatives: int | None = Field(None, ge=0, description="predictor fit: sampled catalog candidates per step "
                                       "(None = cls_negatives; >= the catalog size = full softmax)")
    head_weight_decay: float = Field(0.01, ge=0, description="predictor fit: AdamW weight decay (the cpu preset's "
                                     "hybrid predictor: 1.0, which keeps rarely clicked items' ID vectors small)")
    head_id_dropout: float = Field(0.0, ge=0, lt=1, description="predictor fit (hybrid predictor): each step every "
                                   "candidate item loses its ID vector with this probability, so the item tower "
                                   "learns to score an item by its text alone, as it must a new ad (cold start; "
                                   "docs/train.md)")
    head_tower_weight_decay: float | None = Field(None, ge=0, description="predictor fit: the LLM towers' own "
                                                   "AdamW decay (None = head_weight_decay for every parameter; set: "
                                                   "head_weight_decay on the ID vectors only)")
    head_audience_weight: float = Field(0.0, ge=0, description="predictor fit (next-item): + this weight x the "
                                        "audience direction's loss (each positive item picks its query among the "
                                        "batch's: ranking users for an ad; cold start, docs/train.md)")
    cls_objective: Literal["last", "next_item"] = Field(
        "last", description="last: BCE on (user, valid target) pairs (one positive per user); next_item: HLLM's "
        "causal objective, the User LLM's state after every history item predicts the next item and [USER] the "
        "valid target, sampled softmax over in-batch + sampled (+ other ranks') candidates; with a dot head")
    cls_val_users: int = Field(0, ge=0, description="users held out of EVERY cls positive (and of the creative "
                               "rows); their history -> valid target picks the predictor fit's step. 0 = the "
                               "predictor fit holds out head_val_users of the cls users instead")
    # optimisation
    lr: float = Field(1e-4, gt=0, description="backbone (User LLM, LoRA / Creative LLM) learning rate")
    head_lr: float = Field(1e-3, gt=0, description="new parts: predictor, projectors, [ITEM]/[USER], temperature")
    user_lr: float | None = Field(None, gt=0, description="the User LLM's learning rate (None = lr); the cpu preset "
                                  "raises it for the next-item objective (docs/train.md, issue 12 table)")
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    max_steps: int | None = Field(None, ge=1, description="override the number of steps")
    seed: int = 0
    # efficiency
    freeze_item_llm: bool = Field(True, description="freeze the Item LLM and encode the catalog once (cached)")
    lora: bool = Field(True, description="LoRA adapters on the Creative LLM (peft) instead of full fine-tuning")
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    freeze_user_llm: bool = False
    bf16: Literal["auto", "on", "off"] = Field("auto", description="auto: on where the CPU/GPU supports bf16")
    gradient_checkpointing: bool = False
    deepspeed: str | None = Field(None, description="DeepSpeed JSON config (GPU, launched by deepspeed/torchrun)")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's choice)")
    # checkpoints / eval / tracking
    checkpoint_dir: str | None = Field(None, description="default: $HLLM_STATE_DIR/checkpoints/<checkpoint key> "
                                       "when HLLM_STATE_DIR is set (the durable work PVC on a cluster), else "
                                       "<out>.checkpoints")
    save_steps: int = Field(50, ge=1)
    resume: bool = Field(True, description="resume from the latest complete checkpoint in checkpoint_dir written "
                         "by the same config (a checkpoint of another config is cleared, not resumed)")
    logging_steps: int = Field(5, ge=1)
    eval_users: int | None = Field(3000, ge=1, description="held-out users evaluated (None = all)")
    register_model: bool = Field(True, description="log + register the model dir in MLflow (alias candidate)")
    item_batch_size: int = 32

    @model_validator(mode="after")
    def _check(self):
        if self.lora and self.model.creative_layers == 0:
            raise ValueError("creative_layers must be >= 1")
        if self.model.predictor_ids and (self.cls_objective != "next_item" or not self.head_steps):
            raise ValueError("model.predictor_ids (the hybrid predictor) is trained by the next-item predictor fit: "
                             "it needs cls_objective='next_item' and head_steps > 0")
        if self.weights.audience and self.cls_objective != "next_item":
            raise ValueError("weights.audience (the audience direction in the joint steps) needs "
                             "cls_objective='next_item'")
        if self.model.predictor_text_bag and not (self.model.predictor_ids and self.freeze_item_llm):
            raise ValueError("model.predictor_text_bag needs model.predictor_ids and a frozen Item LLM "
                             "(freeze_item_llm): it reads the catalog's cached item vectors")
        return self


PRESETS: dict[str, dict] = {
    # unit tests: random tiny-llama everywhere, seconds
    "tiny": dict(model=dict(item_llm="tiny-llama", user_llm="tiny-llama", creative_llm="tiny-llama",
                            predictor_dim=32, predictor_hidden=64, max_history=20, item_max_tokens=32),
                 standin_rows=8, creative_per_step=2, cls_per_step=16, cls_negatives=32, cls_users=64,
                 lora=False, lr=1e-3, head_lr=3e-3, eval_users=64, save_steps=1000, logging_steps=1),
    # the pipeline's demo scale: SmolLM2 backbones, a few minutes on 2 cores
    "demo": dict(model=dict(item_llm="smollm2-135m-instruct", item_layers=2, user_llm="smollm2-135m-instruct",
                            user_layers=2, creative_llm="smollm2-135m-instruct", max_history=20,
                            item_max_tokens=32, fact_copy=True),  # 32 item tokens: the demo's minutes
                 standin_rows=32, creative_per_step=4, aux_rows_per_step=1, slot_fit_steps=300, slot_refit=True,
                 cls_per_step=128,
                 cls_negatives=256, cls_epochs=1.0, lr=2e-4, head_lr=2e-3, head_steps=300, eval_users=2000,
                 save_steps=1000),
    # the full CPU run: 13.5 min on 2 free cores (the budget is 20)
    # budget split (docs/train.md): recommendation side <= ~10 min (cls in the joint steps + the
    # next-item predictor fit + eval), creative side ~8-9 min
    "cpu": dict(model=dict(item_llm="smollm2-135m-instruct", item_layers=2, user_llm="smollm2-135m-instruct",
                           user_layers=4, creative_llm="smollm2-135m-instruct", max_history=30,
                           # the whole item text (median 88 tokens; 32 cut most selling points): warm
                           # Recall@10 0.1135 -> 0.1222 under the recommendation benchmark (docs/train.md)
                           item_max_tokens=128,
                           # rec side (issue 12): mean-pooled frozen Item LLM, cosine head
                           item_pooling="mean", predictor_head="dot", predictor_ids=True,
                           # cold start (issue 27): the user side also reads its last clicks' item-tower vectors
                           predictor_text_bag=True,
                           # creative side (issue 11): the slot's pointer moves the decoder (fact-copy head)
                           fact_copy=True),
                standin_rows=160, cls_per_step=96, cls_epochs=1.0,
                # creative side (issue 11): same-ad pairs (4 rows = 2 pairs a step), recon/align on 1 row,
                # the slot pre-fit; the teacher's ~450 train rows are one pass in ~110 steps
                creative_per_step=4, aux_rows_per_step=1, slot_fit_steps=300, slot_refit=True,
                lr=2e-4, head_lr=2e-3, eval_users=None, save_steps=100,
                # rec side (issue 12): HLLM next-item objective at every position, validation users
                # held out of every positive, then a full-softmax next-item fit on cached states
                cls_objective="next_item", cls_negatives=1024, cls_val_users=500, user_lr=1e-3,
                # the hybrid predictor's ID vectors are fitted there, weight decay 1.0 (docs/train.md)
                head_steps=800, head_batch_size=1024, head_negatives=100_000, head_weight_decay=1.0,
                # cold start (issue 27): the fit also ranks users for an item (docs/train.md, "Cold start")
                head_audience_weight=1.0),
    # GPU: full backbones, ZeRO-2, bf16, flash-attn when importable, gradient checkpointing
    "gpu": dict(model=dict(item_llm="smollm2-135m-instruct", user_llm="smollm2-135m-instruct",
                           creative_llm="smollm2-135m-instruct"),
                creative_per_step=8, cls_per_step=256, cls_negatives=1024, cls_epochs=3.0, lora=False,
                gradient_checkpointing=True, bf16="on", deepspeed="configs/deepspeed/zero2.json",
                eval_users=None, save_steps=500),
    # the paper's scale (docs/train.md "Multi-node"): 64 GPUs as a Kubeflow Trainer TrainJob (8 nodes x 8),
    # TinyLlama-1.1B Item/User LLMs, Qwen3-8B Creative LLM (HF dirs on the shared volume: no hub access),
    # full fine-tuning under DeepSpeed ZeRO-3, bf16, flash-attention 2 (picked by the loader on CUDA)
    "gpu-multinode": dict(model=dict(item_llm="/data/backbones/TinyLlama-1.1B", user_llm="/data/backbones/TinyLlama-1.1B",
                                     creative_llm="/data/backbones/Qwen3-8B", max_history=50, item_max_tokens=64),
                          creative_per_step=4, cls_per_step=64, cls_negatives=1024, cls_epochs=3.0, lora=False,
                          freeze_item_llm=False, gradient_checkpointing=True, bf16="on",
                          deepspeed="/opt/hllm/configs/deepspeed/zero3.json", eval_users=None, save_steps=500,
                          logging_steps=10),
}


def build_config(preset: str = "custom", **overrides) -> TrainConfig:
    """Preset values, then explicit overrides (``model`` merged field by field)."""
    if preset != "custom" and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {['custom', *PRESETS]}")
    base = dict(PRESETS.get(preset, {}))
    model = dict(base.pop("model", {}))
    model.update(overrides.pop("model", {}) or {})
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(preset=preset, model=ModelConfig(**model), **base)


# -- checkpoints and resume ------------------------------------------------------------------------
STATE_ENV = "HLLM_STATE_DIR"
RESUME_KEY_FILE = "resume_key.json"
# fields that do not change what training computes: a checkpoint stays valid across them
_NOT_IN_KEY = {"resume", "checkpoint_dir", "save_steps", "logging_steps", "register_model", "threads"}


def checkpoint_key(cfg: TrainConfig) -> str:
    """What a checkpoint belongs to: a hash of the config minus what does not change training
    (so a retried run finds its own checkpoints; another config never resumes them)."""
    import hashlib
    import json

    blob = json.dumps(cfg.model_dump(mode="json", exclude=_NOT_IN_KEY), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_checkpoint_dir(cfg: TrainConfig) -> str:
    import os

    state = os.environ.get(STATE_ENV)
    if state:
        return f"{state.rstrip('/')}/checkpoints/{checkpoint_key(cfg)}"
    return f"{cfg.out.rstrip('/')}.checkpoints"


def prepare_checkpoints(cfg: TrainConfig, ckpt_dir, *, is_main: bool = True) -> str | None:
    """The checkpoint to resume from (or None), and the dir made ready for this config's checkpoints.

    Only a COMPLETE checkpoint counts (``trainer_state.json`` is written last; a pod killed while
    saving leaves an incomplete one, which is removed). Checkpoints written by another config (a
    different ``resume_key.json``) are removed, never resumed. ``cfg.resume=False``: start fresh
    (earlier checkpoints of this dir are removed so they cannot be picked up later)."""
    import json
    import logging
    import re
    import shutil
    from pathlib import Path

    from hllm_creator.io import write_json

    log = logging.getLogger(__name__)
    ckpt_dir = Path(ckpt_dir)
    key = checkpoint_key(cfg)
    key_file = ckpt_dir / RESUME_KEY_FILE
    found = sorted((p for p in ckpt_dir.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)),
                   key=lambda p: int(p.name.split("-")[1])) if ckpt_dir.is_dir() else []
    old_key = None
    if key_file.exists():
        try:
            old_key = json.loads(key_file.read_text()).get("key")
        except (ValueError, OSError):
            old_key = None
    stale = found if (not cfg.resume or (found and old_key != key)) else [p for p in found
                                                                         if not (p / "trainer_state.json").exists()]
    if found and old_key != key and cfg.resume:
        log.warning("checkpoints in %s belong to another train config (key %s, this one %s): starting fresh",
                    ckpt_dir, old_key, key)
    if is_main:
        for p in stale:
            shutil.rmtree(p, ignore_errors=True)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        write_json({"key": key, "note": "train config hash (hllm_creator.train.config.checkpoint_key)"}, key_file)
    complete = [p for p in found if p not in stale]
    return str(complete[-1]) if complete else None
