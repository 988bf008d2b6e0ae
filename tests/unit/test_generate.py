"""generate with a real tiny HLLMCreator and the real grounding check: creatives, fallbacks, lookup."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from helpers import tiny_embed_and_cluster
from typer.testing import CliRunner

from hllm_creator.creative.ad import Ad
from hllm_creator.creative.copy import is_copy, normalize_title
from hllm_creator.creative.gate import check_grounding, title_quality
from hllm_creator.data import load_dataset
from hllm_creator.data.schema import DataError
from hllm_creator.infer import generate as G
from hllm_creator.infer import harm as H
from hllm_creator.infer import match as M


@pytest.fixture(scope="module")
def setup(infer_workflow, tmp_path_factory):
    data, mdir = infer_workflow
    root = tmp_path_factory.mktemp("gen")
    model = tiny_embed_and_cluster(root, data, mdir, k=4)
    M.run(M.MatchConfig(model_dir=str(mdir), data_dir=str(data), clusters_dir=str(root / "clusters"), n_ads=3,
                        top_k=2, item_cache=str(root / "c.parquet")), root / "match", progress=False, model=model)
    return data, mdir, root, model


def test_clean_title():
    assert G.clean_title('\n  "Title: Fast Glue for Hobbyists"\nmore text') == "Fast Glue for Hobbyists"
    assert G.clean_title("1. **Strong tape**") == "Strong tape"
    assert G.clean_title("   \n \n") == ""


def test_ground_uses_the_real_check():
    ad = G.ad_of({"title": "3M Scotch Duct Tape, 1.8-Inch, 20 yds", "description": "Tough duct tape.",
                  "selling_points": ["waterproof"], "brand": "3M"})
    ok, reasons = G.ground("Tough 3M Scotch Duct Tape, 20 yds", ad)
    assert ok and reasons == []
    ok, reasons = G.ground("FREE iPhone with 99 yds of tape", ad)
    assert not ok and set(check_grounding("FREE iPhone with 99 yds of tape", Ad(**ad)).reasons) <= set(reasons)
    assert G.ground("", ad) == (False, ["empty output"])


def test_ground_rejects_grounded_fragments_that_are_not_titles():
    """Outputs of the demo's barely trained Creative LLM: no invented fact, but no title either."""
    ad = G.ad_of({"title": "AcuRite 00613 Humidity Monitor with Indoor Thermometer, Digital Hygrometer and "
                           "Humidity Gauge Indicator.", "description": "Shows when humidity is too low or too high.",
                  "selling_points": [], "brand": "AcuRite"})
    for frag, why in (("but...", "too short"), ("too low, too high, too low, so that you can", "does not name"),
                      ("AcuRite 00613 Humidity Monitor with", "cut-off copy"),
                      ("AcuRite Humidity Monitor for a dry home...", "trails off")):
        ok, reasons = G.ground(frag, ad)
        assert not ok and any(why in r for r in reasons), (frag, reasons)
    ok, reasons = G.ground("AcuRite 00613 Humidity Monitor - Shows When Humidity Is Too Low", ad)
    assert ok, reasons


def test_select_slot_serves_the_composition_the_slot_points_at(setup, tmp_path):
    data, mdir, root, model = setup
    cfg = G.GenerateConfig(model_dir=str(mdir), data_dir=str(data), matches=str(root / "match"),
                           clusters_dir=str(root / "clusters"), max_new_tokens=4, batch_size=4, select="slot",
                           max_pairs=8, harm_rule="none")  # do no harm: its own test
    G.run(cfg, tmp_path / "g", progress=False, model=model)
    cr = pd.read_parquet(tmp_path / "g" / "creatives.parquet")
    by = {r["item_id"]: G.ad_of(r) for r in load_dataset(data).items.to_dict("records")}
    assert (cr.source == "slot").any()
    for r in cr[cr.source == "slot"].itertuples():
        titles, facts = G.candidate_titles(by[r.item_id], with_facts=True)
        assert r.title == titles[G.slot_pick(model, np.load(root / "clusters" / "medoids.npy")[r.cluster_id], facts)
                                 if len(titles) > 1 else 0]


