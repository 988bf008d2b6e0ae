"""benchmarks/recommendation.py + rec_rankers.py: one split and protocol for every ranker (no valid or
test target enters training, the same inputs/targets for all), the tuning loop, and a tiny-data smoke
of each ranker: the project's SASRec, RecBole's SASRec and BERT4Rec (skipped cleanly when the optional
``bench`` extra, RecBole, is not installed) and the HLLM predictor head re-fit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.quality import rec_rankers as rr

ROOT = Path(__file__).resolve().parents[2]

FAST = {"max_epochs": 4, "eval_every": 2, "patience": 2, "seed": 0}


def toy_split(n_users: int = 40, n_items: int = 30, seed: int = 0) -> rr.Split:
    """Users walking a cycle (item i -> i+1), random start and length: a next-item pattern to learn."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        start, n = int(rng.integers(n_items)), int(rng.integers(4, 9))
        seq = [f"i{(start + t) % n_items}" for t in range(n)]
        rows.append({"user_id": f"u{u}", "history": seq[:-2], "valid_target": seq[-2], "test_target": seq[-1]})
    return rr.split_from_users(pd.DataFrame(rows), [f"i{i}" for i in range(n_items)])


@pytest.fixture(scope="module")
def small_split(tmp_path_factory, bundled_dataset):
    from helpers import small_dataset

    ds = small_dataset(tmp_path_factory.mktemp("rec") / "ds", n_users=60, source=bundled_dataset.path)
    return ds, rr.load_split(str(ds.path))


def test_split_gives_every_ranker_the_same_inputs_and_no_target_enters_training(small_split):
    ds, sp = small_split
    from hllm_creator.data import leave_last_out

    users = leave_last_out(ds.interactions).users
    assert sp.n_users == len(users) and sp.n_items == len(ds.items)
    ex = sp.train_examples()
    assert len(ex) == sum(len(h) - 1 for h in sp.hist)  # every next-item position of every history
    for u, prefix, target in ex:
        h = sp.hist[u]
        pos = len(prefix)
        assert prefix == h[:pos] and target == h[pos]  # inside the history only
    assert sp.inputs("valid") == sp.hist
    assert sp.inputs("test") == [h + [int(v)] for h, v in zip(sp.hist, sp.valid)]
    assert np.array_equal(sp.targets("valid"), sp.valid) and np.array_equal(sp.targets("test"), sp.test)
    # the bundled data has no repeat clicks: a user's valid/test targets are in none of their training examples
    for u, prefix, target in ex:
        assert sp.valid[u] not in prefix + [target] and sp.test[u] not in prefix + [target]
    # popularity at validation knows only the histories; at test also the valid targets (inputs)
    assert sp.popularity("valid").sum() == sum(map(len, sp.hist))
    assert sp.popularity("test").sum() == sum(map(len, sp.hist)) + sp.n_users
    with pytest.raises(ValueError, match="stage"):
        sp.inputs("train")


def test_refit_split_trains_on_history_plus_valid_and_its_valid_stage_is_the_test_protocol():
    sp = toy_split()
    r = sp.refit_split()
    assert r.inputs("valid") == sp.inputs("test") and np.array_equal(r.targets("valid"), sp.test)
    assert len(r.train_examples()) == len(sp.train_examples()) + sp.n_users  # + each history -> valid target
    assert all(sp.test[u] not in p + [t] for u, p, t in r.train_examples())  # still no test target
    with pytest.raises(ValueError, match="no test stage"):
        r.inputs("test")


def test_truncated_examples_keep_the_last_items():
    sp = toy_split()
    for (u, p, t), (u2, p2, t2) in zip(sp.train_examples(), sp.train_examples(maxlen=2)):
        assert (u, t) == (u2, t2) and p2 == p[-2:]


def test_per_user_excludes_the_input_items_and_checks_the_shape():
    sp = toy_split()
    s = np.zeros((sp.n_users, sp.n_items))
    for u, h in enumerate(sp.inputs("test")):
        s[u, h[-1]] = 10.0  # a seen item on top: must not count
        s[u, sp.test[u]] = 5.0
    pu = rr.per_user(s, sp, "test")
    assert pu["recall@10"].mean() == 1.0 and pu["mrr"].mean() == 1.0
    assert s[0, sp.inputs("test")[0][-1]] == 10.0  # the caller's matrix is not changed
    with pytest.raises(ValueError, match="scores must be"):
        rr.per_user(s[:, :-1], sp, "test")


def test_sample_configs_is_seeded_distinct_and_inside_the_grid():
    grid = {"lr": [1, 2, 3], "dropout": [0.1, 0.2], "maxlen": [5, 10]}
    a, b = rr.sample_configs(grid, 5, seed=0), rr.sample_configs(grid, 5, seed=0)
    assert a == b and len({tuple(sorted(c.items())) for c in a}) == 5
    assert all(c[k] in grid[k] for c in a for k in grid)
    assert len(rr.sample_configs(grid, 100, seed=0)) == 12  # the whole product when smaller


