"""The cold-start probe of docs/train.md (issue 27): a predictor-fit change measured without retraining.

A model trained on the cold-start split (``benchmarks/cold_start.py --prepare-only``, then
``hllm-creator train --preset cpu``): its frozen backbones and towers are kept, the ID vectors
re-initialized, and the cpu preset's predictor fit (same steps, batch, negatives, decay, validation
users) run again with the change (ID dropout, the text bag, the audience loss, the towers' own
decay); ``train``'s own warm evaluation (all users' test targets) goes into the new model dir's
``eval.json``, which ``benchmarks/cold_start.py --model`` then scores on the held-out items.
The joint steps do not change with these options, so this isolates the predictor fit; a full
``hllm-creator train`` with the chosen options is the measurement that counts.

    .venv/bin/python benchmarks/cold_start_refit.py --model A --split WORK --out M2 \\
        [--id-dropout 0.5] [--text-bag] [--audience 1.0] [--tower-decay 0.01]

Without ``--model`` (``make bench``) it says so and exits.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from benchmarks._common import ROOT


def refit(model_dir: str, split: str, out: str, *, id_dropout: float = 0.0, text_bag: bool = False,
          audience: float = 0.0, tower_decay: float | None = None) -> dict:
    import torch

    from hllm_creator.model.hllm import HLLMCreator
    from hllm_creator.train.config import build_config
    from hllm_creator.train.evaluate import evaluate
    from hllm_creator.train.head_fit import head_fit
    from hllm_creator.train.trainer import bf16_supported, load_data

    teacher = Path(split) / "teacher.parquet"
    cfg = build_config("cpu", data=str(Path(split) / "train_data"),
                       train_parquet=str(teacher) if teacher.exists() else None, out=out)
    data = load_data(cfg)
    td = data.td
    model = HLLMCreator.load(model_dir)
    if model.predictor_items != td.item_ids:
        raise SystemExit(f"{model_dir} was not trained on {split}/train_data (another ID catalog)")
    from benchmarks.quality.cold_start import catalog_embeddings

    item_emb = catalog_embeddings(model, model_dir)
    if getattr(model.predictor, "id_text", None) is not None:
        raise SystemExit(f"{model_dir} has a text bag already: give a model without it")
    torch.manual_seed(0)
    model.predictor.enable_ids(len(td.item_ids), model.cfg.predictor_recent)  # fresh ID vectors
    if text_bag:
        model.cfg.predictor_text_bag = True
        model.predictor.enable_text_bag(item_emb)
    bf16 = bf16_supported()
    t0 = time.time()
    head = head_fit(model, td, item_emb, steps=cfg.head_steps, batch_size=cfg.head_batch_size,
                    negatives=cfg.head_negatives, lr=cfg.head_lr, seed=cfg.seed, val_users=cfg.head_val_users,
                    bf16=bf16, next_item=True, weight_decay=cfg.head_weight_decay, id_dropout=id_dropout,
                    audience_weight=audience, tower_weight_decay=tower_decay)
    secs = time.time() - t0
    ev = evaluate(model, item_emb, td, data.split.users, eval_users=None, seed=cfg.seed, bf16=bf16)
    ev["head_fit"] = head
    change = {"id_dropout": id_dropout, "text_bag": text_bag, "audience_weight": audience,
              "tower_weight_decay": tower_decay}
    model._hash = None
    model.save(out, json_files={"eval.json": ev, "train_summary.json": {
        "note": "cold-start probe: the source model's backbones and towers, ID vectors re-initialized, the cpu "
                "preset's predictor fit re-run with the change", "source_model": str(model_dir), "change": change,
        "head_fit_seconds": secs, "config": {"preset": "cpu (predictor fit re-run)"}}},
        item_embeddings=(td.item_ids, item_emb))
    return {"change": change, "warm": {k: ev["model"][k] for k in ("recall@10", "ndcg@10", "mrr")},
            "chosen_step": head["chosen_step"], "head_fit_seconds": round(secs, 1), "out": str(out)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.environ.get("HLLM_COLD_MODEL"))
    ap.add_argument("--split", default=str(ROOT / ".hllm/cold_start/seed0"), help="cold_start.py's work dir")
    ap.add_argument("--out", default=None)
    ap.add_argument("--id-dropout", type=float, default=0.0)
    ap.add_argument("--text-bag", action="store_true")
    ap.add_argument("--audience", type=float, default=0.0)
    ap.add_argument("--tower-decay", type=float, default=None)
    a = ap.parse_args(argv)
    if not a.model:
        print("cold_start_refit: no --model (or HLLM_COLD_MODEL) given: nothing to re-fit")
        return
    out = a.out or f"{a.model.rstrip('/')}_refit"
    print(json.dumps(refit(a.model, a.split, out, id_dropout=a.id_dropout, text_bag=a.text_bag,
                           audience=a.audience, tower_decay=a.tower_decay)), flush=True)


if __name__ == "__main__":
    main()