def test_generate_outputs_fallbacks_and_lookup(setup, tmp_path):
    data, mdir, root, model = setup
    cfg = G.GenerateConfig(model_dir=str(mdir), data_dir=str(data), matches=str(root / "match"),
                           clusters_dir=str(root / "clusters"), max_new_tokens=12, batch_size=4, seed=7,
                           harm_rule="none")  # do no harm: its own test
    meta = G.run(cfg, tmp_path / "g", progress=False, model=model)
    cr = pd.read_parquet(tmp_path / "g" / "creatives.parquet")
    lk = pd.read_parquet(tmp_path / "g" / "lookup.parquet")
    m = pd.read_parquet(root / "match" / "matches.parquet")
    ds = load_dataset(data)
    titles = dict(zip(ds.items.item_id, ds.items.title))
    # one generation per selected (ad, cluster), nothing else
    assert sorted(zip(cr.item_id, cr.cluster_id)) == sorted(zip(m[m.selected].item_id, m[m.selected].cluster_id))
    assert {"item_id", "cluster_id", "original_title", "llm_output", "score", "grounded", "reasons"} <= set(cr.columns)
    by = {r["item_id"]: r for r in ds.items.to_dict("records")}
    assert set(cr["source"]) <= {"generated", "slot", "rescored", "distinct", "original"}
    for r in cr.itertuples():
        assert r.original_title == titles[r.item_id]
        ad = G.ad_of(by[r.item_id])
        ok, _ = G.ground(r.llm_output, ad)
        assert r.grounded == (ok and not is_copy(r.llm_output, r.original_title))
        assert (len(r.reasons) == 0) == r.grounded
        if r.source == "generated":
            assert r.grounded and r.title == r.llm_output
        elif r.source in ("slot", "rescored", "distinct"):  # a gated composition picked under the slot
            assert r.title in G.candidate_titles(ad) and G.ground(r.title, ad)[0]
            assert r.source != "rescored" or not r.grounded
        else:
            assert r.source == "original" and r.title == r.original_title
        assert r.personalized == (not is_copy(r.title, r.original_title))
    assert meta["generations"] == len(cr) and meta["fallbacks"] == int((cr.source == "original").sum())
    assert sum(meta[f"source_{k}"] for k in G.SOURCES) == meta["generations"]
    # the default serves the greedy generation, else (a random decoder's output fails the gate) the
    # rescored composition; the slot's pick is the other rule
    assert meta["source_generated"] + meta["source_rescored"] > 0 and meta["source_slot"] == 0
    assert meta["copy_rate"] == pytest.approx(float((~cr.personalized).mean()))
    # lookup: every (user, ad); personalized only where the served title differs from the original
    assert len(lk) == 60 * 3 and set(lk.columns) >= {"user_id", "cluster_id", "item_id", "title"}
    pers = {(r.item_id, r.cluster_id): r.title for r in cr[cr.personalized].itertuples()}
    for r in lk.itertuples():
        assert r.title == pers.get((r.item_id, r.cluster_id), titles[r.item_id])
        assert r.personalized == ((r.item_id, r.cluster_id) in pers)
    # every emitted title passes the grounding check or is the original title
    runs = mlflow.search_runs(search_all_experiments=True)
    assert runs["tags.step"].tolist() == ["generate"] and runs["params.temperature"].iloc[0] == "0.8"
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(runs["run_id"].iloc[0])}
    assert "titles_per_cluster.json" in arts
    # seeded: the same config gives the same outputs
    G.run(cfg, tmp_path / "g2", progress=False, model=model)
    cr2 = pd.read_parquet(tmp_path / "g2" / "creatives.parquet")
    assert cr2["raw_output"].tolist() == cr["raw_output"].tolist()


def test_cli_generate_and_bad_matches(setup, tmp_path):
    from hllm_creator.cli import app

    data, mdir, root, _ = setup
    r = CliRunner().invoke(app, ["generate", "--model", str(mdir), "--data", str(data), "--matches",
                                 str(root / "match" / "matches.parquet"), "--clusters", str(root / "clusters"),
                                 "--out", str(tmp_path / "g"), "--max-new-tokens", "6", "--greedy",
                                 "--max-pairs", "2", "--quiet"])
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "g" / "generate_meta.json").read_text())
    assert meta["generations"] == 2 and "slot" in r.output and "copy rate" in r.output
    bad = pd.read_parquet(root / "match" / "matches.parquet")
    bad.loc[3, "cluster_id"] = 99
    bad.to_parquet(tmp_path / "bad.parquet")
    cfg = G.GenerateConfig(model_dir=str(mdir), data_dir=str(data), matches=str(tmp_path / "bad.parquet"),
                           clusters_dir=str(root / "clusters"))
    with pytest.raises(DataError, match=r"cluster_id 99.*row 3"):
        G.run(cfg, tmp_path / "g3", progress=False)
    assert not (tmp_path / "g3").exists()


