"""dataset-construct without an LLM (the deterministic title step): contrastive, grounded, held-out rows."""

from __future__ import annotations

import json

import pandas as pd

from hllm_creator.creative.gate import title_reasons
from hllm_creator.creative.holdout import is_heldout
from hllm_creator.data import leave_last_out
from hllm_creator.infer.match import default_ads
from hllm_creator.teacher.construct import REFERENCE_COLUMNS, ConstructConfig, adds_content_word, construct


def test_deterministic_construct_is_contrastive_grounded_and_holds_users_out(tmp_path, bundled_dataset):
    cfg = ConstructConfig(data=str(bundled_dataset.path), out=str(tmp_path / "c"), ads=6, users_per_fact=2,
                          heldout_per_ad=2, candidate_users=800, llm_title=False)
    summary = construct(cfg)
    train = pd.read_parquet(tmp_path / "c" / "train.parquet")
    rej = pd.read_parquet(tmp_path / "c" / "rejected.parquet")
    assert list(train.columns[:len(REFERENCE_COLUMNS)]) == REFERENCE_COLUMNS
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["kept"] == len(train) > 0
    assert set(train["target_item_id"]) <= set(default_ads(bundled_dataset.items, bundled_dataset.interactions, 6))
    # held-out users only in split=heldout rows, and every heldout row is a held-out user
    assert (train["user_id"].map(is_heldout) == (train["split"] == "heldout")).all()
    assert summary["kept_heldout"] > 0 and summary["kept_train"] > 0
    # the teacher never reads a user's last two clicks
    split = leave_last_out(bundled_dataset.interactions).users.set_index("user_id")
    for r in train.itertuples():
        u = split.loc[r.user_id]
        assert list(r.item_id_list) == list(u["history"])[-50:]
        assert r.target_item_id not in set(u["history"]) | {u["valid_target"], u["test_target"]}
    # every response passes the gate, adds a content word, features its fact
    items = bundled_dataset.items.set_index("item_id")
    for r in train.itertuples():
        assert title_reasons(r.response, items.loc[r.target_item_id].to_dict()) == [], r.response
        assert adds_content_word(r.response, r.original_title) and r.featured_fact.lower() in r.response.lower()
        assert r.featured_fact == r.facts[r.fact_index] and r.title_source == "template"
    assert summary["copy_rate"] == 0.0
    # contrast: the same ad with users of different interests gets different titles
    tr = train[train["split"] == "train"]
    assert (tr.groupby("target_item_id")["response"].nunique() >= 2).sum() >= 3
    assert summary["distinct_titles_per_ad"] > 1.5
    assert rej["reason"].map(lambda x: isinstance(x, str) and len(x) > 0).all()
    # deterministic
    construct(cfg.model_copy(update={"out": str(tmp_path / "c2")}))
    again = pd.read_parquet(tmp_path / "c2" / "train.parquet")
    assert again["response"].tolist() == train["response"].tolist()
