"""Train/test splits for the probes: random (the paper's) and spatial blocks.

Neighbouring regions share most of their context, so a random split lets a probe
interpolate from a test region's neighbours. The spatial split cuts the city into square
grid blocks (about :data:`N_BLOCKS` over its metric extent) and sends whole blocks to test.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from sklearn.model_selection import GroupShuffleSplit, ShuffleSplit

from mfm.core.errors import MfmError

Split = Literal["random", "spatial"]
SPLITS: tuple[str, ...] = ("random", "spatial")
N_BLOCKS = 10
"""About how many grid blocks cover the city's extent in the spatial split."""
VAL_SIZE = 0.25
"""Share of the train part held out to choose hyper-parameters."""

IndexPair = tuple[np.ndarray, np.ndarray]


def spatial_blocks(xy: np.ndarray, n_blocks: int = N_BLOCKS) -> np.ndarray:
    """Grid block of each point: square cells sized so ~``n_blocks`` cover the extent.

    Args:
        xy: Metric coordinates ``[N, 2]``.
        n_blocks: Target number of cells over the bounding box.

    Returns:
        ``[N]`` int64 block ids, numbered 0..B-1 over the non-empty blocks.
    """
    xy = np.asarray(xy, dtype=np.float64)
    lo = xy.min(axis=0)
    w, h = xy.max(axis=0) - lo
    # all points on a line (or one point): cut the longer side, or use one block
    size = np.sqrt(w * h / n_blocks) if w * h > 0 else (max(w, h) / n_blocks or 1.0)
    cells = np.floor((xy - lo) / size).astype(np.int64)
    ny = int(cells[:, 1].max()) + 1
    return np.unique(cells[:, 0] * ny + cells[:, 1], return_inverse=True)[1].astype(np.int64)


def make_splits(
    split: Split,
    n: int,
    runs: int,
    test_size: float,
    seed: int,
    groups: np.ndarray | None = None,
) -> list[IndexPair]:
    """``runs`` seeded (train, test) index pairs over ``n`` items.

    Args:
        split: ``random`` (ShuffleSplit) or ``spatial`` (GroupShuffleSplit over ``groups``).
        n: Number of items.
        runs: Number of splits.
        test_size: Share of items (random) or of blocks (spatial) that go to test.
        seed: Seed of the whole sequence of splits.
        groups: Block id per item (needed for ``spatial``).

    Raises:
        MfmError: Too few items or blocks to split.
    """
    if split == "random":
        if n < 2:
            raise MfmError(f"only {n} labelled item(s); a split needs at least 2")
        splitter = ShuffleSplit(n_splits=runs, test_size=test_size, random_state=seed)
        return [(tr, te) for tr, te in splitter.split(np.zeros(n))]
    if groups is None:
        raise ValueError("the spatial split needs a block id per item")
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise MfmError(
            f"the labelled items fall in {n_groups} spatial block; the spatial split needs "
            "at least 2: use --split random"
        )
    splitter = GroupShuffleSplit(n_splits=runs, test_size=test_size, random_state=seed)
    return [(tr, te) for tr, te in splitter.split(np.zeros(n), groups=groups)]


def validation_split(n: int, groups: np.ndarray | None, seed: int) -> IndexPair:
    """Carve a (fit, validation) pair out of a train part of ``n`` items.

    Grouped by ``groups`` (the spatial blocks) when they give at least 2 blocks, so the
    validation items do not leak through neighbours either; random otherwise.
    """
    if groups is not None and len(np.unique(groups)) >= 2:
        splitter = GroupShuffleSplit(n_splits=1, test_size=VAL_SIZE, random_state=seed)
        return next(splitter.split(np.zeros(n), groups=groups))
    splitter = ShuffleSplit(n_splits=1, test_size=VAL_SIZE, random_state=seed)
    return next(splitter.split(np.zeros(n)))
