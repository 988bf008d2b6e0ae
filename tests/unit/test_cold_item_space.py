"""benchmarks/quality/cold_item_space.py: the frozen Item LLM's pooled layers, the IDF weights and the
neighbour ranker it shares with cold_start's item_knn (hand-made cases; the tiny random backbone)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from benchmarks.quality import cold_item_space as S
from benchmarks.quality import cold_start as C


def test_idf_rare_tokens_weigh_more():
    idf = S.idf_of([[1, 2], [1, 3], [1, 1]])
    assert idf[1] == pytest.approx(np.log(4 / 4) + 1) and idf[2] == pytest.approx(np.log(4 / 2) + 1)
    assert idf[2] == idf[3] > idf[1]


def test_neighbour_scores_sum_the_clicked_neighbours():
    sim = np.array([[0.9, 0.5, -0.2, 0.1]])                 # one ad, 4 catalog items
    clicked = C.click_matrix([[0], [1, 2], [3], [0, 1]], 4)  # 4 users
    s = C.neighbour_scores(sim, clicked, knn=2, power=3.0)  # neighbours: items 0 and 1
    assert s.shape == (1, 4)
    assert s[0] == pytest.approx([0.9 ** 3, 0.5 ** 3, 0.0, 0.9 ** 3 + 0.5 ** 3])
    # a negative similarity never adds, even among the neighbours; a repeat click counts once
    assert C.neighbour_scores(sim, C.click_matrix([[2, 2]], 4), knn=4)[0, 0] == 0.0
    assert C.click_matrix([[1, 1]], 3).toarray().tolist() == [[0, 1, 0]]
    assert isinstance(clicked, sp.csr_matrix)


def test_pooled_layers_mean_and_idf():
    ids = [[5, 6, 7], [8, 9], [5, 5, 5, 9]]
    flat = {t: 1.0 for r in ids for t in r}
    out = S.pooled_layers("tiny-llama", ids, [1, 2], flat, batch_size=2, progress=False)
    assert set(out) == {"L1_mean", "L1_idf", "L2_mean", "L2_idf"}
    assert all(v.shape == (3, out["L1_mean"].shape[1]) for v in out.values())
    # equal weights: the IDF-weighted mean is the mean; the two layers differ
    np.testing.assert_allclose(out["L1_idf"], out["L1_mean"], atol=1e-5)
    assert not np.allclose(out["L1_mean"], out["L2_mean"])
    skew = S.pooled_layers("tiny-llama", ids, [1], {5: 1.0, 6: 1.0, 7: 50.0, 8: 1.0, 9: 1.0}, progress=False)
    assert not np.allclose(skew["L1_idf"][0], skew["L1_mean"][0]) and np.allclose(
        skew["L1_idf"][1], skew["L1_mean"][1], atol=1e-5)
    z = S.standardized(np.random.default_rng(0).random((5, 4)), 3)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-6)
