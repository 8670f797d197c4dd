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

import numpy as np
import pandas as pd
import shapely

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


def road_nodes(lines: np.ndarray, precision: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Road-graph vertices and their degrees.

    Every vertex of every line counts: a line's end adds 1 to the degree of its point, an
    inner vertex adds 2 (one edge on each side). Coordinates are snapped to ``precision``
    metres so that ways sharing a node (OSM) or ending on one (split networks) meet.
    Lines that cross without a shared vertex (bridges, tunnels, or un-noded data) do not
    make an intersection, as in OSM's routing graph.

    Returns:
        (xy ``[M, 2]``, degree ``[M]``) of the distinct vertices.
    """
    coords, line = shapely.get_coordinates(lines, return_index=True)
    if len(coords) == 0:
        return np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
    first = np.r_[True, line[1:] != line[:-1]]
    last = np.r_[line[1:] != line[:-1], True]
    weight = np.where(first | last, 1, 2)
    snapped = np.round(coords / precision).astype(np.int64)
    keys, inverse = np.unique(snapped, axis=0, return_inverse=True)
    degree = np.bincount(inverse.ravel(), weights=weight, minlength=len(keys)).astype(np.int64)
    return keys * precision, degree


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
    tree = shapely.STRtree(regions)
    road_i, region_i = tree.query(roads, predicate="intersects")
    clipped = shapely.length(shapely.intersection(roads[road_i], regions[region_i]))
    length = np.bincount(region_i, weights=clipped, minlength=n)
    xy, degree = road_nodes(roads)
    crossings = shapely.points(xy[degree >= min_degree])
    _, inside = tree.query(crossings, predicate="intersects")
    count = np.bincount(inside, minlength=n).astype(np.float64)
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
    vector have no defined cosine and get no pairs. Cosines are computed for ``block``
    rows at a time (memory ``O(block * N)``), never with a Python loop over pairs.

    Args:
        fp: ``[N, Dp]`` POI-distribution features.
        fr: ``[N, Dr]`` road features, or None to use ``fp`` alone.
        threshold: cosine threshold on ``fp``.
        block: rows per matrix-product block.
        threshold_r: cosine threshold on ``fr``.
        max_per_region: keep at most this many partners per region, the most similar
            first (by the smaller of the two cosines); None keeps all.

    Returns:
        int64 ``[E, 2]`` directed pairs sorted by ``(i, j)``; without ``max_per_region``
        both ``(i, j)`` and ``(j, i)`` are present.
    """
    threshold_r = threshold if threshold_r is None else threshold_r
    n = len(fp)
    up = _unit_rows(np.asarray(fp, dtype=np.float64))
    ur = None if fr is None else _unit_rows(np.asarray(fr, dtype=np.float64))
    valid = np.linalg.norm(up, axis=1) > 0
    if ur is not None:
        valid &= np.linalg.norm(ur, axis=1) > 0
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
