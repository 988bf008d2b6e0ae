"""The recommendation side: next-item objective over every position, the dot head, mean-pooled items,
validation users held out of every positive and the bootstrap (the benchmark's rankers:
test_bench_recommendation.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hllm_creator.train import data as tdata


@pytest.fixture(scope="module")
def small(tmp_path_factory, bundled_dataset):
    from helpers import small_dataset

    from hllm_creator.data import leave_last_out

    ds = small_dataset(tmp_path_factory.mktemp("small") / "ds", n_users=60, source=bundled_dataset.path)
    split = leave_last_out(ds.interactions)
    rows = tdata.build_standin(ds, split.users, 4, seed=0)
    td = tdata.prepare_train_data(ds, split.users, rows, standin=True, max_history=10, val_users=8)
    return ds, split, td


@pytest.fixture(scope="module")
def model(small):
    from helpers import tiny_model

    _, _, td = small
    torch.manual_seed(0)
    m = tiny_model(seed=0, max_history=10, item_max_tokens=24, predictor_head="dot", item_pooling="mean")
    for p in list(m.item_llm.parameters()) + [m.item_token]:
        p.requires_grad_(False)
    m.item_cache = m.encode_items(td.item_texts, batch_size=64)
    m.set_stats(m.item_cache, td.cls_hist)
    return m


def test_val_users_are_held_out_of_every_positive(small):
    ds, split, td = small
    assert len(td.val_hist) == len(td.val_pos) == len(td.val_user_ids) == 8
    assert len(td.cls_hist) == len(split.users) - 8
    cls_ids = set(split.users["user_id"].astype(str)) - set(td.val_user_ids)
    assert set(td.val_user_ids).isdisjoint(set(td.rows["user_id"].astype(str)))  # not behind a creative row
    assert len(cls_ids) == len(td.cls_hist)
    with pytest.raises(ValueError, match="val_users=1000"):
        tdata.prepare_train_data(ds, split.users, td.rows, standin=True, val_users=1000)


def test_next_item_queries_are_causal_and_cover_every_position(small, model):
    _, _, td = small
    users = [0, 1, 2]
    coll = tdata.BundleCollator(model, td, cls_negatives=16, weights={}, seed=0, next_item=True)
    b = coll([{"step": 0, "rows": [], "cls": users}])
    assert b["next_item"] is True
    model.eval()
    with torch.no_grad():
        h = [model.item_cache[td.cls_hist[u]] for u in users]
        u_emb, pos_h = model.user_forward(h, return_positions=True)
        q, ids = model._next_item_queries(u_emb, pos_h, b["hist_idx"], b["hist_len"], b["pos_idx"])
        # one query per history item (item t -> t + 1, [USER] -> the valid target)
        assert len(q) == sum(len(td.cls_hist[u]) for u in users)
        want = [x for u in users for x in td.cls_hist[u][1:]] + [td.cls_pos[u] for u in users]
        assert ids.tolist() == want
        # causal: the state after item t of a history equals the state after the last item of its prefix
        u = users[0]
        t = len(td.cls_hist[u]) - 2
        _, pre = model.user_forward([h[0][:t + 1]], return_positions=True)
        assert torch.allclose(pre[0, t], pos_h[0, t], atol=1e-4)


def test_next_item_loss_is_full_softmax_with_all_items_and_masks_duplicates(model):
    from hllm_creator.model.losses import next_item_loss

    n = len(model.item_cache)
    q = torch.randn(5, model.user_hidden_size)
    pos = torch.tensor([3, 3, 7, 1, 0])
    emb = lambda ids: model.item_cache[ids]  # noqa: E731
    loss = next_item_loss(model.predictor, q, pos, emb, torch.arange(n))
    full = torch.nn.functional.cross_entropy(model.predictor(q, model.item_cache), pos)
    assert torch.allclose(loss, full, atol=1e-5)
    # in-batch only: candidates are the batch's positives {0, 1, 3, 7}
    loss_ib = next_item_loss(model.predictor, q, pos, emb)
    logits = model.predictor(q, model.item_cache[[0, 1, 3, 7]])
    assert torch.allclose(loss_ib, torch.nn.functional.cross_entropy(logits, torch.tensor([2, 2, 3, 1, 0])), atol=1e-5)


def test_next_item_objective_trains_on_a_tiny_batch(small, model):
    _, _, td = small
    import copy

    m = copy.deepcopy(model)
    m.train()
    coll = tdata.BundleCollator(m, td, cls_negatives=64, weights={"creative": 0, "recon": 0, "align": 0},
                                seed=0, next_item=True)
    b = coll([{"step": 0, "rows": [], "cls": list(range(12))}])
    params = [p for n, p in m.named_parameters() if p.requires_grad and not n.startswith("creative")]
    opt = torch.optim.AdamW(params, lr=3e-3)
    first = None
    for _ in range(8):
        loss = m(**b)["loss"]
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(m(**b)["loss"]) < first - 0.5
    assert m.predictor.log_scale.grad is not None  # the dot head's scale is trained


def test_dot_head_scores_are_probabilities_and_mean_pooling_survives_save_load(model, tmp_path):
    from hllm_creator.model.hllm import HLLMCreator

    u = model.encode_users([model.item_cache[:3], model.item_cache[4:6]])
    s = model.score(u, model.item_cache[:10])
    assert s.shape == (2, 10) and float(s.min()) >= 0 and float(s.max()) <= 1
    texts = ["Green tea, zero sugar", "Stainless steel staples 1/2 inch"]
    pooled = model.encode_items(texts)
    model.save(tmp_path / "m")
    back = HLLMCreator.load(tmp_path / "m")
    assert back.cfg.item_pooling == "mean" and back.cfg.predictor_head == "dot"
    assert torch.allclose(back.encode_items(texts), pooled, atol=1e-5)
    back.cfg.item_pooling = "item_token"
    assert not torch.allclose(back.encode_items(texts), pooled, atol=1e-3)


def test_next_item_predictor_fit_validates_on_held_out_users(small, model):
    import copy

    from hllm_creator.train.head_fit import head_fit, next_item_queries

    _, _, td = small
    m = copy.deepcopy(model)
    q, ids = next_item_queries(m, td, m.item_cache, progress=False)
    assert len(q) == sum(len(h) for h in td.cls_hist)
    out = head_fit(m, td, m.item_cache, steps=60, batch_size=64, negatives=10_000, lr=3e-3, eval_every=20,
                   next_item=True)
    assert out["val_users"] == len(td.val_hist)
    assert out["loss_last"] < out["loss_first"]
    assert out["chosen_step"] in {c["step"] for c in out["curve"]}
    td_noval = copy.copy(td)
    td_noval.val_hist = []
    with pytest.raises(ValueError, match="cls_val_users"):
        head_fit(m, td_noval, m.item_cache, steps=1, batch_size=8, negatives=8, lr=1e-3, next_item=True)


def test_bootstrap_ci_and_paired_difference():
    from hllm_creator.stats import bootstrap_ci
    from hllm_creator.train.evaluate import per_user_metrics, rank_metrics, ranks

    rng = np.random.default_rng(0)
    s = rng.random((400, 50))
    t = rng.integers(0, 50, 400)
    pu = per_user_metrics(ranks(s, t))
    assert pu["recall@10"].mean() == pytest.approx(rank_metrics(s, t)["recall@10"])
    ci = bootstrap_ci(pu, baseline=pu, n_boot=200)
    r = ci["recall@10"]
    assert r["ci"][0] < r["mean"] < r["ci"][1]
    assert r["diff"] == 0 and r["diff_ci"] == [0.0, 0.0]
    better = {k: v + 0.1 for k, v in pu.items()}
    assert bootstrap_ci(better, baseline=pu, n_boot=200)["mrr"]["diff_ci"][0] > 0.09
    with pytest.raises(ValueError, match="same users"):
        bootstrap_ci(pu, baseline={k: v[:10] for k, v in pu.items()})


def test_cpu_preset_trains_the_next_item_recommender():
    from hllm_creator.train.config import build_config

    cfg = build_config("cpu", data="d", out="o")
    assert cfg.cls_objective == "next_item" and cfg.cls_val_users == 500
    assert cfg.model.predictor_head == "dot" and cfg.model.item_pooling == "mean" and cfg.user_lr == 1e-3
    assert cfg.head_steps > 0 and cfg.head_negatives >= 4344  # full softmax over the bundled catalog
    assert build_config("tiny", data="d", out="o").cls_objective == "last"  # other presets unchanged


def test_user_lr_gives_the_user_llm_its_own_optimizer_group(model, tmp_path):
    from transformers import TrainingArguments

    from hllm_creator.train.trainer import _trainer_cls

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", learning_rate=2e-4)
    groups = _trainer_cls()(model=model, args=args, head_lr=2e-3, user_lr=1e-3).create_optimizer().param_groups
    user_ids = {id(p) for p in model.user_llm.parameters() if p.requires_grad}
    by_lr = {g["lr"]: {id(p) for p in g["params"]} for g in groups}
    assert by_lr[1e-3] == user_ids and by_lr[2e-3].isdisjoint(user_ids)
    assert by_lr[2e-4] and by_lr[2e-4].isdisjoint(user_ids)  # the creative LLM keeps the backbone rate
    plain = _trainer_cls()(model=model, args=args, head_lr=2e-3).create_optimizer().param_groups
    assert len(plain) == 2 and user_ids <= {id(p) for p in plain[0]["params"]}


def test_hybrid_predictor_id_parts_fall_back_to_the_llm_towers_and_survive_save_load(small, model, tmp_path):
    import copy

    from hllm_creator.model.hllm import HLLMCreator

    _, _, td = small
    m = copy.deepcopy(model)
    m.enable_item_ids(td.item_ids, recent=3)
    n = len(td.item_ids)
    r = m.recent_index([[td.item_ids[5]], td.item_ids[:5], ["not-an-item", td.item_ids[2]]])
    assert r.tolist() == [[n, n, 5], [2, 3, 4], [n, n, 2]]  # right-aligned, newest last, unknown = none
    assert m.item_index([td.item_ids[7], "new-ad"]).tolist() == [7, n]
    assert float(m.predictor.id_in.weight[n].abs().sum()) == 0 == float(m.predictor.id_out.weight[n].abs().sum())
    with torch.no_grad():
        m.predictor.id_out.weight[:n].normal_()
        m.predictor.id_in.weight[:n].normal_()
    u = m.encode_users([m.item_cache[:3], m.item_cache[4:6]])
    items = m.item_cache[:10]
    text_only = m.score(u, items)
    none_ids = torch.full((10,), n)
    assert torch.allclose(m.score(u, items, item_index=none_ids, recent=torch.full((2, 3), n)), text_only)
    hybrid = m.score(u, items, recent=r[:2], item_index=torch.arange(10))
    assert not torch.allclose(hybrid, text_only, atol=1e-3)  # the ID parts move the scores
    part = m.predictor.recent_part(r[:2])
    assert torch.allclose(m.score(u, items, user_id_part=part, item_index=torch.arange(10)), hybrid, atol=1e-6)
    m.save(tmp_path / "hyb")
    back = HLLMCreator.load(tmp_path / "hyb")
    assert back.predictor_items == list(td.item_ids) and back.predictor.id_recency.numel() == 3
    assert torch.allclose(back.score(u, items, recent=r[:2], item_index=torch.arange(10)), hybrid, atol=1e-5)
    # a model without ID embeddings has no ID parts to pass
    assert model.item_index(td.item_ids[:2]) is None and model.recent_index([td.item_ids[:2]]) is None


def test_hybrid_predictor_fit_trains_id_vectors_on_every_transition(small, model):
    import copy

    from hllm_creator.train.head_fit import head_fit, next_item_queries

    _, _, td = small
    m = copy.deepcopy(model)
    m.enable_item_ids(td.item_ids, recent=4)
    q, ids, rec = next_item_queries(m, td, m.item_cache, progress=False, with_recent=True)
    assert len(q) == len(ids) == len(rec) == sum(len(h) for h in td.cls_hist)
    # each query's newest recent click is the item right before its target, in every history
    H = m.cfg.max_history
    pairs = sorted((h[-H:][t], h[-H:][t + 1]) for h in td.cls_hist for t in range(len(h[-H:]) - 1))
    pairs += [(h[-1], p) for h, p in zip(td.cls_hist, td.cls_pos)]
    assert sorted(zip(rec[:, -1].tolist(), ids.tolist())) == sorted(pairs)
    # the loss reaches both ID tables: the positives' output vectors and the queries' recent clicks
    from hllm_creator.model.losses import next_item_loss

    for p in m.predictor.parameters():
        p.requires_grad_(True)
    m.predictor.zero_grad()
    next_item_loss(m.predictor, q[:32], ids[:32], lambda i: m.item_cache[i], None, recent=rec[:32]).backward()
    n = m.predictor.n_ids
    assert m.predictor.id_out.weight.grad[ids[:32]].abs().sum() > 0
    assert m.predictor.id_in.weight.grad[rec[:32][rec[:32] < n]].abs().sum() > 0
    assert m.predictor.id_in.weight.grad[n].abs().sum() == 0  # "none" stays zero
    m.predictor.zero_grad()
    out = head_fit(m, td, m.item_cache, steps=40, batch_size=64, negatives=10_000, lr=3e-3, eval_every=20,
                   next_item=True, weight_decay=1.0)
    assert out["loss_last"] < out["loss_first"]
    with pytest.raises(ValueError, match="next-item"):
        head_fit(m, td, m.item_cache, steps=1, batch_size=8, negatives=8, lr=1e-3, next_item=False)
    # the held-out evaluation scores with the ID parts: its Recall@10 equals a by-hand ranking
    from hllm_creator.train.evaluate import evaluate, rank_metrics, seen_pairs

    _, split, _ = small
    ev = evaluate(m, m.item_cache, td, split.users, progress=False)
    index = {x: i for i, x in enumerate(td.item_ids)}
    hist = [[index[x] for x in list(h) + [v]][-H:] for h, v in zip(split.users["history"], split.users["valid_target"])]
    ue = m.encode_users([m.item_cache[h] for h in hist])
    with torch.no_grad():
        s = m.predictor(ue, m.item_cache, recent=m.recent_index([[td.item_ids[i] for i in h] for h in hist]),
                        item_ids=torch.arange(len(td.item_ids))).numpy()
    r, c = seen_pairs(split.users, index)
    s[r, c] = -np.inf
    want = rank_metrics(s, np.array([index[x] for x in split.users["test_target"]]))
    assert ev["model"]["recall@10"] == pytest.approx(want["recall@10"]) and ev["model"]["mrr"] == pytest.approx(want["mrr"])


def test_hybrid_predictor_needs_the_next_item_fit():
    from hllm_creator.train.config import build_config

    cfg = build_config("cpu", data="d", out="o")
    assert cfg.model.predictor_ids and cfg.head_weight_decay == 1.0
    with pytest.raises(ValueError, match="predictor_ids"):
        build_config("tiny", data="d", out="o", model={"predictor_ids": True})
    with pytest.raises(ValueError, match="predictor_ids"):
        build_config("cpu", data="d", out="o", head_steps=0)


def test_train_cli_switches_the_hybrid_predictor(tmp_path):
    from typer.testing import CliRunner

    from hllm_creator.cli import app

    r = CliRunner().invoke(app, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "m"), "--preset", "tiny",
                                 "--predictor-ids"])
    assert r.exit_code == 2 and "predictor_ids" in r.output and "next_item" in r.output  # refused before training
    assert "--no-predictor-ids" in CliRunner().invoke(app, ["train", "--help"], terminal_width=200).output