def test_early_stopping_keeps_the_best_check_and_stops_after_patience():
    vals = iter([0.1, 0.3, 0.2, 0.25, 0.2, 0.9])
    state = {"ep": 0}

    def train_epoch(e):
        state["ep"] = e
        return 1.0 / e

    best = rr.early_stopping(train_epoch, lambda: next(vals), lambda: state["ep"], max_epochs=20, eval_every=1,
                             patience=3)
    assert best["epoch"] == 2 and best["state"] == 2 and best["val_ndcg@10"] == 0.3
    assert [c["epoch"] for c in best["curve"]] == [1, 2, 3, 4, 5]  # stopped before the late 0.9


def test_own_sasrec_learns_a_next_item_pattern_and_tune_picks_by_validation():
    sp = toy_split(n_users=120)
    grid = {"lr": [5e-3, 1e-5], "dropout": [0.1], "maxlen": [5]}
    tuned = rr.tune("sasrec", grid, lambda c: rr.fit_sasrec(sp, c, max_epochs=16, eval_every=4, patience=4,
                                                            seed=0, batch=32),
                    n_configs=2, seed=0, log=lambda *_: None)
    rec = tuned["record"]
    assert len(rec["trials"]) == 2 and rec["chosen"]["lr"] == 5e-3  # the one that learns
    s = tuned["score"]("test")
    assert s.shape == (sp.n_users, sp.n_items)
    test = rr.mean_metrics(rr.per_user(s, sp, "test"))
    pop = rr.mean_metrics(rr.per_user(rr.popularity_scores(sp, "test"), sp, "test"))
    assert test["ndcg@10"] > pop["ndcg@10"] + 0.1


def _need_recbole():
    if not rr.recbole_available():
        pytest.skip("RecBole is not installed (the optional `bench` extra: pip install -e '.[bench]')")


def test_atomic_files_hold_exactly_the_split(tmp_path):
    sp = toy_split()
    d = rr.write_atomic(sp, tmp_path, "toy", maxlen=3)
    read = {st: pd.read_csv(d / f"toy.{st}.inter", sep="\t", dtype=str) for st in ("train", "valid", "test")}
    tok = {x: i for i, x in enumerate(sp.item_ids)}

    def rows(df):
        return [(r["user_id:token"], [tok[x] for x in str(r["item_id_list:token_seq"]).split()], tok[r["item_id:token"]])
                for _, r in df.iterrows()]

    assert rows(read["train"]) == [(sp.user_ids[u], p, t) for u, p, t in sp.train_examples(maxlen=3)]
    for st in ("valid", "test"):
        assert rows(read[st]) == [(sp.user_ids[u], s[-3:], int(t))
                                  for u, (s, t) in enumerate(zip(sp.inputs(st), sp.targets(st)))]
    assert (d / "toy.item").read_text().split()[1:] == sp.item_ids


@pytest.mark.parametrize("model_name", ["SASRec", "BERT4Rec"])
def test_recbole_rankers_train_and_score_our_split(model_name, tmp_path):
    _need_recbole()
    sp = toy_split(n_users=60)
    import torch

    best, score = rr.fit_recbole(model_name, sp, {"lr": 5e-3, "dropout": 0.1, "maxlen": 5}, work=tmp_path, **FAST)
    assert not torch.is_anomaly_enabled()  # RecBole's import-time set_detect_anomaly(True) is undone
    assert best["skipped_nonfinite_batches"] == 0
    assert [c["epoch"] for c in best["curve"]][:1] == [2] and best["epoch"] in (2, 4)
    for st in ("valid", "test"):
        s = score(st)
        assert s.shape == (sp.n_users, sp.n_items) and np.isfinite(s).all()
    pu = rr.per_user(score("test"), sp, "test")
    assert set(pu) == {"recall@10", "ndcg@10", "mrr"} and len(pu["mrr"]) == sp.n_users


@pytest.fixture(scope="module")
def tiny_hllm(tmp_path_factory, small_split):
    """A tiny untrained hybrid HLLM model dir with its item embeddings (what HLLMFeatures reads)."""
    import torch
    from helpers import tiny_model

    from hllm_creator.data.text import item_text

    ds, sp = small_split
    torch.manual_seed(0)
    m = tiny_model(seed=0, max_history=10, item_max_tokens=16, predictor_head="dot", item_pooling="mean")
    m.enable_item_ids(sp.item_ids, recent=3)
    emb = m.encode_items([item_text(r) for r in ds.items.to_dict("records")], batch_size=64)
    m.set_stats(emb, sp.hist)
    d = Path(m.save(tmp_path_factory.mktemp("hllm") / "model", json_files={"eval.json": {"untrained": True}}))
    pd.DataFrame({"item_id": sp.item_ids, "embedding": list(emb.float().numpy())}).to_parquet(
        d / "item_embeddings.parquet")
    return d


