"""`hllm-creator train` end to end on tiny-llama + a small real dataset: MLflow, model dir, resume."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from hllm_creator.data.schema import DataError

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def small_ds(tmp_path_factory, bundled_dataset):
    from helpers import small_dataset

    return small_dataset(tmp_path_factory.mktemp("small") / "ds", n_users=40, source=bundled_dataset.path)


def _cfg(ds, tmp_path, **kw):
    from hllm_creator.train.config import build_config

    base = dict(data=str(ds.path), out=str(tmp_path / "model"), checkpoint_dir=str(tmp_path / "ckpt"),
                standin_rows=6, cls_per_step=8, cls_negatives=16, max_steps=4, eval_users=None,
                model={"max_history": 10, "item_max_tokens": 24}, bf16="off")
    base.update(kw)
    return build_config("tiny", **base)


def test_train_end_to_end_writes_model_dir_and_mlflow(small_ds, tmp_path):
    import mlflow

    from hllm_creator.model import HLLMCreator
    from hllm_creator.train.trainer import run_train

    res = run_train(_cfg(small_ds, tmp_path, head_steps=20, head_val_users=4))
    out = Path(res["out"])
    for f in ("hllm_config.json", "model.safetensors", "eval.json", "item_embeddings.parquet",
              "train_summary.json", "creative_llm/config.json"):
        assert (out / f).exists(), f
    ev = json.loads((out / "eval.json").read_text())
    for k in ("model", "popularity", "random"):
        assert 0 <= ev[k]["recall@10"] <= 1 and 0 <= ev[k]["auc"] <= 1 and ev[k]["n_users"] == ev["model"]["n_users"]
    assert ev["standin_data"] is True and ev["model"]["n_items"] == len(small_ds.items)
    assert ev["head_fit"]["steps"] == 20 and ev["head_fit"]["chosen_step"] <= 20
    assert "seen items excluded" in ev["protocol"]
    # MLflow: the step run has every loss, the eval figures, the loss-curve figure; the model is registered
    run = mlflow.get_run(res["run_id"])
    for k in ("loss_total", "loss_creative", "loss_recon", "loss_align", "loss_cls",
              "loss_cls_head", "head_val_recall_at_10",
              "eval_model_recall_at_10", "eval_popularity_recall_at_10", "eval_random_ndcg_at_10"):
        assert k in run.data.metrics, k
    assert run.data.tags["step"] == "train" and run.data.params["preset"] == "tiny"
    # set-up values are params, not metric tiles (issue 28)
    assert run.data.params["bf16_used"] in ("True", "False") and int(run.data.params["planned_steps"]) > 0
    assert not {"bf16", "steps", "params_total", "creative_rows"} & set(run.data.metrics)
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(res["run_id"])}
    assert {"loss_curves.png", "eval.json"} <= arts
    mv = mlflow.MlflowClient().get_model_version_by_alias("hllm-creator", "candidate")
    assert mv.run_id == res["run_id"]
    # the dir loads and serves the INTERFACES API; its item cache matches its own Item LLM
    m = HLLMCreator.load(out)
    ie = pd.read_parquet(out / "item_embeddings.parquet")
    assert len(ie) == len(small_ds.items) and len(ie["embedding"].iloc[0]) == m.item_hidden_size
    assert json.loads((out / "item_embeddings.json").read_text())["model_hash"] == m.model_hash


def test_resume_from_checkpoint_reaches_the_same_losses(small_ds, tmp_path):
    from hllm_creator.train.trainer import run_train

    cfg = _cfg(small_ds, tmp_path, max_steps=4, save_steps=2, logging_steps=1, register_model=False,
               eval_users=5)
    full = {h["step"]: h for h in run_train(cfg)["history"] if "loss_total" in h}
    ckpt = Path(cfg.checkpoint_dir)
    assert (ckpt / "checkpoint-2").is_dir() and (ckpt / "checkpoint-4").is_dir()
    shutil.rmtree(ckpt / "checkpoint-4")  # as if the run had stopped after step 2
    resumed = {h["step"]: h for h in run_train(cfg.model_copy(update={"resume": True}))["history"]
               if "loss_total" in h}
    assert set(resumed) == {3, 4}
    for s in (3, 4):
        for k in ("loss_total", "loss_cls", "loss_creative", "loss_align"):
            assert resumed[s][k] == pytest.approx(full[s][k], rel=1e-4, abs=1e-5), (s, k)


def test_bad_training_parquet_names_file_column_row(small_ds, tmp_path):
    from hllm_creator.train.data import load_train_parquet

    index = {x: i for i, x in enumerate(small_ds.items["item_id"])}
    good = {"user_profile": "likes drills", "response": "Drill", "item_id_list": [small_ds.items["item_id"][0]],
            "original_title": "Drill"}
    p = tmp_path / "train.parquet"
    pd.DataFrame([good, {**good, "item_id_list": ["no-such-item"]}]).to_parquet(p)
    with pytest.raises(DataError, match=r"'no-such-item'.*file .*train.parquet, column item_id_list, row 1"):
        load_train_parquet(p, index)
    pd.DataFrame([good, {**good, "response": " "}]).to_parquet(p)
    with pytest.raises(DataError, match="column response, row 1"):
        load_train_parquet(p, index)
    pd.DataFrame([{"response": "x"}]).to_parquet(p)
    with pytest.raises(DataError, match="missing column"):
        load_train_parquet(p, index)
    ok = load_train_parquet(pd.DataFrame([good]).to_parquet(p) or p, index)
    from hllm_creator.creative.prompts import CHAT_CLOSE

    p2 = ok["prompt2"].iloc[0]  # prompts built when absent, in the same chat frame as inference
    assert "Product: Drill" in p2 and p2.endswith(CHAT_CLOSE)
    assert ok["prompt1"].iloc[0].startswith("<|im_start|>system")


def test_empty_teacher_parquet_is_topped_up_with_tagged_standin_rows(small_ds, tmp_path):
    import mlflow

    from hllm_creator.train.trainer import run_train

    cols = ["user_profile", "original_title", "original_description", "prompt1", "prompt2", "response",
            "title_list", "item_id_list", "user_id", "target_item_id"]
    p = tmp_path / "empty.parquet"
    pd.DataFrame({c: pd.Series([], dtype=object) for c in cols}).to_parquet(p)
    res = run_train(_cfg(small_ds, tmp_path, train_parquet=str(p), max_steps=1, eval_users=3, register_model=False))
    assert json.loads((Path(res["out"]) / "eval.json").read_text())["standin_data"] is True
    assert mlflow.get_run(res["run_id"]).data.tags["standin_data"] == "true"
    with pytest.raises(DataError, match="no rows"):
        run_train(_cfg(small_ds, tmp_path, train_parquet=str(p), min_teacher_rows=0, max_steps=1))


def test_deepspeed_configs_parse_and_launch_is_documented():
    for stage, name in ((2, "zero2.json"), (3, "zero3.json")):
        cfg = json.loads((REPO / "configs" / "deepspeed" / name).read_text())
        assert cfg["zero_optimization"]["stage"] == stage
        assert cfg["bf16"]["enabled"] == "auto" and cfg["train_micro_batch_size_per_gpu"] == "auto"
    doc = (REPO / "docs" / "train.md").read_text()
    assert "--deepspeed configs/deepspeed/zero2.json" in doc and "torchrun" in doc
    from hllm_creator.train.config import build_config

    g = build_config("gpu", data="d", out="o")
    assert g.deepspeed == "configs/deepspeed/zero2.json" and g.gradient_checkpointing and g.bf16 == "on"


def test_cli_help_and_clear_error_on_bad_data(tmp_path):
    exe = str(BIN / "hllm-creator")
    h = subprocess.run([exe, "train", "--help"], capture_output=True, text=True, timeout=120)
    assert h.returncode == 0 and "--train-parquet" in h.stdout and "STAND-IN" in h.stdout
    r = subprocess.run([exe, "train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "m"),
                        "--preset", "tiny"], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "missing" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([exe, "train", "--data", "x", "--out", "y", "--preset", "nope"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and "unknown preset" in r.stderr


def test_teacher_rows_train_with_the_slot_objectives(tmp_path, bundled_dataset):
    """construct's contrastive rows -> train: pairs, contrast and slot-fact losses logged, the slot
    pre-fit and the post-training slot refit run (their held-out accuracies in MLflow)."""
    import mlflow

    from hllm_creator.teacher.construct import ConstructConfig, construct
    from hllm_creator.train.trainer import run_train

    construct(ConstructConfig(data=str(bundled_dataset.path), out=str(tmp_path / "t"), ads=4, users_per_fact=3,
                              candidate_users=600, llm_title=False))
    cfg = _cfg(bundled_dataset, tmp_path, train_parquet=str(tmp_path / "t" / "train.parquet"), creative_per_step=4,
               aux_rows_per_step=1, slot_fit_steps=20, slot_refit=True, max_steps=3, cls_users=32, eval_users=32,
               model={"max_history": 10, "item_max_tokens": 24, "fact_copy": True})
    res = run_train(cfg)
    keys = {k for h in res["history"] for k in h}
    assert {"loss_creative", "loss_contrast", "loss_slot_fact"} <= keys
    run = mlflow.get_run(res["run_id"])
    assert "slot_fit_val_acc" in run.data.metrics and "slot_refit_val_acc" in run.data.metrics
    assert 0.0 <= res["metrics"]["slot_refit_val_acc"] <= 1.0
    # the fact-copy scale is refitted after the pointer and saved with the model
    assert "fact_copy_scale" in run.data.metrics and run.data.metrics["fact_copy_nll"] <= \
        run.data.metrics["fact_copy_nll_at_0"] + 1e-6
    from hllm_creator.model import HLLMCreator

    m = HLLMCreator.load(res["out"])
    assert m.cfg.fact_copy and abs(float(m.fact_copy_scale) - res["metrics"]["fact_copy_scale"]) < 1e-4