@pytest.mark.parametrize("title,ok", [
    ("Laser Infrared Thermometer Temperature Gun, Yellow and Black", True),
    ("; Quantity: 774 Non-contact Digital Laser Infrared Thermometer", False),   # seen in the full run
    ("Quantity: 774 Non-contact Digital Laser Infrared Thermometer", False),
    (". Digital Laser Infrared Thermometer", False),
    ("Digital Laser Infrared Thermometer...", False),
])
def test_title_quality_rejects_continuations_and_field_labels(title, ok):
    orig = "Etekcity Lasergrip 774 Non-contact Digital Laser Infrared Thermometer Temperature Gun"
    assert (title_quality(title, orig) == []) is ok, title_quality(title, orig)


def _recs(titles_by_cluster: dict[int, str], item_id: str, original: str) -> list[dict]:
    return [{"item_id": item_id, "cluster_id": c, "score": 1.0 - 0.1 * k, "title": t, "source": "generated",
             "personalized": not is_copy(t, original)} for k, (c, t) in enumerate(titles_by_cluster.items())]


def test_make_distinct_gives_repeats_the_slots_pick_among_unserved_compositions(setup):
    """A repeat of a better-ranked cluster's title (up to case/punctuation) gets the slot's pick among
    the compositions not yet served; better-ranked clusters keep theirs; with nothing left the repeat stays."""
    data, mdir, root, model = setup
    items = load_dataset(data).items.to_dict("records")
    ad = next(G.ad_of(r) for r in items if len(G.candidate_titles(G.ad_of(r))) >= 3)
    titles, facts = G.candidate_titles(ad, with_facts=True)
    n = len(titles)
    slots = np.random.default_rng(0).standard_normal((5, model.user_hidden_size)).astype(np.float32)
    # ranks: cluster 0, 1, 3, 4; 3 repeats 0 (up to case/punctuation), 4 repeats 1
    recs = _recs({0: titles[0], 1: titles[1], 3: titles[0].upper() + "!", 4: titles[1]}, "a", ad["title"])
    changed = G.make_distinct(model, recs, {"a": ad}, slots)
    by_c = {r["cluster_id"]: r for r in recs}
    assert [by_c[c]["title"] for c in (0, 1)] == titles[:2] and by_c[0]["source"] == by_c[1]["source"] == "generated"
    free3 = list(range(2, n))
    j3 = free3[G.slot_pick(model, slots[3], [facts[j] for j in free3]) if len(free3) > 1 else 0]
    assert by_c[3]["title"] == titles[j3] and by_c[3]["source"] == "distinct" and by_c[3]["personalized"]
    free4 = [j for j in range(2, n) if j != j3]
    if free4:  # the slot's pick among what is left
        j4 = free4[G.slot_pick(model, slots[4], [facts[j] for j in free4]) if len(free4) > 1 else 0]
        assert by_c[4]["title"] == titles[j4] and by_c[4]["source"] == "distinct" and changed == 2
        assert len({normalize_title(r["title"]) for r in recs}) == 4
    else:  # nothing left: the repeat stays as it was
        assert by_c[4]["title"] == titles[1] and by_c[4]["source"] == "generated" and changed == 1


def test_generate_default_serves_distinct_titles_per_ad(setup, tmp_path):
    """Default (distinct on) vs off: only repeats change (source 'distinct'), the best-ranked cluster
    keeps its title, and an ad still repeating a title has every composition served already."""
    data, mdir, root, model = setup
    kw = dict(model_dir=str(mdir), data_dir=str(data), matches=str(root / "match"),
              clusters_dir=str(root / "clusters"), max_new_tokens=4, batch_size=4, select="slot", harm_rule="none")
    assert G.GenerateConfig(**kw).distinct
    G.run(G.GenerateConfig(**kw, distinct=False), tmp_path / "same", progress=False, model=model)
    meta = G.run(G.GenerateConfig(**kw), tmp_path / "dist", progress=False, model=model)
    same = pd.read_parquet(tmp_path / "same" / "creatives.parquet")
    dist = pd.read_parquet(tmp_path / "dist" / "creatives.parquet")
    by = {r["item_id"]: G.ad_of(r) for r in load_dataset(data).items.to_dict("records")}
    both = dist.merge(same, on=["item_id", "cluster_id"], suffixes=("", "_same"))
    moved = both.title != both.title_same
    assert (both.loc[moved, "source"] == "distinct").all() and (both.loc[~moved, "source"] != "distinct").all()
    assert moved.any() and meta["source_distinct"] == int(moved.sum())  # the tiny run has repeats
    for iid, g in both.groupby("item_id"):
        g = g.sort_values("score", ascending=False, kind="stable")
        assert g["title"].iloc[0] == g["title_same"].iloc[0]
        served = set(g["title"].map(normalize_title))
        if len(served) < len(g):
            assert {normalize_title(t) for t in G.candidate_titles(by[iid])} <= served, iid
    n_same = same.groupby("item_id")["title"].apply(lambda t: t.map(normalize_title).nunique())
    n_dist = dist.groupby("item_id")["title"].apply(lambda t: t.map(normalize_title).nunique())
    assert (n_dist >= n_same).all() and meta["distinct_titles_per_ad"] == pytest.approx(n_dist.mean())