def test_hllm_head_refit_uses_the_protocol_positions_and_scores_every_user(small_split, tiny_hllm):
    _, sp = small_split
    feat = rr.HLLMFeatures(str(tiny_hllm), sp, bf16=False)
    # one query per next-item position of every history (truncated to the model's max_history)
    assert len(feat.q) == len(feat.q_pos) == sum(len(h[-11:]) - 1 for h in sp.hist if len(h) >= 2)
    assert len(feat.users["valid"]) == len(feat.users["test"]) == sp.n_users
    targets = set(feat.q_pos.tolist())
    assert targets <= {i for h in sp.hist for i in h[1:]}  # training targets come from histories only
    best, score = rr.fit_head(feat, sp, {"lr": 2e-3, "weight_decay": 0.1, "recent": 2, "negatives": 16},
                              max_steps=20, eval_every=10, patience=2, seed=0, batch=32)
    assert [c["step"] for c in best["curve"]] == [10, 20] and best["epoch"] in (10, 20)
    s = score("test")
    assert s.shape == (sp.n_users, sp.n_items) and np.isfinite(s).all()


def test_hllm_head_refit_of_a_text_bag_model_at_another_recent_length(small_split, tmp_path):
    """The text bag's recency weights follow the ID part's length when a config reads another number of
    clicks than the model was saved with (3 -> 2 -> 4 -> 3), each config from the same start state."""
    import torch
    from helpers import tiny_model

    from hllm_creator.data.text import item_text

    ds, sp = small_split
    torch.manual_seed(0)
    m = tiny_model(seed=0, max_history=10, item_max_tokens=16, predictor_head="dot", item_pooling="mean",
                   predictor_text_bag=True)
    m.enable_item_ids(sp.item_ids, recent=3)
    emb = m.encode_items([item_text(r) for r in ds.items.to_dict("records")], batch_size=64)
    m.set_stats(emb, sp.hist)
    m.predictor.enable_text_bag(emb)
    d = Path(m.save(tmp_path / "model", json_files={"eval.json": {"untrained": True}}))
    pd.DataFrame({"item_id": sp.item_ids, "embedding": list(emb.float().numpy())}).to_parquet(
        d / "item_embeddings.parquet")
    feat = rr.HLLMFeatures(str(d), sp, bf16=False)
    assert feat.start["text_recency"].numel() == 3
    scores = {}
    for recent in (2, 4, 3):
        _, scores[recent] = rr.fit_head(feat, sp, {"lr": 2e-3, "weight_decay": 0.1, "recent": recent, "negatives": 16},
                                        max_steps=4, eval_every=2, patience=1, seed=0, batch=32)
        pred = feat.model.predictor
        assert pred.id_recency.numel() == pred.text_recency.numel() == recent
    for recent, score in scores.items():  # tune scores its winner after the other configs ran
        assert np.isfinite(score("test")).all()
        assert feat.model.predictor.text_recency.numel() == recent


def test_cli_runs_rankers_one_at_a_time_and_assembles(small_split, tiny_hllm, tmp_path):
    from benchmarks.quality import recommendation as bench

    ds, sp = small_split
    out = tmp_path / "rec.json"
    common = ["--data", str(ds.path), "--work", str(tmp_path / "w"), "--out", str(out), "--configs", "1",
              "--max-epochs", "2", "--eval-every", "1", "--no-mlflow", "--bootstrap", "50"]
    bench.main(common + ["--rankers", "popularity,sasrec"])
    res = json.loads(out.read_text())
    assert set(res["rankers"]) == {"popularity", "sasrec"} and res["n_users"] == sp.n_users
    sb = res["strongest_baseline"]
    other = ({"popularity", "sasrec"} - {sb}).pop()
    assert "diff_ci" in res["rankers"][other]["ndcg@10"] and "diff" not in res["rankers"][sb]["ndcg@10"]
    assert res["rankers"]["sasrec"]["n_configs"] == 1 and res["rankers"]["sasrec"]["chosen"]
    res = bench.main(common + ["--rankers", "hllm,hllm_as_trained", "--model", str(tiny_hllm), "--head-steps",
                               "20", "--head-eval-every", "10"])
    # the earlier rankers reused from --work; the HLLM rows are never "the strongest baseline"
    assert set(res["rankers"]) == {"popularity", "sasrec", "hllm", "hllm_as_trained"}
    assert res["strongest_baseline"] == sb
    assert set(res["hllm_minus"]) == set(res["hllm_as_trained_minus"]) == {"popularity", "sasrec"}
    res = bench.main(common + ["--rankers", "popularity", "--refit", "--model", str(tiny_hllm), "--head-steps", "20",
                               "--head-eval-every", "10"])
    assert {"sasrec_refit", "hllm_refit"} <= set(res["rankers"]) and res["strongest_baseline"] == sb
    assert res["rankers"]["sasrec_refit"]["epochs_or_steps"] == res["rankers"]["sasrec"]["chosen_epoch"]
    assert "diff_ci" in res["hllm_refit_minus_sasrec_refit"]["ndcg@10"]
    z = np.load(out.with_suffix(".per_user.npz"))
    assert len(z["hllm/ndcg@10"]) == sp.n_users
    with pytest.raises(SystemExit, match="unknown"):
        bench.main(common + ["--rankers", "nope"])
