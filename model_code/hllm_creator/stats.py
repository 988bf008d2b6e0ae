"""The resampling statistics every readout uses: bootstrap intervals, paired differences,
permutation p-values and the minimum detectable effect.

A low layer: numpy and the standard library only. Each function keeps its own resampling scheme
(what is resampled, which quantile rule), so the same inputs and the same seed give the same
interval wherever it is called from.

- :func:`boot_mean`: mean with a clustered bootstrap interval (resampling groups) and the MDE
  (the personalization measures).
- :func:`bootstrap_ci`: per-unit metrics resampled over units, with the paired difference to a
  baseline on the same units (the recommendation metrics).
- :func:`share_diff_ci`: (G - B) / n from category counts, resampled as a multinomial (GSB).
- :func:`ratio_lift_ci`: relative lift of two ratio means (clicks / exposures per user), each arm
  resampled over its users (the A/B readout).
- :func:`permutation_summary`, :func:`derangement`: permutation tests.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

# minimum detectable effect at 5% two-sided and 80% power: (1.96 + 0.84) standard errors
MDE_Z = 2.8


def quantile_ci(draws: np.ndarray, ci: float = 0.95) -> tuple[float, float]:
    """The central ``ci`` interval of the bootstrap ``draws`` (linear quantiles)."""
    lo, hi = np.quantile(draws, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return float(lo), float(hi)


def mde(draws: np.ndarray) -> float | None:
    """Minimum detectable effect, the standard error read off the bootstrap ``draws``."""
    return float(MDE_Z * draws.std(ddof=1)) if len(draws) > 1 else None


def boot_mean(values, groups=None, *, bootstrap: int = 2000, seed: int = 0, ci: float = 0.95) -> dict:
    """Mean of ``values`` and a bootstrap ``ci`` interval that resamples ``groups`` (default: each
    value its own group) with replacement: a clustered bootstrap of a ratio mean."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0, "groups": 0}
    g = np.arange(len(v)) if groups is None else np.asarray(groups)
    _, inv = np.unique(g, return_inverse=True)
    sums = np.bincount(inv, weights=v)
    cnt = np.bincount(inv).astype(np.float64)
    G = len(sums)
    rng = np.random.default_rng(seed)
    means = []
    for s in range(0, bootstrap, 250):  # chunks bound the [draws, groups] index matrix
        idx = rng.integers(0, G, size=(min(250, bootstrap - s), G))
        means.append(sums[idx].sum(1) / cnt[idx].sum(1))
    means = np.concatenate(means)
    lo, hi = quantile_ci(means, ci)
    return {"mean": float(v.mean()), "ci_low": lo, "ci_high": hi, "n": int(len(v)), "groups": int(G),
            "mde": mde(means)}


def bootstrap_ci(per_user: dict[str, np.ndarray], *, baseline: dict[str, np.ndarray] | None = None,
                 n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Bootstrap over users: mean and (1 - alpha) percentile CI of each per-user metric; with
    ``baseline`` (the same users, same order) also the paired CI of the difference (this - baseline).
    One resample of the users serves every metric and the difference."""
    n = len(next(iter(per_user.values())))
    if baseline is not None and any(len(v) != n for v in baseline.values()):
        raise ValueError("bootstrap_ci: baseline must hold the same users as per_user")
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    lo, hi = 100 * alpha / 2, 100 * (1 - alpha / 2)
    out = {}
    for k, v in per_user.items():
        bs = v[idx].mean(1)
        r = {"mean": float(v.mean()), "ci": [float(np.percentile(bs, lo)), float(np.percentile(bs, hi))]}
        if baseline is not None:
            d = v - baseline[k]
            ds = d[idx].mean(1)
            r["diff"] = float(d.mean())
            r["diff_ci"] = [float(np.percentile(ds, lo)), float(np.percentile(ds, hi))]
        out[k] = r
    return out


def share_diff_ci(g: int, s: int, b: int, *, bootstrap: int = 2000, seed: int = 0,
                  ci: float = 0.95) -> tuple[float, float]:
    """Bootstrap ``ci`` interval of (g - b) / n, n = g + s + b > 0: the n samples resampled as a
    multinomial of their three categories."""
    n = g + s + b
    draws = np.random.default_rng(seed).multinomial(n, [g / n, s / n, b / n], size=bootstrap)
    return quantile_ci((draws[:, 0] - draws[:, 2]) / n, ci)


def ratio_lift_ci(num_a: np.ndarray, den_a: np.ndarray, num_b: np.ndarray, den_b: np.ndarray, *,
                  n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of ``(sum num_a / sum den_a) / (sum num_b / sum den_b) - 1`` (e.g. the
    CTR lift of arm a over arm b, one entry per user: clicks, exposures): each arm resampled over its
    own users, a's draw then b's per replicate; a replicate whose b ratio is 0 is left out."""
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for k in range(n_boot):
        i = rng.integers(0, len(num_a), len(num_a))
        j = rng.integers(0, len(num_b), len(num_b))
        rb = num_b[j].sum() / den_b[j].sum()
        boots[k] = (num_a[i].sum() / den_a[i].sum()) / rb - 1 if rb > 0 else np.nan
    lo, hi = np.nanpercentile(boots, [2.5, 97.5])
    return float(lo), float(hi)


def permutation_summary(null: np.ndarray, observed: float) -> dict:
    """A one-sided permutation test read off the ``null`` statistics (one per permutation): the
    add-one p-value of ``observed`` (share of permutations at least as high), the null mean and its
    95% range."""
    return {"p_value": float((1 + np.sum(null >= observed - 1e-12)) / (1 + len(null))),
            "null_mean": float(null.mean()), "null_low": float(np.quantile(null, 0.025)),
            "null_high": float(np.quantile(null, 0.975))}


def derangement(groups: list, rng: np.random.Generator, tries: int = 200) -> np.ndarray:
    """A permutation p with ``groups[p[i]] != groups[i]`` for every i (a user is never paired with
    itself); falls back to the best of ``tries`` random permutations, then to a sorted shift."""
    n = len(groups)
    if n < 2:
        raise ValueError("a derangement needs at least 2 rows")
    g = np.asarray([str(x) for x in groups], dtype=object)
    best, best_bad = None, n + 1
    for _ in range(tries):
        p = rng.permutation(n)
        bad = int((g[p] == g).sum())
        if bad == 0:
            return p
        if bad < best_bad:
            best, best_bad = p, bad
    order = np.argsort(g, kind="stable")  # shift by the largest group size: no row meets its own group
    shift = max(Counter(g.tolist()).values())
    p = np.empty(n, dtype=np.int64)
    p[order] = order[(np.arange(n) + shift) % n]
    return p if int((g[p] == g).sum()) <= best_bad else best