def test_do_no_harm_serves_the_original_below_the_threshold():
    recs = [{"title": "Glue Stick - Dries clear", "original_title": "Glue Stick", "personalized": True,
             "source": "generated", "reasons": []},
            {"title": "Glue Stick - Acid free", "original_title": "Glue Stick", "personalized": True,
             "source": "slot", "reasons": []},
            {"title": "Glue Stick", "original_title": "Glue Stick", "personalized": False, "source": "original",
             "reasons": ["copy"]}]
    changed = H.do_no_harm(recs, np.array([-0.2, 0.3, 0.0]), 0.0)
    assert changed == 1
    assert recs[0]["title"] == "Glue Stick" and recs[0]["source"] == "original" and not recs[0]["personalized"]
    assert recs[0]["candidate_title"] == "Glue Stick - Dries clear" and recs[0]["harm_gain"] == pytest.approx(-0.2)
    assert any(r.startswith("do no harm") and "-0.200" in r for r in recs[0]["reasons"])
    assert recs[1]["title"] == "Glue Stick - Acid free" and recs[1]["source"] == "slot" and recs[1]["reasons"] == []
    assert recs[2]["reasons"] == ["copy"] and recs[2]["candidate_title"] == "Glue Stick"


def test_generate_do_no_harm_by_the_predictor(setup, tmp_path):
    """The predictor's gain decides: threshold -inf serves what no check serves, +inf only originals
    (each with the reason), 0 exactly the pairs whose own gain is >= 0; the curve falls with the threshold."""
    data, mdir, root, model = setup
    kw = dict(model_dir=str(mdir), data_dir=str(data), matches=str(root / "match"),
              clusters_dir=str(root / "clusters"), max_new_tokens=4, batch_size=4, select="slot")
    G.run(G.GenerateConfig(**kw, harm_rule="none"), tmp_path / "none", progress=False, model=model)
    kw["harm_rule"] = "predictor"
    G.run(G.GenerateConfig(**kw, harm_threshold=-1e9), tmp_path / "low", progress=False, model=model)
    high = G.run(G.GenerateConfig(**kw, harm_threshold=1e9), tmp_path / "high", progress=False, model=model)
    meta = G.run(G.GenerateConfig(**kw), tmp_path / "zero", progress=False, model=model)
    none, low, hi, zero = (pd.read_parquet(tmp_path / d / "creatives.parquet") for d in ("none", "low", "high", "zero"))
    assert list(low["title"]) == list(none["title"]) and none["personalized"].any()
    assert (none["harm_gain"] == 0).all() and (low["harm_gain"] != 0)[low["personalized"]].all()
    assert not hi["personalized"].any() and high["served_personalized_share"] == 0.0
    moved = none["personalized"].to_numpy()
    assert all(any(r.startswith("do no harm") for r in rs) for rs in hi.loc[moved, "reasons"])
    assert high["do_no_harm_original"] == int(moved.sum())
    keep = (zero["harm_gain"] >= 0).to_numpy() & moved
    assert (zero["personalized"].to_numpy() == keep).all()
    assert (zero.loc[keep, "title"].to_numpy() == none.loc[keep, "title"].to_numpy()).all()
    assert meta["served_personalized_share"] == pytest.approx(keep.mean())
    shares = [p["personalized_share"] for p in meta["harm_curve"]]
    assert shares == sorted(shares, reverse=True)
    at0 = [p for p in meta["harm_curve"] if p["threshold"] == 0.0][0]
    assert at0["personalized_share"] == pytest.approx(keep.mean())


