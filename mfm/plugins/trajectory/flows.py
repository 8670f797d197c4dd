"""Origin-destination flows between regions, and per-region features of who goes where.

Flows come from the bundle's ``od`` layer (``origin``, ``destination`` region ids,
``count``) or, without one, from the trajectories: each trip counts once from the region
of its first point to the region of its last. Per region (all of width independent of
the city, so a trained model applies to another city):

- log(1 + trips out), log(1 + trips in), the share of trips that stay in the region;
- the entropy of the destination (origin) distribution: one hub or many places;
- the share of outgoing (incoming) trips in each distance band (``DISTANCE_EDGES``);
- the first ``RANK`` singular vectors (scaled by the singular values) of the
  row-normalized out-flow matrix and of the in-flow matrix: regions whose trips go to
  (come from) the same places get similar values, the spectral view of "who travels to
  whom" that mobility-based region models learn from. Signs are fixed (the largest
  entry of each vector is positive); a city with fewer regions pads with zeros.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from mfm.core.bundle.city import City
from mfm.core.constants import REGION_ID, TRAJ_ID

DISTANCE_EDGES = (1000.0, 3000.0, 10000.0)
"""Inner edges (m) of the trip-distance bands between region centroids."""
RANK = 16


def od_pairs(city: City) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (origin, destination) region indices and their trip counts."""
    index = pd.Series(np.arange(len(city.regions)), index=city.regions[REGION_ID].astype(str))
    if city.has("od"):
        od = city.layer("od")
        o = index.reindex(od["origin"].astype(str)).to_numpy()
        d = index.reindex(od["destination"].astype(str)).to_numpy()
        w = od["count"].to_numpy(dtype=np.float64)
    else:
        o, d = _trip_ends(city)
        w = np.ones(len(o))
    keep = ~(np.isnan(o) | np.isnan(d)) if o.dtype.kind == "f" else np.ones(len(o), bool)
    o, d, w = o[keep].astype(np.int64), d[keep].astype(np.int64), w[keep]
    n = len(city.regions)
    flat, inverse = np.unique(o * n + d, return_inverse=True)
    counts = np.bincount(inverse, weights=w, minlength=len(flat))
    return flat // n, flat % n, counts


def _trip_ends(city: City) -> tuple[np.ndarray, np.ndarray]:
    """Region index of each trajectory's first and last point (sorted by traj_id, t)."""
    from mfm.core.bundle.city import _assign_regions

    traj = city.layer("trajectories")
    ids = traj[TRAJ_ID].to_numpy()
    first = np.r_[True, ids[1:] != ids[:-1]]
    last = np.r_[ids[1:] != ids[:-1], True]
    points = traj.geometry.to_crs(city.crs).to_numpy()
    regions = city.regions.geometry.to_crs(city.crs).to_numpy()
    region = _assign_regions(points[first | last], regions)
    ends = np.flatnonzero(first | last)
    pos = pd.Series(np.arange(len(ends)), index=ends)
    o = region[pos[np.flatnonzero(first)].to_numpy()]
    d = region[pos[np.flatnonzero(last)].to_numpy()]
    return o.astype(np.float64), d.astype(np.float64)


def _entropy(matrix: sp.csr_matrix) -> np.ndarray:
    total = np.asarray(matrix.sum(axis=1)).ravel()
    p = matrix.multiply(1.0 / np.maximum(total, 1e-12)[:, None]).tocsr()
    logp = p.copy()
    logp.data = np.log(np.maximum(logp.data, 1e-300))
    return -np.asarray(p.multiply(logp).sum(axis=1)).ravel()


def _bands(rows: np.ndarray, band: np.ndarray, count: np.ndarray, n: int) -> np.ndarray:
    """Share of each region's flow (its ``rows``) in each distance band ``[n, bands]``."""
    out = np.zeros((n, len(DISTANCE_EDGES) + 1))
    np.add.at(out, (rows, band), count)
    return out / np.maximum(out.sum(axis=1, keepdims=True), 1e-12)


def _spectral(matrix: sp.csr_matrix) -> np.ndarray:
    """``[R, RANK]``: top singular vectors x values of the row-normalized matrix."""
    n = matrix.shape[0]
    total = np.asarray(matrix.sum(axis=1)).ravel()
    p = sp.diags(1.0 / np.maximum(total, 1e-12)) @ matrix
    out = np.zeros((n, RANK))
    k = min(RANK, n - 1)
    if k < 1 or p.nnz == 0:
        return out
    dense = p.toarray() if n <= 2 * RANK + 1 else None
    if dense is not None:
        u, s, _ = np.linalg.svd(dense)
        u, s = u[:, :k], s[:k]
    else:
        from scipy.sparse.linalg import svds

        u, s, _ = svds(p.astype(np.float64), k=k, random_state=0)
        order = np.argsort(-s)
        u, s = u[:, order], s[order]
    sign = np.sign(u[np.abs(u).argmax(axis=0), np.arange(u.shape[1])])
    out[:, :k] = u * np.where(sign == 0, 1.0, sign) * s
    return out


def flow_features(
    origin: np.ndarray, destination: np.ndarray, count: np.ndarray, xy: np.ndarray
) -> np.ndarray:
    """Per-region flow features ``[R, 5 + 2 * bands + 2 * RANK]`` (see the module docstring)."""
    n = len(xy)
    out_m = sp.csr_matrix((count, (origin, destination)), shape=(n, n))
    in_m = out_m.T.tocsr()
    out_v, in_v = np.asarray(out_m.sum(1)).ravel(), np.asarray(in_m.sum(1)).ravel()
    stay = out_m.diagonal() / np.maximum(out_v, 1e-12)
    band = np.searchsorted(DISTANCE_EDGES, np.linalg.norm(xy[origin] - xy[destination], axis=1))
    return np.column_stack(
        [
            np.log1p(out_v),
            np.log1p(in_v),
            stay,
            _entropy(out_m),
            _entropy(in_m),
            _bands(origin, band, count, n),
            _bands(destination, band, count, n),
            _spectral(out_m),
            _spectral(in_m),
        ]
    ).astype(np.float32)
