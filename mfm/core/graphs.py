"""Spatial neighbour search with indexes (cKDTree, STRtree), never O(N^2) Python loops."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
import torch
from scipy.spatial import cKDTree
from torch import Tensor


@dataclass
class Neighbours:
    """A CSR neighbour list: row ``i`` holds ``index[ptr[i]:ptr[i+1]]`` at ``dist[...]``."""

    ptr: np.ndarray  # int64 [N + 1]
    index: np.ndarray  # int64 [E]
    dist: np.ndarray  # float64 [E], metres

    def __len__(self) -> int:
        return len(self.ptr) - 1

    def counts(self) -> np.ndarray:
        return np.diff(self.ptr)

    def padded(self, rows: np.ndarray, k: int) -> tuple[Tensor, Tensor, Tensor]:
        """Neighbours of ``rows`` padded to ``k``: (index [B, k], dist [B, k], mask [B, k])."""
        starts, counts = self.ptr[rows], np.minimum(self.counts()[rows], k)
        col = np.arange(k)
        mask = col[None, :] < counts[:, None]
        flat = np.where(mask, starts[:, None] + col[None, :], 0)
        idx = np.where(mask, self.index[flat] if len(self.index) else 0, 0)
        dist = np.where(mask, self.dist[flat] if len(self.dist) else 0.0, 0.0)
        return (
            torch.as_tensor(idx),
            torch.as_tensor(dist, dtype=torch.float32),
            torch.as_tensor(mask),
        )


def radius_neighbours(
    query_xy: np.ndarray,
    target_xy: np.ndarray,
    radius: float,
    max_neighbours: int | None = None,
    exclude_self: bool = False,
) -> Neighbours:
    """For each query point, the targets within ``radius`` metres, nearest first.

    Uses a cKDTree k-nearest query (bounded by ``max_neighbours``) so the cost is
    O(N k log N) in time and O(N k) in memory, also in dense city centres.
    """
    n = len(query_xy)
    if n == 0 or len(target_xy) == 0:
        return Neighbours(np.zeros(n + 1, np.int64), np.zeros(0, np.int64), np.zeros(0))
    tree = cKDTree(target_xy)
    k = min(len(target_xy), (max_neighbours or len(target_xy)) + int(exclude_self))
    dist, idx = tree.query(query_xy, k=k, distance_upper_bound=radius)
    dist, idx = dist.reshape(n, k), idx.reshape(n, k)
    keep = np.isfinite(dist)
    if exclude_self:
        keep &= idx != np.arange(n)[:, None]
    if max_neighbours is not None:
        keep &= np.cumsum(keep, axis=1) <= max_neighbours
    counts = keep.sum(1)
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return Neighbours(ptr, idx[keep].astype(np.int64), dist[keep])


def nearest_line(points_xy: np.ndarray, lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest line (shapely geometries, metric) and the distance to it."""
    tree = shapely.STRtree(lines)
    pts = shapely.points(points_xy)
    (qi, li), dist = tree.query_nearest(pts, return_distance=True, all_matches=False)
    nearest = np.full(len(points_xy), -1, np.int64)
    out_dist = np.full(len(points_xy), np.inf)
    nearest[qi], out_dist[qi] = li, dist
    return nearest, out_dist


def polygon_adjacency(polygons: np.ndarray, tolerance: float = 1.0) -> np.ndarray:
    """Pairs ``[E, 2]`` (both directions) of polygons that touch, within ``tolerance`` metres."""
    tree = shapely.STRtree(polygons)
    grown = shapely.buffer(polygons, tolerance)
    left, right = tree.query(grown, predicate="intersects")
    keep = left != right
    return np.stack([left[keep], right[keep]], 1).astype(np.int64)


def group_members(groups: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR of items per group: (ptr [G + 1], items [N]) for ``groups`` in 0..G-1 (-1 ignored)."""
    valid = np.flatnonzero(groups >= 0)
    order = valid[np.argsort(groups[valid], kind="stable")]
    counts = np.bincount(groups[valid], minlength=n_groups)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), order.astype(np.int64)


def region_mean(features: np.ndarray, region: np.ndarray, n_regions: int) -> np.ndarray:
    """Mean feature per region ``[R, h]`` (zeros where a region has no items; -1 ignored)."""
    keep = np.flatnonzero(region >= 0)
    sums = np.zeros((n_regions, features.shape[1]), dtype=np.float64)
    np.add.at(sums, region[keep], features[keep])
    counts = np.bincount(region[keep], minlength=n_regions)
    return sums / np.maximum(counts, 1)[:, None]
