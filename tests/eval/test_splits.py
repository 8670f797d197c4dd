"""Random and spatial-block splits."""

import numpy as np
import pytest

from mfm.core.errors import MfmError
from mfm.eval.splits import make_splits, spatial_blocks, validation_split


def grid_xy(n: int = 20, step: float = 50.0) -> np.ndarray:
    gx, gy = np.meshgrid(np.arange(n) * step, np.arange(n) * step)
    return np.column_stack([gx.ravel(), gy.ravel()]) + 1000.0


def test_spatial_blocks_make_about_ten_square_blocks():
    groups = spatial_blocks(grid_xy())
    assert 6 <= len(np.unique(groups)) <= 16
    assert groups.min() == 0 and groups.max() == len(np.unique(groups)) - 1


def test_spatial_split_sends_whole_blocks_to_test_and_is_disjoint():
    xy = grid_xy()
    groups = spatial_blocks(xy)
    splits = make_splits("spatial", len(xy), 10, 0.2, 0, groups)
    assert len(splits) == 10
    tests = set()
    for tr, te in splits:
        assert len(np.intersect1d(tr, te)) == 0
        assert len(tr) + len(te) == len(xy)
        # whole blocks: no block has members on both sides
        assert not set(groups[tr]) & set(groups[te])
        tests.add(tuple(sorted(set(groups[te]))))
    assert len(tests) > 1  # different seeds per run pick different blocks
    again = make_splits("spatial", len(xy), 10, 0.2, 0, groups)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again, strict=True))


def test_spatial_split_needs_two_blocks():
    with pytest.raises(MfmError, match="--split random"):
        make_splits("spatial", 5, 3, 0.2, 0, np.zeros(5, dtype=int))


def test_random_split_is_seeded_and_sized():
    a = make_splits("random", 50, 4, 0.2, 1)
    b = make_splits("random", 50, 4, 0.2, 1)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True))
    assert all(len(te) == 10 and len(np.intersect1d(tr, te)) == 0 for tr, te in a)


def test_validation_split_is_grouped_when_blocks_allow():
    groups = np.repeat(np.arange(8), 5)
    fit, val = validation_split(len(groups), groups, seed=0)
    assert not set(groups[fit]) & set(groups[val])
    fit, val = validation_split(40, None, seed=0)
    assert len(np.intersect1d(fit, val)) == 0 and len(fit) + len(val) == 40
