"""The cold-start benchmark (benchmarks/cold_start.py): its split (held-out items and every click on them
never reach training; each has >= 5 clicks; seeded), its metrics on hand-made cases, and the predictor
fit's ID dropout (the item tower alone scores a dropped candidate)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cs():
    before = list(sys.path)  # the benchmark puts model_code/ and benchmarks/ on sys.path
    spec = importlib.util.spec_from_file_location("bench_cold_start", ROOT / "benchmarks/quality/cold_start.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    yield mod
    sys.path[:] = before


# ----------------------------------------------------------------------------- split
def test_pick_holdout_seeded_share_and_min_clicks(cs, bundled_dataset):
    ds = bundled_dataset
    a = cs.pick_holdout(ds.items, ds.interactions, share=0.1, min_clicks=5, seed=0)
    assert a == cs.pick_holdout(ds.items, ds.interactions, share=0.1, min_clicks=5, seed=0)
    b = cs.pick_holdout(ds.items, ds.interactions, share=0.1, min_clicks=5, seed=1)
    assert a != b and len(a) == len(b) == round(0.1 * len(ds.items))
    assert len(set(a)) == len(a)
    clicks = ds.interactions[ds.interactions["label"] == 1]["item_id"].astype(str).value_counts()
    assert min(clicks[i] for i in a) >= 5
    hard = cs.pick_holdout(ds.items, ds.interactions, share=0.05, min_clicks=20, seed=0)
    assert min(clicks[i] for i in hard) >= 20
    with pytest.raises(ValueError, match="clicks and a usable title"):
        cs.pick_holdout(ds.items, ds.interactions, share=0.5, min_clicks=50, seed=0)


def test_prepare_split_removes_every_held_out_click(cs, bundled_dataset, tmp_path):
    from hllm_creator.data import load_dataset

    ds = bundled_dataset
    items = ds.items["item_id"].astype(str).tolist()
    # a hand-made teacher parquet: row 0 clean, row 1 has a held-out item in its history, row 2 as its ad
    held = cs.pick_holdout(ds.items, ds.interactions, share=0.1, min_clicks=5, seed=3)
    keep = [i for i in items if i not in set(held)]
    teacher = pd.DataFrame({"item_id_list": [keep[:3], [keep[0], held[0]], keep[3:5]],
                            "target_item_id": [keep[9], keep[8], held[1]], "response": ["a", "b", "c"]})
    teacher.to_parquet(tmp_path / "t.parquet")
    s = cs.prepare_split(ds.path, tmp_path / "w", share=0.1, min_clicks=5, seed=3, teacher=str(tmp_path / "t.parquet"))
    assert s["held_out"] == held
    tr = load_dataset(tmp_path / "w" / "train_data")
    assert not set(held) & set(tr.interactions["item_id"].astype(str))
    assert not set(held) & set(tr.items["item_id"].astype(str))
    n_held_clicks = int(ds.interactions["item_id"].astype(str).isin(set(held)).sum())
    assert len(tr.interactions) == len(ds.interactions) - n_held_clicks == s["interactions"]
    feed = pd.read_json(tmp_path / "w" / "feed.jsonl", lines=True)
    assert sorted(feed["ad_id"]) == sorted(f"FEED-{h}" for h in held)
    t = pd.read_parquet(tmp_path / "w" / "teacher.parquet")
    assert t["response"].tolist() == ["a"] and s["teacher_rows_dropped"] == 2
    # the same parameters again: the split is reused, not redrawn
    again = cs.prepare_split(ds.path, tmp_path / "w", share=0.1, min_clicks=5, seed=3,
                             teacher=str(tmp_path / "t.parquet"))
    assert again == s


# ----------------------------------------------------------------------------- metrics
def test_audience_metrics_hand_made(cs):
    # 6 users; ad 0's clickers {1, 4}, ad 1's {5}
    scores = np.array([[0.1, 0.9, 0.2, 0.8, 0.3, 0.0],     # ranking 1, 3, 4, 2, 0, 5
                       [0.5, 0.5, 0.5, 0.5, 0.5, 0.5]])    # all tied: the tie-break decides
    tiebreak = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])    # desc: 5, 4, 3, 2, 1, 0
    top = cs.top_users(scores, tiebreak, 3)
    assert top.tolist() == [[1, 3, 4], [5, 4, 3]]
    m = cs.audience_metrics(top, [np.array([1, 4]), np.array([5])], k=3)
    assert m["recall@3"] == pytest.approx([1.0, 1.0])
    # ad 0: hits at ranks 1 and 3 -> (1 + 1/log2(4)) / (1 + 1/log2(3))
    assert m["ndcg@3"][0] == pytest.approx((1 + 0.5) / (1 + 1 / np.log2(3)))
    assert m["ndcg@3"][1] == pytest.approx(1.0)
    m2 = cs.audience_metrics(cs.top_users(scores, tiebreak, 2), [np.array([1, 4]), np.array([0])], k=2)
    assert m2["recall@2"] == pytest.approx([0.5, 0.0]) and m2["ndcg@2"][1] == 0.0
    # recall's denominator is min(clickers, k): 3 clickers, k=2, both top slots hit -> 1.0
    assert cs.audience_metrics(np.array([[0, 1]]), [np.array([0, 1, 2])], k=2)["recall@2"][0] == 1.0
    with pytest.raises(ValueError, match="no clicker"):
        cs.audience_metrics(top, [np.array([1]), np.array([], dtype=np.int64)], k=3)


def test_cluster_choice_and_lift_hand_made(cs):
    assign = np.array([0, 0, 1, 1, 2, 2, 2, 3])            # 8 users, 4 clusters
    scores = np.array([[1.0, 3.0, 0.0, 0.0, 5.0, 5.0, 5.0, 0.0]])
    means = cs.mean_by_cluster(scores, assign, 4)
    assert means[0] == pytest.approx([2.0, 0.0, 5.0, 0.0])
    chosen = cs.pick_clusters(means, 2)
    assert chosen.tolist() == [[2, 0]]
    assert cs.pick_clusters(np.array([[1.0, 2.0, 2.0]]), 2).tolist() == [[1, 2]]  # ties: smaller id
    # clickers {0, 4, 7}: 2 of 3 inside clusters {2, 0} (5 of 8 users) -> (2/3) / (5/8)
    lift = cs.cluster_lift(chosen, assign, [np.array([0, 4, 7])])
    assert lift[0] == pytest.approx((2 / 3) / (5 / 8))
    # every clicker inside a chosen cluster of 1/4 of the users -> lift 4
    assert cs.cluster_lift(np.array([[1]]), assign, [np.array([2, 3])])[0] == pytest.approx(4.0)


def test_tfidf_rankers_find_the_matching_users(cs):
    items = pd.DataFrame({"item_id": ["0", "1", "2", "3"], "brand": [None] * 4, "description": [""] * 4,
                          "categories": [[]] * 4,
                          "title": ["digital caliper steel gauge", "caliper digital inch", "nitrile gloves box",
                                    "gloves nitrile large"]})
    hist = [[0], [1], [2], [3], [0, 2]]
    out = cs.tfidf_rankers(items, ["Title: digital caliper with case"], hist, knn=2)
    for name in ("tfidf_user", "item_knn"):
        s, secs = out[name]
        assert s.shape == (1, 5) and secs >= 0
        assert set(np.argsort(-s[0])[:2]) <= {0, 1, 4} and s[0, 2] == s[0, 3] == 0.0


def test_cross_fit_fusion_never_tunes_an_ad_on_itself(cs):
    rng = np.random.default_rng(4)
    base, extra = rng.random((12, 400)), rng.random((12, 400))
    # half the clickers are among extra's favourites: the weight matters
    targets = [np.r_[np.argsort(-extra[i])[:2], rng.choice(400, 2, replace=False)] for i in range(12)]
    tiebreak = rng.random(400)
    scores, ws = cs.cross_fit_fusion(base, extra, targets, tiebreak, seed=1, grid=(0.1, 1.0, 10.0))
    fold = np.random.default_rng([1, 11]).permutation(12) % 2
    z = lambda s: (s - s.mean(1, keepdims=True)) / s.std(1, keepdims=True)  # noqa: E731
    for f in (0, 1):
        assert ws[f] in (0.1, 1.0, 10.0)
        np.testing.assert_allclose(scores[fold == f], (z(base) + ws[f] * z(extra))[fold == f], atol=1e-9)
        # each fold's weight is the grid's best on the OTHER fold
        other = np.where(fold != f)[0]
        rec = [cs.audience_metrics(cs.top_users((z(base) + w * z(extra))[other], tiebreak, cs.K_USERS),
                                   [targets[i] for i in other])[f"recall@{cs.K_USERS}"].mean() for w in (0.1, 1.0, 10.0)]
        assert ws[f] == (0.1, 1.0, 10.0)[int(np.argmax(rec))] and max(rec) > min(rec)
    # a fold's own targets never move its weight: point fold 0's targets at base's favourites
    moved = [np.argsort(-base[i])[:3] if fold[i] == 0 else t for i, t in enumerate(targets)]
    assert cs.cross_fit_fusion(base, extra, moved, tiebreak, seed=1, grid=(0.1, 1.0, 10.0))[1][0] == ws[0]


# ----------------------------------------------------------------------------- ID dropout
def test_next_item_loss_id_dropout():
    from hllm_creator.model.losses import next_item_loss
    from hllm_creator.model.predictor import ItemUserHead

    torch.manual_seed(0)
    head = ItemUserHead(16, 12, d=8, hidden=16, head="dot")
    head.enable_ids(20, recent=3)
    with torch.no_grad():
        head.id_out.weight[:20].normal_()  # ID vectors that matter
    item_emb = torch.randn(20, 12)
    q, pos = torch.randn(5, 16), torch.tensor([1, 4, 4, 7, 9])
    neg = torch.arange(20)
    recent = torch.randint(0, 20, (5, 3))
    base = next_item_loss(head, q, pos, lambda i: item_emb[i], neg, recent=recent)
    same = next_item_loss(head, q, pos, lambda i: item_emb[i], neg, recent=recent, id_dropout=0.0)
    assert torch.allclose(base, same)
    g = torch.Generator().manual_seed(0)
    all_dropped = next_item_loss(head, q, pos, lambda i: item_emb[i], neg, recent=recent, id_dropout=0.999999,
                                 generator=g)
    # every candidate without its ID vector = the item tower alone (the user keeps its ID part)
    ut, it = head.tu(q, recent), head.ti(item_emb)
    want = torch.nn.functional.cross_entropy(head.pair_logits(ut, it), pos)
    assert torch.allclose(all_dropped, want, atol=1e-5)
    assert not torch.allclose(all_dropped, base)
    half = [float(next_item_loss(head, q, pos, lambda i: item_emb[i], neg, recent=recent, id_dropout=0.5,
                                 generator=torch.Generator().manual_seed(s)).detach()) for s in (1, 1, 2)]
    assert half[0] == pytest.approx(half[1]) and half[0] != pytest.approx(half[2])


def test_head_id_dropout_config():
    from hllm_creator.train.config import build_config

    cpu = build_config("cpu", data="d", out="o")
    # the cpu preset's cold-start options (issue 27): the text bag and the audience loss, no ID dropout
    assert cpu.model.predictor_text_bag and cpu.head_audience_weight == 1.0 and cpu.head_id_dropout == 0.0
    with pytest.raises(ValueError):
        build_config("cpu", data="d", out="o", head_id_dropout=1.0)


def test_next_item_loss_audience_direction():
    from hllm_creator.model.losses import next_item_loss
    from hllm_creator.model.predictor import ItemUserHead

    torch.manual_seed(1)
    head = ItemUserHead(16, 12, d=8, hidden=16, head="dot")
    item_emb = torch.randn(10, 12)
    q, pos = torch.randn(4, 16), torch.tensor([2, 5, 2, 7])
    base = next_item_loss(head, q, pos, lambda i: item_emb[i], torch.arange(10))
    both = next_item_loss(head, q, pos, lambda i: item_emb[i], torch.arange(10), audience_weight=0.5)
    # by hand: every query's logit for each query's positive; query 2 shares query 0's positive
    s = head.pair_logits(head.tu(q), head.ti(item_emb[pos]))  # [query, positive of query p]
    cols = s.T.clone()
    cols[0, 2] = cols[2, 0] = float("-inf")
    want = torch.nn.functional.cross_entropy(cols, torch.arange(4))
    assert torch.allclose(both - base, 0.5 * want, atol=1e-5)
    items, aud = next_item_loss(head, q, pos, lambda i: item_emb[i], torch.arange(10), return_audience=True)
    assert torch.allclose(items, base, atol=1e-6) and torch.allclose(aud, want, atol=1e-5)


def test_joint_steps_audience_direction_on_the_user_llm():
    """weights.audience: the joint next-item step also ranks users for each positive, with a gradient
    into the User LLM; off (0) it is not computed."""
    from helpers import tiny_model

    from hllm_creator.train.config import LossWeights, TrainConfig

    torch.manual_seed(0)
    m = tiny_model(seed=0, predictor_head="dot", item_pooling="mean")
    m.item_cache = torch.randn(12, m.item_hidden_size)
    hist = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 0], [7, 8, 9, 10]])
    lens, pos = torch.tensor([4, 3, 4]), torch.tensor([5, 11, 2])
    off = m(hist, lens, pos, torch.arange(12), weights={}, next_item=True)
    assert "audience" not in off
    on = m(hist, lens, pos, torch.arange(12), weights={"audience": 0.5}, next_item=True)
    assert on["cls"] == pytest.approx(float(off["cls"]), abs=1e-5) and float(on["audience"]) > 0
    assert float(on["loss"].detach()) == pytest.approx(float(on["cls"]) + 0.5 * float(on["audience"]), rel=1e-5)
    on["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.user_llm.parameters())
    with pytest.raises(ValueError, match="needs cls_objective='next_item'"):
        TrainConfig(data="d", out="o", weights=LossWeights(audience=1.0), cls_objective="last")


def test_text_bag_user_part_and_save_load(tmp_path):
    from helpers import tiny_model

    from hllm_creator.model.hllm import HLLMCreator

    torch.manual_seed(0)
    m = tiny_model(seed=0, predictor_head="dot", item_pooling="mean", predictor_ids=True, predictor_text_bag=True)
    ids = [f"i{k}" for k in range(6)]
    m.enable_item_ids(ids, recent=3)
    emb = torch.randn(6, m.item_hidden_size)
    p = m.predictor
    with pytest.raises(ValueError, match="enable_text_bag"):
        p.enable_text_bag(emb[:5])
    p.enable_text_bag(emb)
    recent = torch.tensor([[6, 6, 2], [0, 6, 5]])  # 6 = none
    with torch.no_grad():
        got = p.recent_part(recent)
        idp = (p.id_in(recent) * p.id_recency[None, :, None]).sum(1)
        want0 = idp[0] + p.text_recency[2] * p.item_tower(p.std_item(emb[2:3]))[0]
        want1 = idp[1] + p.text_recency[0] * p.item_tower(p.std_item(emb[0:1]))[0] + \
            p.text_recency[2] * p.item_tower(p.std_item(emb[5:6]))[0]
    assert torch.allclose(got[0], want0, atol=1e-5) and torch.allclose(got[1], want1, atol=1e-5)
    with torch.no_grad():
        p.text_recency.mul_(2.0)
    m.save(tmp_path / "m")
    back = HLLMCreator.load(tmp_path / "m")
    with torch.no_grad():
        assert torch.allclose(back.predictor.recent_part(recent), p.recent_part(recent), atol=1e-5)
    assert torch.equal(back.predictor.id_text[:6], emb)


def test_cold_start_predictor_fit_options(bundled_dataset, tmp_path):
    """head_fit with every cold-start option on (text bag, ID dropout, audience loss, the ID vectors'
    own decay) trains (loss falls) and keeps the towers' decay apart from the ID vectors'."""
    from helpers import small_dataset, tiny_model

    from hllm_creator.data import leave_last_out
    from hllm_creator.train import data as tdata
    from hllm_creator.train.head_fit import head_fit

    ds = small_dataset(tmp_path / "ds", n_users=60, source=bundled_dataset.path)
    split = leave_last_out(ds.interactions)
    td = tdata.prepare_train_data(ds, split.users, tdata.build_standin(ds, split.users, 4, seed=0), standin=True,
                                  max_history=10, val_users=8)
    torch.manual_seed(0)
    m = tiny_model(seed=0, max_history=10, item_max_tokens=24, predictor_head="dot", item_pooling="mean",
                   predictor_ids=True, predictor_text_bag=True)
    m.item_cache = m.encode_items(td.item_texts, batch_size=64)
    m.set_stats(m.item_cache, td.cls_hist)
    m.enable_item_ids(td.item_ids, recent=4)
    m.predictor.enable_text_bag(m.item_cache)
    out = head_fit(m, td, m.item_cache, steps=40, batch_size=64, negatives=10_000, lr=3e-3, eval_every=20,
                   next_item=True, weight_decay=1.0, id_dropout=0.5, audience_weight=1.0, tower_weight_decay=0.0)
    assert out["loss_last"] < out["loss_first"]
    # the text bag is trained: the loss reaches its recency weights and the item tower through it
    from hllm_creator.model.losses import next_item_loss
    from hllm_creator.model.predictor import recent_rows

    pred = m.predictor
    for p in pred.parameters():
        p.requires_grad_(True)
    pred.zero_grad()
    hist = [h for h in td.cls_hist[:16]]
    q = m.encode_users([m.item_cache[h] for h in hist])
    next_item_loss(pred, q, torch.tensor(td.cls_pos[:16]), lambda i: m.item_cache[i], torch.arange(len(td.item_ids)),
                   recent=recent_rows(hist, 4, pred.n_ids), id_dropout=0.5, audience_weight=1.0).backward()
    assert pred.text_recency.grad.abs().sum() > 0
    assert pred.item_tower[1].weight.grad.abs().sum() > 0
    m.predictor.train(False)
    with pytest.raises(ValueError, match="id_dropout"):
        m2 = tiny_model(seed=0, max_history=10, item_max_tokens=24, predictor_head="dot")
        head_fit(m2, td, m.item_cache, steps=1, batch_size=8, negatives=8, lr=1e-3, next_item=True, id_dropout=0.5)
    from hllm_creator.train.config import build_config

    with pytest.raises(ValueError, match="predictor_text_bag"):
        build_config("tiny", data="d", out="o", model={"predictor_text_bag": True})
