"""The shared resampling statistics (hllm_creator.stats): each interval equals its resampling scheme
written out draw by draw (same seed -> the same draws -> the same interval), so moving the code
cannot change a reported CI; and the callers (GSB, the A/B readout) read the same numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hllm_creator.stats import (
    boot_mean,
    bootstrap_ci,
    derangement,
    mde,
    permutation_summary,
    quantile_ci,
    ratio_lift_ci,
    share_diff_ci,
)


def _close(a, b):
    assert a == pytest.approx(b, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("n_groups,bootstrap,seed,ci", [(1, 300, 0, 0.95), (7, 777, 3, 0.9), (251, 600, 1, 0.95)])
def test_boot_mean_is_the_clustered_bootstrap_draw_by_draw(n_groups, bootstrap, seed, ci):
    rng = np.random.default_rng(11)
    sizes = rng.integers(1, 6, n_groups)
    groups = np.repeat([f"g{k}" for k in range(n_groups)], sizes)
    values = rng.normal(0.3, 1.0, len(groups))
    got = boot_mean(values, groups, bootstrap=bootstrap, seed=seed, ci=ci)

    names = sorted(set(groups.tolist()))
    per_group = [values[groups == g] for g in names]
    draw = np.random.default_rng(seed)
    means = []
    for _ in range(bootstrap):  # one resample of the groups per replicate
        pick = [per_group[k] for k in draw.integers(0, n_groups, size=n_groups)]
        means.append(np.concatenate(pick).sum() / sum(len(p) for p in pick))
    means = np.asarray(means)
    _close(got["mean"], values.mean())
    _close(got["ci_low"], np.quantile(means, (1 - ci) / 2))
    _close(got["ci_high"], np.quantile(means, 1 - (1 - ci) / 2))
    _close(got["mde"], 2.8 * np.std(means, ddof=1))
    assert (got["n"], got["groups"]) == (len(values), n_groups)


def test_boot_mean_without_groups_resamples_values_and_empty_is_none():
    v = np.random.default_rng(2).random(40)
    _close(boot_mean(v, bootstrap=500, seed=4)["ci_low"], boot_mean(v, np.arange(40), bootstrap=500, seed=4)["ci_low"])
    assert boot_mean([]) == {"mean": None, "ci_low": None, "ci_high": None, "n": 0, "groups": 0}


def test_bootstrap_ci_is_one_user_resample_per_replicate_for_every_metric():
    rng = np.random.default_rng(5)
    pu = {"a": rng.random(61), "b": (rng.random(61) < 0.2).astype(float)}
    base = {"a": rng.random(61), "b": (rng.random(61) < 0.1).astype(float)}
    got = bootstrap_ci(pu, baseline=base, n_boot=333, seed=5, alpha=0.1)
    draw = np.random.default_rng(5)
    rows = [draw.integers(0, 61, size=61) for _ in range(333)]
    for k in pu:
        bs = [pu[k][r].mean() for r in rows]
        ds = [(pu[k] - base[k])[r].mean() for r in rows]
        _close(got[k]["mean"], pu[k].mean())
        for x, y in zip(got[k]["ci"] + got[k]["diff_ci"], [*np.percentile(bs, [5, 95]), *np.percentile(ds, [5, 95])]):
            _close(x, y)
        _close(got[k]["diff"], (pu[k] - base[k]).mean())
    with pytest.raises(ValueError, match="same users"):
        bootstrap_ci(pu, baseline={k: v[:10] for k, v in base.items()})


@pytest.mark.parametrize("g,s,b,seed", [(353, 91, 56, 0), (5, 3, 2, 1), (10, 0, 0, 0), (7, 7, 7, 2)])
def test_share_diff_ci_is_the_multinomial_bootstrap(g, s, b, seed):
    from hllm_creator.teacher.gsb import gsb_stats

    n = g + s + b
    draw = np.random.default_rng(seed)
    advs = []
    for _ in range(1500):
        cg, _, cb = draw.multinomial(n, [g / n, s / n, b / n])
        advs.append((cg - cb) / n)
    lo, hi = share_diff_ci(g, s, b, bootstrap=1500, seed=seed)
    _close(lo, np.quantile(advs, (1 - 0.95) / 2))
    _close(hi, np.quantile(advs, 1 - (1 - 0.95) / 2))
    st = gsb_stats(g, s, b, bootstrap=1500, seed=seed)  # GSB reports this interval
    assert (st["ci_low"], st["ci_high"]) == (lo, hi)


def test_ratio_lift_ci_is_the_ab_readouts_user_bootstrap():
    from hllm_creator.publish.ab import ab_summary

    rng = np.random.default_rng(9)
    users = [f"u{i}" for i in range(60)]
    ex = pd.DataFrame({"user_id": [users[i % 60] for i in range(500)],
                       "variant": ["personalized" if (i % 60) % 2 else "control" for i in range(500)],
                       "click": (rng.random(500) < 0.15).astype(int)})
    arms = {}
    for v in ("personalized", "control"):
        grp = ex[ex["variant"] == v].groupby("user_id")["click"].agg(["sum", "count"])
        arms[v] = (grp["sum"].to_numpy(float), grp["count"].to_numpy(float))
    lo, hi = ratio_lift_ci(*arms["personalized"], *arms["control"], n_boot=700, seed=4)
    s = ab_summary(ex, n_boot=700, seed=4)
    _close(lo, s["lift_ci_low"])
    _close(hi, s["lift_ci_high"])
    (pc, pn), (cc, cn) = arms["personalized"], arms["control"]
    assert lo < pc.sum() / pn.sum() / (cc.sum() / cn.sum()) - 1 < hi
    # the draws written out (the A/B readout's before it called stats): a's users, then b's, per replicate
    rng = np.random.default_rng(4)
    boots = []
    for _ in range(700):
        i, j = rng.integers(0, len(pc), len(pc)), rng.integers(0, len(cc), len(cc))
        rb = cc[j].sum() / cn[j].sum()
        boots.append(pc[i].sum() / pn[i].sum() / rb - 1 if rb > 0 else np.nan)
    ref_lo, ref_hi = np.nanpercentile(boots, [2.5, 97.5])
    _close(lo, ref_lo)
    _close(hi, ref_hi)


def test_permutation_summary_add_one_p_and_null_range():
    null = np.linspace(-1.0, 1.0, 99)
    r = permutation_summary(null, 2.0)
    _close(r["p_value"], 1 / 100)  # no permutation as high: the add-one floor
    _close(permutation_summary(null, -2.0)["p_value"], 1.0)
    _close(r["null_mean"], 0.0)
    assert r["null_low"] < -0.9 and r["null_high"] > 0.9


def test_quantile_ci_and_mde_edges():
    d = np.arange(101, dtype=float)
    assert quantile_ci(d, 0.9) == pytest.approx((5.0, 95.0))
    assert mde(np.array([1.0])) is None


def test_derangement_pairs_no_row_with_its_own_group():
    for groups in (list("aabbbcdd"), list("aaaab"), [f"u{i % 7}" for i in range(30)]):
        for seed in range(5):
            p = derangement(groups, np.random.default_rng(seed))
            assert sorted(p.tolist()) == list(range(len(groups)))
            bad = sum(groups[j] == groups[i] for i, j in enumerate(p))
            assert bad <= max(0, 2 * groups.count("a") - len(groups))  # zero whenever one exists
    with pytest.raises(ValueError):
        derangement(["a"], np.random.default_rng(0))


def test_bootstrap_and_derangement():
    rng = np.random.default_rng(0)
    b = boot_mean(rng.normal(1.0, 1.0, 400), bootstrap=500)
    assert b["ci_low"] < b["mean"] < b["ci_high"] and 0.8 < b["mean"] < 1.2 and b["n"] == 400
    assert boot_mean([])["mean"] is None
    # clustered: 2 groups with very different means -> a wide interval; per-value resampling -> narrow
    v, g = np.r_[np.zeros(200), np.ones(200)], np.r_[np.zeros(200), np.ones(200)]
    assert (boot_mean(v, g, bootstrap=500)["ci_high"] - boot_mean(v, g, bootstrap=500)["ci_low"]) > \
        3 * (boot_mean(v, bootstrap=500)["ci_high"] - boot_mean(v, bootstrap=500)["ci_low"])
    users = ["u1", "u1", "u1", "u2", "u3", "u4"]
    p = derangement(users, np.random.default_rng(1))
    assert sorted(p) == list(range(6)) and all(users[p[i]] != users[i] for i in range(6))
