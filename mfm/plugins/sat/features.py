"""Region descriptors of L_sate (paper Eq. 17-21) and the positive-pair mining rule.

Pure numpy / geopandas functions, no torch, so they can be tested on hand-made data.

Units (a documented choice; the paper works in degrees):

- POI coordinates are normalized per region: ``(xy - centroid) / R`` with ``R =
  sqrt(a_u / pi)`` the region's equivalent-circle radius. The radius feature of Eq. 19,
  ``sqrt(pi / a_u) * max dist``, is then simply the max distance in these units, and
  DBSCAN's ``eps`` (0.05 as in the paper, configurable) is a fraction of ``R``, so the
  clustering behaves the same in small and large regions.
- Densities are per ``area_unit_m2`` (a hectare by default) and road length in metres.
- Optionally (on by default) each group of same-unit columns (F_p: all radii, all
  densities; F_r: length density, intersection density) is divided by its mean over
  regions before the cosine test, so that units (metres vs counts, hectares vs km2) do
  not decide which component dominates the cosine: unscaled, road length density in
  m/ha is ~100x the crossing density and every pair of regions has cos(F_r) ~ 1. This
  is a diagonal rescaling: features stay non-negative, the relative weights of the
  categories are kept, and the cosine rule of Eq. 21 is otherwise unchanged.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pandas as pd

from mfm.core.roads import clipped_lengths, points_in, road_nodes

CATEGORY_KEYS = ("amenity", "shop", "office", "leisure", "tourism", "building", "landuse")
"""Tag keys that name a POI category, in priority order (the first one present wins)."""


def poi_category(tags: dict[str, str]) -> str | None:
    """``{"amenity": "cafe", "name": "X"}`` -> ``"amenity=cafe"``; None without a category key."""
    for key in CATEGORY_KEYS:
        if key in tags:
            return f"{key}={tags[key]}"
    return None


def top_categories(tags: list[dict[str, str]], k: int) -> tuple[np.ndarray, list[str]]:
    """Category index per POI among the ``k`` most frequent categories (-1 otherwise).

    Ties in frequency are broken by name, so the result is deterministic.
    """
    cats = pd.Series([poi_category(t) for t in tags], dtype=object)
    counts = cats.dropna().value_counts()
    counts = counts.sort_index().sort_values(ascending=False, kind="stable")
    names = list(counts.index[:k])
    lookup = {c: i for i, c in enumerate(names)}
    code = cats.map(lookup).fillna(-1).to_numpy(dtype=np.int64)
    return code, names


def dbscan_labels(xy: np.ndarray, group: np.ndarray, eps: float, min_pts: int) -> np.ndarray:
    """DBSCAN run independently inside every group, in one call (Eq. 17).

    Groups are lifted onto a third axis ``group * (2 eps + 1)``, more than ``eps`` apart,
    so one sklearn DBSCAN over all points equals one DBSCAN per group. Groups with fewer
    than ``min_pts`` points cannot form a cluster and are not passed to DBSCAN.

    Returns:
        int64 ``[N]`` cluster id, unique across groups; -1 for noise.
    """
    labels = np.full(len(xy), -1, dtype=np.int64)
    sizes = np.bincount(group, minlength=int(group.max(initial=-1)) + 1)
    run = np.flatnonzero(sizes[group] >= min_pts)
    if len(run) == 0:
        return labels
    from sklearn.cluster import DBSCAN

    lifted = np.column_stack([xy[run], group[run].astype(np.float64) * (2 * eps + 1)])
    labels[run] = DBSCAN(eps=eps, min_samples=min_pts).fit(lifted).labels_
    return labels


def poi_distribution_features(
    poi_xy: np.ndarray,
    poi_region: np.ndarray,
    poi_category: np.ndarray,
    region_xy: np.ndarray,
    region_area_m2: np.ndarray,
    n_categories: int,
    eps: float = 0.05,
    min_pts: int = 2,
    area_unit_m2: float = 1e4,
) -> np.ndarray:
    """POI-distribution features F_p (Eq. 17-19), ``[N_regions, 2 * n_categories]``.

    For every (region, category) group: DBSCAN clusters (Eq. 17); noise points are kept
    as one-point clusters (the paper retains outliers "to maintain full spatial
    coverage"); the centre is the mean of the cluster centres (Eq. 18); the radius is the
    largest distance of the group's POIs to that centre divided by the equivalent-circle
    radius, and the density is the POI count per ``area_unit_m2`` (Eq. 19). Columns are
    ``[r_0, d_0, r_1, d_1, ...]``; a category absent from a region gives ``[0, 0]``.

    Args:
        poi_xy: ``[N, 2]`` metric coordinates.
        poi_region: ``[N]`` region index (-1: ignored).
        poi_category: ``[N]`` category index in ``0..n_categories-1`` (-1: ignored).
        region_xy: ``[R, 2]`` metric region centroids.
        region_area_m2: ``[R]`` region areas.
        n_categories: number of categories (``K``).
        eps: DBSCAN radius in units of the region's equivalent-circle radius.
        min_pts: DBSCAN MinPts (the point itself included, as in sklearn).
        area_unit_m2: area unit of the density feature.
    """
    n_regions = len(region_xy)
    out = np.zeros((n_regions, 2 * n_categories))
    keep = (poi_region >= 0) & (poi_category >= 0)
    if not keep.any() or n_categories == 0:
        return out
    region, cat = poi_region[keep], poi_category[keep]
    area = np.maximum(region_area_m2, 1e-9)
    radius_eq = np.sqrt(area / np.pi)
    xy = (poi_xy[keep] - region_xy[region]) / radius_eq[region][:, None]
    group = region * n_categories + cat
    labels = dbscan_labels(xy, group, eps, min_pts)
    noise = labels < 0
    cluster = labels.copy()
    cluster[noise] = labels.max(initial=-1) + 1 + np.arange(int(noise.sum()))

    frame = pd.DataFrame({"g": group, "c": cluster, "x": xy[:, 0], "y": xy[:, 1]})
    clusters = frame.groupby("c", sort=False).agg(
        g=("g", "first"), x=("x", "mean"), y=("y", "mean")
    )
    centres = clusters.groupby("g").agg(x=("x", "mean"), y=("y", "mean"))
    cx = centres["x"].reindex(frame["g"]).to_numpy()
    cy = centres["y"].reindex(frame["g"]).to_numpy()
    frame["d"] = np.hypot(frame["x"].to_numpy() - cx, frame["y"].to_numpy() - cy)
    per_group = frame.groupby("g").agg(r=("d", "max"), n=("d", "size"))
    g = per_group.index.to_numpy()
    rg, cg = g // n_categories, g % n_categories
    out[rg, 2 * cg] = per_group["r"].to_numpy()
    out[rg, 2 * cg + 1] = per_group["n"].to_numpy() / (area[rg] / area_unit_m2)
    return out


def road_features(
    roads: np.ndarray,
    regions: np.ndarray,
    region_area_m2: np.ndarray,
    min_degree: int = 3,
    area_unit_m2: float = 1e4,
) -> np.ndarray:
    """Road features F_r (Eq. 20), ``[N_regions, 2]``: road length density (metres of road
    inside the region per ``area_unit_m2``) and intersection density (vertices of degree
    ``>= min_degree`` inside the region per ``area_unit_m2``).

    Args:
        roads: ``[N_roads]`` LineStrings in a metric CRS.
        regions: ``[N_regions]`` Polygons in the same CRS.
        region_area_m2: ``[N_regions]`` areas.
    """
    n = len(regions)
    _, region_i, clipped = clipped_lengths(roads, regions)
    length = np.bincount(region_i, weights=clipped, minlength=n)
    xy, degree = road_nodes(roads)
    count = np.bincount(points_in(xy[degree >= min_degree], regions), minlength=n).astype(float)
    units = np.maximum(region_area_m2, 1e-9) / area_unit_m2
    return np.column_stack([length / units, count / units])


def scale_blocks(features: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """Divide each block of columns by the block's mean value (an all-zero block stays).

    Blocks group the columns that share a unit (e.g. all radius columns of F_p), so only
    the units are neutralized; the relative weight of columns within a block is kept.
    """
    out = np.array(features, dtype=np.float64, copy=True)
    for b in np.unique(blocks):
        cols = blocks == b
        mean = out[:, cols].mean() if len(out) else 0.0
        if mean > 0:
            out[:, cols] /= mean
    return out


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


_PROXY_DIMS = 16
"""Columns (those of largest variance) the first, coarse partition of the miner splits on."""
_LEAF = 32
"""Nodes larger than this are cut near their middle (balanced); smaller ones at any gap."""
_SLACK = 1e-9
"""Absolute slack on squared radii and distances: pruning stays a superset under rounding."""


def _segment_argmax(values: np.ndarray, seg: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Position of the first maximum of ``values`` in each contiguous segment."""
    top = np.maximum.reduceat(values, starts)
    at = np.where(values == top[seg], np.arange(len(values)), len(values))
    return np.minimum.reduceat(at, starts)


def _tight_segments(
    x: np.ndarray, starts: np.ndarray, sizes: np.ndarray, tight: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split segments of the rows of ``x`` until each fits a ball of radius ``tight``.

    A node is projected on the direction from its mean to its farthest row and cut at the
    widest gap between sorted projections (within the middle half when the node has more
    than ``_LEAF`` rows, so the depth stays logarithmic), which keeps clusters whole.
    Vectorized over all the nodes of a level.

    Returns:
        ``order`` (row ``k`` of the result is ``x[order[k]]``), then the final segments'
        ``starts``, ``sizes``, ball ``centers`` and ``radii`` (in ``x``'s coordinates),
        sorted by start.
    """
    xs = x.copy()
    order = np.arange(len(x))
    done: list[tuple[np.ndarray, ...]] = []
    while len(starts):
        m = len(starts)
        local = np.cumsum(sizes) - sizes
        seg = np.repeat(np.arange(m), sizes)
        idx = np.repeat(starts - local, sizes) + np.arange(len(seg))
        xa = xs[idx]
        centers = np.add.reduceat(xa, local, axis=0) / sizes[:, None]
        diff = xa - np.repeat(centers, sizes, axis=0)
        d2 = np.einsum("ij,ij->i", diff, diff)
        radii = np.sqrt(np.maximum.reduceat(d2, local))
        split = (sizes > 1) & (radii > tight)
        keep = ~split
        done.append((starts[keep], sizes[keep], centers[keep], radii[keep]))
        if not split.any():
            break
        s_idx = np.flatnonzero(split)
        ss = sizes[s_idx]
        first = np.cumsum(ss) - ss
        far = _segment_argmax(d2, seg, local)
        rows = split[seg]
        proj = np.einsum("ij,ij->i", diff, np.repeat(diff[far], sizes, axis=0))[rows]
        idx, seg = idx[rows], np.repeat(np.arange(len(s_idx)), ss)
        low = np.minimum.reduceat(proj, first)[seg]
        span = np.maximum.reduceat(proj, first)[seg] - low
        key = seg + 0.5 * np.divide(proj - low, span, out=np.zeros(len(seg)), where=span > 0)
        sort = np.argsort(key)  # by node, then by projection (argsort beats lexsort here)
        xs[idx] = xs[idx[sort]]
        order[idx] = order[idx[sort]]
        proj = proj[sort]
        big = ss > _LEAF
        lo = np.where(big, (ss + 3) // 4, 1)
        hi = np.where(big, np.maximum(ss - ss // 4, lo), ss - 1)
        cnt = hi - lo + 1
        cstart = np.cumsum(cnt) - cnt
        cseg = np.repeat(np.arange(len(s_idx)), cnt)
        cpos = lo[cseg] + np.arange(len(cseg)) - cstart[cseg]
        at = first[cseg] + cpos
        cut = cpos[_segment_argmax(proj[at] - proj[at - 1], cseg, cstart)]
        starts = np.stack([starts[s_idx], starts[s_idx] + cut], 1).ravel()
        sizes = np.stack([cut, ss - cut], 1).ravel()
    st, sz, ce, ra = (np.concatenate(parts) for parts in zip(*done, strict=True))
    by = np.argsort(st, kind="stable")
    return order, st[by], sz[by], ce[by], ra[by]


def _near_leaves(
    cp: np.ndarray,
    rp: np.ndarray,
    reach_p: float,
    cr: np.ndarray | None,
    rr: np.ndarray | None,
    reach_r: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Leaf pairs ``a <= b`` whose balls may hold two rows within ``reach`` (both features).

    A matrix product of the centres screens all leaf pairs against the largest radii,
    ``rows`` leaves at a time (quadratic in the number of leaves, tight balls being far
    fewer than rows; linear memory), then the survivors get the exact ball tests.
    """
    m = len(cp)
    rows = max(16, (1 << 21) // max(m, 1))
    wide = 2 * float(rp.max()) + reach_p
    half = 0.5 * np.einsum("ij,ij->i", cp, cp) - 0.25 * wide * wide - 1e-6
    out_a: list[np.ndarray] = []
    out_b: list[np.ndarray] = []
    for s in range(0, m, rows):
        e = min(s + rows, m)
        a, b = np.nonzero(cp[s:e] @ cp[s:].T >= half[s:e, None] + half[None, s:])
        a, b = a + s, b + s
        ok = a <= b
        a, b = a[ok], b[ok]
        d = np.linalg.norm(cp[a] - cp[b], axis=1)
        ok = d <= rp[a] + rp[b] + reach_p + _SLACK
        if cr is not None and rr is not None:
            d = np.linalg.norm(cr[a] - cr[b], axis=1)
            ok &= d <= rr[a] + rr[b] + reach_r + _SLACK
        out_a.append(a[ok])
        out_b.append(b[ok])
    return np.concatenate(out_a), np.concatenate(out_b)


def _leaf_pair_rows(
    starts: np.ndarray, sizes: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Row pairs (positions) of the leaf pairs, each unordered pair once, about ``chunk``
    at a time (a big leaf pair is cut into tiles of its first leaf's rows)."""
    width = sizes[b]
    tall = np.maximum(1, chunk // width)
    tiles = -(-sizes[a] // tall)
    pair = np.repeat(np.arange(len(a)), tiles)
    step = np.arange(len(pair)) - np.repeat(np.cumsum(tiles) - tiles, tiles)
    top = starts[a][pair] + step * tall[pair]
    height = np.minimum(tall[pair], starts[a][pair] + sizes[a][pair] - top)
    count = height * width[pair]
    group = (np.cumsum(count) - count) // chunk
    edges = np.r_[0, np.flatnonzero(np.diff(group)) + 1, len(pair)]
    for lo, hi in itertools.pairwise(edges):
        t = np.arange(lo, hi)
        cnt = count[t]
        rep = np.repeat(t, cnt)
        k = np.arange(len(rep)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        w = width[pair[rep]]
        i = top[rep] + k // w
        j = starts[b][pair[rep]] + k % w
        keep = (a[pair[rep]] != b[pair[rep]]) | (i < j)
        yield i[keep], j[keep]


def _row_dots(u: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """``u[i_k] . u[j_k]`` for each k, in chunks."""
    out = np.empty(len(i))
    for s in range(0, len(i), chunk):
        out[s : s + chunk] = np.einsum("ij,ij->i", u[i[s : s + chunk]], u[j[s : s + chunk]])
    return out


def _dense_cosines(u: np.ndarray, rows: np.ndarray, cols: np.ndarray, block: int) -> np.ndarray:
    """Cosines exactly as ``_mine_pairs_dense`` computes them (same products, same blocks)."""
    out = np.empty(len(rows))
    blocks = rows // block
    for b in np.unique(blocks):
        sel = blocks == b
        start = int(b) * block
        out[sel] = (u[start : start + block] @ u.T)[rows[sel] - start, cols[sel]]
    return out


def _balls(x: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, ...]:
    """Centre (mean) and radius of each segment of ``x``; the segments cover all rows."""
    centres = np.add.reduceat(x, starts, axis=0) / sizes[:, None]
    diff = x - np.repeat(centres, sizes, axis=0)
    return centres, np.sqrt(np.maximum.reduceat(np.einsum("ij,ij->i", diff, diff), starts))


def _ball_tree_leaves(
    xp: np.ndarray, xr: np.ndarray | None, tight: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray | None, ...]]:
    """Partition of the rows into tight balls.

    A first partition splits on the ``_PROXY_DIMS`` widest columns in float32 (cheap; it
    only chooses the partition), then leaves that are not tight on the full rows are split
    further on them. The balls are exact (float64, full rows).

    Returns:
        ``order`` (leaf ``k`` holds rows ``order[starts[k] : starts[k] + sizes[k]]``),
        ``starts``, ``sizes``, and ``(xo, cp, rp, ro, cr, rr)``: the rows of ``xp`` and
        ``xr`` in that order, the leaves' centres and radii.
    """
    n, d = xp.shape
    starts, sizes = np.zeros(1, dtype=np.int64), np.array([n], dtype=np.int64)
    order = np.arange(n)
    if d > _PROXY_DIMS:  # the widest columns (no PCA: LAPACK calls cost 40-90 ms here)
        proxy = xp[:, np.argsort(-xp.var(axis=0))[:_PROXY_DIMS]].astype(np.float32)
        order, starts, sizes, _, _ = _tight_segments(proxy, starts, sizes, tight)
    xo = xp[order]
    cp, rp = _balls(xo, starts, sizes)
    loose = (sizes > 1) & (rp > tight)
    if loose.any():
        local = np.cumsum(sizes[loose]) - sizes[loose]
        idx = np.repeat(starts[loose] - local, sizes[loose]) + np.arange(sizes[loose].sum())
        sub, st, sz, c, r = _tight_segments(xo[idx], local, sizes[loose], tight)
        order[idx], xo[idx] = order[idx[sub]], xo[idx[sub]]
        starts, sizes = np.r_[starts[~loose], idx[st]], np.r_[sizes[~loose], sz]
        cp, rp = np.concatenate([cp[~loose], c]), np.r_[rp[~loose], r]
        by = np.argsort(starts, kind="stable")
        starts, sizes, cp, rp = starts[by], sizes[by], cp[by], rp[by]
    ro = cr = rr = None
    if xr is not None:
        ro = xr[order]
        cr, rr = _balls(ro, starts, sizes)
    return order, starts, sizes, (xo, cp, rp, ro, cr, rr)


def _unit_features(
    fp: np.ndarray, fr: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Unit rows of ``fp`` and ``fr`` (float64) and which rows have both non-zero."""
    up = _unit_rows(np.asarray(fp, dtype=np.float64))
    ur = None if fr is None else _unit_rows(np.asarray(fr, dtype=np.float64))
    valid = np.linalg.norm(up, axis=1) > 0
    if ur is not None:
        valid &= np.linalg.norm(ur, axis=1) > 0
    return up, ur, valid


def _mine_pairs_dense(
    fp: np.ndarray,
    fr: np.ndarray | None,
    threshold: float = 0.95,
    block: int = 1024,
    threshold_r: float | None = None,
    max_per_region: int | None = None,
) -> np.ndarray:
    """Reference ``mine_positive_pairs``: all cosines by blocked products, ``O(N^2)``.

    Ties in ``max_per_region`` are broken arbitrarily (``argpartition``).
    """
    threshold_r = threshold if threshold_r is None else threshold_r
    n = len(fp)
    up, ur, valid = _unit_features(fp, fr)
    out: list[np.ndarray] = []
    for start in range(0, n, block):
        stop = min(start + block, n)
        sp = up[start:stop] @ up.T
        ok = sp >= threshold
        score = sp
        if ur is not None:
            sr = ur[start:stop] @ ur.T
            ok &= sr >= threshold_r
            score = np.minimum(sp, sr)
        ok &= valid[start:stop, None] & valid[None, :]
        ok[np.arange(stop - start), np.arange(start, stop)] = False
        if max_per_region is not None and max_per_region < n:
            k = max_per_region
            masked = np.where(ok, score, -np.inf)
            top = np.argpartition(-masked, k - 1, axis=1)[:, :k]
            cut = np.zeros_like(ok)
            np.put_along_axis(cut, top, True, axis=1)
            ok &= cut
        rows, cols = np.nonzero(ok)
        out.append(np.stack([rows + start, cols], axis=1))
    if not out:
        return np.zeros((0, 2), dtype=np.int64)
    return np.concatenate(out).astype(np.int64)


def _top_partners(
    rows: np.ndarray, cols: np.ndarray, score: np.ndarray, k: int, tol: float
) -> tuple[np.ndarray, np.ndarray]:
    """Order of the pairs by (row, score descending, col) and each pair's rank in its row;
    also the rows whose k-th and (k+1)-th scores are within ``tol`` (a near tie)."""
    order = np.lexsort((cols, -score, rows))
    r = rows[order]
    rank = np.arange(len(r)) - np.searchsorted(r, r)
    at = np.flatnonzero(rank == k)
    near = at[score[order[at - 1]] - score[order[at]] <= tol] if k > 0 else at[:0]
    return order, rank, np.unique(r[near])


def mine_positive_pairs(
    fp: np.ndarray,
    fr: np.ndarray | None,
    threshold: float = 0.95,
    block: int = 1024,
    threshold_r: float | None = None,
    max_per_region: int | None = None,
) -> np.ndarray:
    """Region pairs similar in POI distribution AND road layout (Eq. 21).

    ``(i, j)`` with ``i != j`` is a pair when ``cos(fp_i, fp_j) >= threshold`` and
    ``cos(fr_i, fr_j) >= threshold_r`` (defaults to ``threshold``). Rows with a zero
    vector have no defined cosine and get no pairs.

    Exact, and far from all-pairs work on clustered features: unit rows with ``cos >= t``
    are within ``sqrt(2 - 2t)`` of each other, so the rows are split into tight balls (a
    ball tree cut along the gaps of the data, ``O(N log N)``), ball pairs are screened
    with one product of their centres (quadratic in the number of balls, far fewer than
    rows) and only rows of ball pairs that can hold such a pair are compared. The result
    equals ``_mine_pairs_dense``'s (all-pairs products) pair for pair: cosines within
    rounding of a threshold are recomputed with its very products. When the balls prune
    too little (low thresholds, featureless data), the dense version runs instead.

    Args:
        fp: ``[N, Dp]`` POI-distribution features.
        fr: ``[N, Dr]`` road features, or None to use ``fp`` alone.
        threshold: cosine threshold on ``fp``.
        block: rows per matrix-product block of the dense computation (fallback and
            boundary recomputation; memory ``O(block * N)``).
        threshold_r: cosine threshold on ``fr``.
        max_per_region: keep at most this many partners per region, the most similar
            first (by the smaller of the two cosines); None keeps all. Equal scores keep
            the smaller partner index (the dense version breaks such ties arbitrarily).

    Returns:
        int64 ``[E, 2]`` directed pairs sorted by ``(i, j)``; without ``max_per_region``
        both ``(i, j)`` and ``(j, i)`` are present.
    """
    threshold_r = threshold if threshold_r is None else threshold_r
    if max_per_region is not None and max_per_region < 0:
        raise ValueError(f"max_per_region must be >= 0, got {max_per_region}")
    empty = np.zeros((0, 2), dtype=np.int64)
    n = len(fp)
    up, ur, valid = _unit_features(fp, fr)
    vid = np.flatnonzero(valid)
    r2p, r2r = 2 - 2 * threshold + _SLACK, 2 - 2 * threshold_r + _SLACK
    if len(vid) < 2 or r2p < 0 or (ur is not None and r2r < 0):
        return empty
    reach_p, reach_r = float(np.sqrt(r2p)), float(np.sqrt(max(r2r, 0.0)))
    eps = np.finfo(np.float64).eps
    tol_p = 2 * (up.shape[1] + 4) * eps  # two summation orders of a unit dot differ less
    tol_r = 0.0 if ur is None else 2 * (ur.shape[1] + 4) * eps
    order, starts, sizes, (xo, cp, rp, ro, cr, rr) = _ball_tree_leaves(
        up[vid], None if ur is None else ur[vid], reach_p / 4
    )
    a, b = _near_leaves(cp, rp + _SLACK, reach_p, cr, None if rr is None else rr + _SLACK, reach_r)
    count = np.where(a == b, sizes[a] * (sizes[a] - 1) // 2, sizes[a] * sizes[b]).sum()
    if count > len(vid) * (len(vid) - 1) // 8:  # a quarter of all pairs: dense is faster
        return _mine_pairs_dense(fp, fr, threshold, block, threshold_r, max_per_region)
    ids = vid[order]  # xo, ro: rows in leaf order, a leaf's rows adjacent in memory
    parts: list[tuple[np.ndarray, ...]] = []
    for i, j in _leaf_pair_rows(starts, sizes, a, b, 1 << 11):  # cache-sized chunks
        sr = np.full(len(i), np.inf)  # no road features: no road condition
        if ro is not None:
            sr = _row_dots(ro, i, j)
            ok = sr >= threshold_r - tol_r
            i, j, sr = i[ok], j[ok], sr[ok]
        sp = _row_dots(xo, i, j)
        ok = sp >= threshold - tol_p
        parts.append((ids[i[ok]], ids[j[ok]], sp[ok], sr[ok]))
    gi, gj, sp, sr = (np.concatenate(p) for p in zip(*parts, strict=True))
    rows, cols = np.concatenate([gi, gj]), np.concatenate([gj, gi])
    sp, sr = np.concatenate([sp, sp]), np.concatenate([sr, sr])
    gray = np.abs(sp - threshold) <= tol_p
    sp[gray] = _dense_cosines(up, rows[gray], cols[gray], block)
    if ur is not None:
        gray = np.abs(sr - threshold_r) <= tol_r
        sr[gray] = _dense_cosines(ur, rows[gray], cols[gray], block)
    ok = (sp >= threshold) & (sr >= threshold_r)
    rows, cols, sp, sr = rows[ok], cols[ok], sp[ok], sr[ok]
    if max_per_region is not None and max_per_region < n:
        k = max_per_region
        score = np.minimum(sp, sr)
        by, rank, near = _top_partners(rows, cols, score, k, max(tol_p, tol_r))
        if len(near):  # a near tie at the cut: decide it with the dense cosines
            sel = np.flatnonzero(np.isin(rows, near))
            score[sel] = _dense_cosines(up, rows[sel], cols[sel], block)
            if ur is not None:
                score[sel] = np.minimum(score[sel], _dense_cosines(ur, rows[sel], cols[sel], block))
            by, rank, _ = _top_partners(rows, cols, score, k, 0.0)
        keep = by[rank < k]
        rows, cols = rows[keep], cols[keep]
    key = np.sort(rows.astype(np.int64) * n + cols)
    return np.stack([key // n, key % n], axis=1)