def test_do_no_harm_by_both_estimates_needs_both_to_agree():
    recs = [{"title": f"Glue Stick - {x}", "original_title": "Glue Stick", "personalized": True, "source": "slot",
             "reasons": []} for x in ("Dries clear", "Acid free", "Washable")]
    changed = H.do_no_harm(recs, np.array([0.5, -0.1, 0.2]), 0.0, np.array([-0.01, 0.02, 0.0]), 0.0)
    assert changed == 2 and [r["personalized"] for r in recs] == [False, False, True]
    assert any("cosine" in r and "-0.0100" in r for r in recs[0]["reasons"])  # the content estimate said no
    assert any("log-odds" in r for r in recs[1]["reasons"]) and not any("cosine" in r for r in recs[1]["reasons"])
    assert recs[2]["content_gain"] == pytest.approx(0.0) and recs[0]["content_gain"] == pytest.approx(-0.01)


def test_cluster_content_and_content_gains():
    """What a cluster clicks, in the Item LLM's space, and a title's cosine gain toward it: a title
    whose vector moves toward the cluster's items gains, one that moves away loses."""
    vec = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0]), "c": np.array([1.0, 1.0])}
    asg = pd.DataFrame({"user_id": ["u1", "u2", "u3"], "cluster_id": [0, 0, 1]})
    hist = pd.Series({"u1": ["a"], "u2": ["a", "c"], "u3": ["b", "zz"]})
    c = H.cluster_content(vec, asg, hist, 3)
    assert np.allclose(np.linalg.norm(c[:2], axis=1), 1.0) and np.allclose(c[2], 0.0)  # cluster 2: no members
    assert c[0][0] > c[0][1] > 0 and np.allclose(c[1], [0.0, 1.0])  # "zz" is no known item

    class Enc:  # the Item LLM stand-in: a title's vector from its words
        def encode_items(self, texts, autocast_bf16=False):
            import torch
            return torch.tensor([[1.0 + ("pool" in t), 1.0 + ("tool" in t)] for t in texts])

        class cfg:
            item_max_tokens = 32
    items = pd.DataFrame({"item_id": ["x"], "title": ["Thermometer"]})
    recs = [{"item_id": "x", "cluster_id": 1, "title": t} for t in ("Thermometer - tool", "Thermometer - pool", "Thermometer")]
    g = H.content_gains(Enc(), recs, items, c)
    assert g[0] > 0 > g[1] and g[2] == 0.0  # cluster 1 clicks "b" ([0, 1]): toward the "tool" axis


def test_generate_do_no_harm_by_both(setup, tmp_path):
    """The default rule: a pair serves its personalized title only where both estimates are >= 0."""
    data, mdir, root, model = setup
    kw = dict(model_dir=str(mdir), data_dir=str(data), matches=str(root / "match"),
              clusters_dir=str(root / "clusters"), max_new_tokens=4, batch_size=4, select="slot")
    G.run(G.GenerateConfig(**kw, harm_rule="none"), tmp_path / "none", progress=False, model=model)
    meta = G.run(G.GenerateConfig(**kw), tmp_path / "both", progress=False, model=model)
    none, both = (pd.read_parquet(tmp_path / d / "creatives.parquet") for d in ("none", "both"))
    assert meta["harm_rule"] == "both" and both["content_gain"].notna().all()
    moved = none["personalized"].to_numpy()
    keep = moved & (both["harm_gain"] >= 0).to_numpy() & (both["content_gain"] >= 0).to_numpy()
    assert (both["personalized"].to_numpy() == keep).all()
    assert (both.loc[moved, "content_gain"] != 0).all() and (both.loc[~moved, "content_gain"] == 0).all()


def test_select_predictor_serves_the_candidate_the_predictor_rates_best(setup, tmp_path):
    data, mdir, root, model = setup
    kw = dict(model_dir=str(mdir), data_dir=str(data), matches=str(root / "match"),
              clusters_dir=str(root / "clusters"), max_new_tokens=4, batch_size=4, distinct=False, harm_rule="none")
    G.run(G.GenerateConfig(**kw, select="predictor"), tmp_path / "p", progress=False, model=model)
    cr = pd.read_parquet(tmp_path / "p" / "creatives.parquet")
    by = {r["item_id"]: G.ad_of(r) for r in load_dataset(data).items.to_dict("records")}
    from hllm_creator.infer import cluster as cl

    _, emb, _, _ = cl.load(root / "clusters")
    picked = cr[cr["source"] == "predictor"]
    assert len(picked)
    for r in picked.to_dict("records"):
        opts = list(dict.fromkeys(([r["llm_output"]] if r["grounded"] else []) + G.candidate_titles(by[r["item_id"]])))
        recs = [{"item_id": r["item_id"], "cluster_id": r["cluster_id"], "title": t} for t in opts]
        items = load_dataset(data).items
        g = H.harm_gains(model, recs, items, emb)
        assert r["title"] == opts[int(np.argmax(g))]
