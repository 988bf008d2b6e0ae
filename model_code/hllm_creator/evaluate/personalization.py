"""The personalization step: measure personalization directly, on held-out users.

GSB against the original title cannot tell a personalized title from a generically better one, so
this step measures what personalization means, on the users of the evaluation hold-out
(:func:`hllm_creator.creative.holdout.is_heldout`: their last click, the leave-last-out test target,
is seen neither by the teacher nor by training). Every figure comes with a bootstrap 95% interval.

- **copy rate**: share of SERVED titles (creatives.parquet ``title``) equal to the ad's original
  title after normalization (NFKC, casefold, punctuation and whitespace folded). CI: resampling ads.
- **distinct titles per ad**: distinct normalized served titles across the ad's selected clusters
  (the original counts as one title). Mean over ads, CI resampling ads.
- **slot sensitivity, greedy**: for each selected (ad, cluster c) pair, a greedy title with c's own
  slot (as generate fills it: the medoid by default, or the member mean) and one with another
  selected cluster's slot for the same ad (a random other cluster when the ad has one): share of
  pairs whose cleaned title changes. CI resampling ads.
- **slot sensitivity, NLL**: on held-out teacher rows (train.parquet ``split == "heldout"``, else
  rows of held-out users), the response's mean per-token NLL with the row's own user embedding
  (its ``item_id_list`` through the Item and User LLMs) and with a shuffled user's (a derangement
  among those rows): the paired difference shuffled - own (> 0: the slot carries the user).
  CI resampling rows.
- **audience fit**: for each selected (ad, c) and each held-out member m of c (at most
  ``members_per_cluster``, seeded; default all): ``cos(title_c, next_m) - mean_c' cos(title_c', next_m)`` over the
  ad's other served titles (``fit_other``) and ``cos(title_c, next_m) - cos(original, next_m)``
  (``fit_original``), next_m = the title of m's held-out next click, cos = the ruler (MiniLM-L6,
  never trained on or selected with). CI resampling members (units clustered by member).
  That CI takes the assignment of titles to clusters as given, so it cannot tell an assignment
  that fits its audiences from a lucky one; the **permutation test** can (``fit_other_permutation``):
  the same served titles dealt to the ad's clusters at random (a permutation per ad,
  ``permutations`` times) give the null distribution of the mean ``fit_other``; the p-value is the
  share of deals at least as good as the served one (one-sided, add-one).
- **cross-cluster GSB** (with a judge endpoint): for a held-out member of c, the judge compares c's
  served title (a) with another cluster's served title for the same ad (b), both orders (a flip is
  Same); identical titles are not judged (counted). Adv, CI and the judge-failure rate.

Outputs: ``personalization.json`` (figures, intervals, n's, definitions), ``per_ad.parquet`` (ad,
cluster, the cluster's top interests, served title, source, copy flag), ``audience_fit.parquet``,
``slot_swap.parquet``, plots; MLflow: a nested step run ``personalization`` with ``pers_*`` metrics.

Where each part lives: the config in ``evaluate.config``, the inputs in ``evaluate.inputs``, the
measures in ``evaluate.measures`` (do no harm's frontier in ``evaluate.frontier``), the report in
``evaluate.report``, the resampling in ``hllm_creator.stats``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from hllm_creator import tracking
from hllm_creator.data import leave_last_out, load_dataset
from hllm_creator.data.schema import DataError
from hllm_creator.evaluate.config import PersonalizationConfig
from hllm_creator.evaluate.inputs import (
    cluster_interests,
    heldout_members,
    heldout_rows,
    read_table,
    sample_members,
    served_pairs,
)
from hllm_creator.evaluate.measures import audience_fit, copy_stats, cross_cluster_gsb, nll_shuffle, slot_swap
from hllm_creator.evaluate.report import DEFINITIONS, headline, log_personalization, metrics_of, write_outputs
from hllm_creator.evaluate.ruler import RULER_NAME, Ruler
from hllm_creator.infer import cluster as cl
from hllm_creator.infer.common import CREATIVES, MATCHES
from hllm_creator.infer.embed import histories, load_model
from hllm_creator.stats import boot_mean


def run(cfg: PersonalizationConfig, out: str | Path | None = None, *, model=None, ruler=None, client=None,
        progress: bool = True, log_mlflow: bool = True) -> dict:
    """The step: every figure of the module docstring; writes the outputs to ``out`` and logs them."""
    t0 = time.time()
    ds = load_dataset(cfg.data_dir)
    _, _, asg, _ = cl.load(cfg.clusters_dir)
    user_slot = cl.load_slots(cfg.clusters_dir, cfg.slot)
    cr, cr_file = read_table(cfg.creatives, CREATIVES, ("item_id", "cluster_id", "original_title"))
    m, m_file = read_table(cfg.matches, MATCHES, ("item_id", "cluster_id", "score", "rank", "selected"))
    known = set(ds.items["item_id"])
    for i, (iid, c) in enumerate(zip(cr["item_id"], cr["cluster_id"])):
        if iid not in known:
            raise DataError(f"item_id {iid!r} is not an item of the dataset", file=cr_file, column="item_id", row=i)
        if not 0 <= int(c) < len(user_slot):
            raise DataError(f"cluster_id {c} outside 0..{len(user_slot) - 1} of the cluster dir", file=cr_file,
                            column="cluster_id", row=i)
    pairs = served_pairs(cr, cr_file)
    ads = pairs["item_id"].drop_duplicates().tolist()[:cfg.max_ads] if cfg.max_ads else None
    if ads is not None:
        pairs = pairs[pairs["item_id"].isin(set(ads))].reset_index(drop=True)
    pairs = pairs.merge(m[["item_id", "cluster_id", "score", "rank"]], on=["item_id", "cluster_id"], how="left")
    if pairs.empty:
        raise DataError("no served (ad, cluster) pairs to measure", file=cr_file)
    split = leave_last_out(ds.interactions)
    members_all = heldout_members(asg, split.users, cfg.heldout_share)
    members = sample_members(members_all, pairs["cluster_id"].unique(), cfg.members_per_cluster, cfg.seed)
    titles = dict(zip(ds.items["item_id"], ds.items["title"]))
    next_title = {u: titles[t] for u, t in zip(members_all["user_id"], members_all["test_target"])}
    interests = cluster_interests(asg, histories(ds.interactions, "no-test"), ds.items, pairs["cluster_id"].unique(),
                                  cfg.interests_top)
    res: dict = {"definitions": DEFINITIONS, "heldout_share": cfg.heldout_share,
                 "heldout_users_clustered": int(len(members_all)),
                 "heldout_members_used": int(sum(len(v) for v in members.values()))}
    res["copy"] = copy_stats(pairs, bootstrap=cfg.bootstrap, seed=cfg.seed)
    if ruler is None:
        ruler = Ruler()
    res["ruler"] = RULER_NAME
    res["audience_fit"], fit_df = audience_fit(pairs, members, next_title, ruler, bootstrap=cfg.bootstrap,
                                               seed=cfg.seed, permutations=cfg.permutations)
    model = model if model is not None else load_model(cfg.model_dir)
    res["slot_swap"], swap_df = slot_swap(model, pairs, ds.items, user_slot, cfg)
    nll_df = pd.DataFrame()
    if cfg.train_set:
        train, tf = read_table(cfg.train_set, "train.parquet", ())
        rows, how = heldout_rows(train, cfg.heldout_share, tf)
        res["nll"], nll_df = nll_shuffle(model, rows, ds.items, cfg)
        res["nll"]["rows_from"] = how
    else:
        res["nll"] = {"nll_diff": boot_mean([]), "rows": 0, "note": "no train_set given: NLL not measured"}
    xg_df = pd.DataFrame()
    if cfg.judge_samples:
        res["xgsb"], xg_df = cross_cluster_gsb(pairs, members, ds.items, cfg, client)
    else:
        res["xgsb"] = {"n": 0, "note": "no judge (judge_samples = 0)"}
    per_ad = pairs.assign(interests=pairs["cluster_id"].map(lambda c: interests.get(int(c), [])),
                          heldout_members=pairs["cluster_id"].map(lambda c: len(members.get(int(c), []))))
    per_ad = per_ad[["item_id", "cluster_id", "interests", "original_title", "title", "source", "copy", "score",
                     "rank", "heldout_members"]]
    res["seconds"] = round(time.time() - t0, 2)
    res["metrics"] = metrics_of(res)
    res["headline"] = headline(res)
    if out is not None:
        write_outputs(res, per_ad, out, fit_df=fit_df, swap_df=swap_df, nll_df=nll_df, xgsb_df=xg_df)
    if log_mlflow:
        with tracking.step_run("personalization", cfg):
            log_personalization(res, per_ad, out)
    res["per_ad"] = per_ad
    return res
