"""The ball-tree pair miner equals the dense all-pairs reference, pair for pair."""

import numpy as np
import pytest

from mfm.plugins.sat import features
from mfm.plugins.sat.features import (
    _leaf_pair_rows,
    _mine_pairs_dense,
    _unit_rows,
    mine_positive_pairs,
)


def _clustered(seed: int, n: int, d: int, zeros: float = 0.05, noise: float = 0.03):
    """Non-negative noisy copies of ``n / 12`` prototypes, some zero rows, and 2-d roads."""
    rng = np.random.default_rng(seed)
    protos = max(1, n // 12)
    cls = rng.integers(0, protos, n)
    fp = np.abs(rng.gamma(0.5, 1.0, (protos, d))[cls] + rng.normal(0, noise, (n, d)))
    fr = np.abs(rng.uniform(0.5, 2.0, (protos, 2))[cls] + rng.normal(0, 0.05, (n, 2)))
    fp[rng.random(n) < zeros] = 0
    fr[rng.random(n) < zeros] = 0
    return fp, fr


@pytest.fixture
def no_dense(monkeypatch):
    """Fail if the miner falls back to the dense computation."""

    def fail(*args, **kwargs):
        raise AssertionError("fell back to the dense miner")

    monkeypatch.setattr(features, "_mine_pairs_dense", fail)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("d", [8, 64])
def test_equals_dense_on_clustered_features(seed, d):
    fp, fr = _clustered(seed, 700, d)
    for t_p, t_r, roads in [(0.95, 0.95, fr), (0.9, 0.99, fr), (0.97, None, None)]:
        ref = _mine_pairs_dense(fp, roads, t_p, threshold_r=t_r)
        got = mine_positive_pairs(fp, roads, t_p, threshold_r=t_r)
        assert got.dtype == np.int64 and got.shape == ref.shape and len(ref) > 700
        np.testing.assert_array_equal(got, ref)


def test_prunes_instead_of_falling_back(no_dense):
    fp, fr = _clustered(5, 2000, 64)
    got = mine_positive_pairs(fp, fr)
    assert len(got) > 2000
    rows, cols = got.T
    assert (rows != cols).all() and np.array_equal(np.sort(rows * 2000 + cols), rows * 2000 + cols)


def test_equals_dense_at_the_threshold_boundary():
    """Thresholds equal to cosines the dense products give: the boundary pairs agree."""
    fp, fr = _clustered(7, 400, 64, noise=0.05)
    up, ur = _unit_rows(fp), _unit_rows(fr)
    rng = np.random.default_rng(0)
    ref = _mine_pairs_dense(fp, fr, 0.9)
    i, j = ref[rng.choice(len(ref), 5, replace=False)].T
    for block in (1024, 7):
        for a, b in zip(i, j, strict=True):
            s = a // block * block  # the cosines exactly as the dense blocks give them
            t_p = float((up[s : s + block] @ up.T)[a - s, b])
            t_r = float((ur[s : s + block] @ ur.T)[a - s, b])
            for tp, tr in [(t_p, 0.9), (0.9, t_r), (np.nextafter(t_p, 2), 0.9)]:
                want = _mine_pairs_dense(fp, fr, tp, block, tr)
                assert (a, b) in set(map(tuple, want.tolist())) or tp > t_p
                np.testing.assert_array_equal(mine_positive_pairs(fp, fr, tp, block, tr), want)


@pytest.mark.parametrize("k", [0, 1, 3, 50])
def test_max_per_region_equals_dense(k):
    fp, fr = _clustered(11, 600, 32)
    for roads in (fr, None):
        ref = _mine_pairs_dense(fp, roads, 0.95, max_per_region=k)
        np.testing.assert_array_equal(mine_positive_pairs(fp, roads, 0.95, max_per_region=k), ref)


def test_max_per_region_ties_keep_the_smaller_partner():
    """Exact duplicates tie; the kept scores are the dense version's, the partners the
    smallest indices among equals."""
    base, fr = _clustered(3, 240, 16, zeros=0.0)
    fp = np.concatenate([base, base[:60], base[:60]])  # rows 0-59 have two exact copies
    fr = np.concatenate([fr, fr[:60], fr[:60]])
    up, ur = _unit_rows(fp), _unit_rows(fr)
    score = np.minimum(up @ up.T, ur @ ur.T)
    full = mine_positive_pairs(fp, fr, 0.95)
    for k in (1, 2, 4):
        got = mine_positive_pairs(fp, fr, 0.95, max_per_region=k)
        ref = _mine_pairs_dense(fp, fr, 0.95, max_per_region=k)
        assert set(map(tuple, got.tolist())) <= set(map(tuple, full.tolist()))
        np.testing.assert_array_equal(
            np.bincount(got[:, 0], minlength=360), np.bincount(ref[:, 0], minlength=360)
        )
        for r in np.unique(ref[:, 0]):
            mine, theirs = got[got[:, 0] == r, 1], ref[ref[:, 0] == r, 1]
            np.testing.assert_array_equal(np.sort(score[r, mine]), np.sort(score[r, theirs]))
            partners = full[full[:, 0] == r, 1]
            best = partners[np.lexsort((partners, -score[r, partners]))][:k]
            np.testing.assert_array_equal(mine, np.sort(best))


def test_low_threshold_falls_back_and_edge_cases():
    fp, fr = _clustered(2, 300, 64)
    for t in (0.0, -1.0):
        np.testing.assert_array_equal(mine_positive_pairs(fp, fr, t), _mine_pairs_dense(fp, fr, t))
    assert mine_positive_pairs(fp, fr, 1.5).shape == (0, 2)
    assert mine_positive_pairs(np.zeros((0, 4)), None).shape == (0, 2)
    assert mine_positive_pairs(np.ones((1, 4)), None).shape == (0, 2)
    assert mine_positive_pairs(np.zeros((5, 4)), np.ones((5, 2))).shape == (0, 2)
    same = mine_positive_pairs(np.ones((40, 3)), np.ones((40, 2)), 1.0)  # one tight ball
    np.testing.assert_array_equal(same, _mine_pairs_dense(np.ones((40, 3)), np.ones((40, 2)), 1.0))
    ones = np.ones((40, 3))
    for t in (1.0, np.nextafter(1.0, 2)):
        np.testing.assert_array_equal(
            mine_positive_pairs(ones, None, t), _mine_pairs_dense(ones, None, t)
        )
    with pytest.raises(ValueError, match="max_per_region"):
        mine_positive_pairs(fp, fr, max_per_region=-1)


def test_leaf_pair_rows_tiles_each_pair_once():
    starts, sizes = np.array([0, 5, 105]), np.array([5, 100, 3])
    a, b = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 2, 2])
    got = np.concatenate([i * 1000 + j for i, j in _leaf_pair_rows(starts, sizes, a, b, 64)])
    want = [i * 1000 + j for i in range(5) for j in range(i + 1, 105)]
    want += [i * 1000 + j for i in range(5, 105) for j in range(i + 1, 108)]
    want += [i * 1000 + j for i in range(105, 108) for j in range(i + 1, 108)]
    np.testing.assert_array_equal(np.sort(got), np.sort(want))
