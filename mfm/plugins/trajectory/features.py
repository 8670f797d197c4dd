"""Region-level mobility features from GPS trajectories (vectorized: one spatial join).

A trajectory is the points of one ``traj_id`` ordered by ``t``; its first point is the
trip's origin and its last its destination. Per region, the columns are (see
:func:`feature_names`):

- ``origin_density``, ``destination_density``: ``log1p(trips / km2)``;
- ``point_density``: ``log1p(GPS points / km2)`` (traffic through the region);
- ``stay_density``: ``log1p(stay points / km2)``, a stay point being a point reached from
  the trip's previous point at under ``stay_speed`` m/s (dwell or congestion);
- ``in_out_ratio``: ``log((arrivals + 1) / (departures + 1))``;
- ``intra_share``: the share of the region's departures that end in the region;
- ``depart_h{a}_{b}``, ``arrive_h{a}_{b}``: the time-of-day profile of departures and
  arrivals (``time_bins`` bins over 24 h, fractions summing to 1, zeros without trips);
- ``trip_km_{a}_{b}``: the profile of straight-line OD distance of departing trips.

``t`` is a timestamp (its wall-clock time of day is used) or integer seconds (time of
day = ``t mod 86400``, so seconds since midnight or since a midnight epoch both work).
Points outside every region are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from mfm.core.constants import TRAJ_ID

TIME = "t"
DAY = 86_400.0
DEFAULT_DISTANCE_EDGES = (250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0)


def feature_names(
    time_bins: int = 6, distance_edges: Sequence[float] = DEFAULT_DISTANCE_EDGES
) -> list[str]:
    """Column names of :func:`mobility_features`, in order."""
    hours = 24 / time_bins
    tod = [f"h{i * hours:g}_{(i + 1) * hours:g}" for i in range(time_bins)]
    edges = [0.0, *distance_edges]
    km = [f"{a / 1000:g}_{b / 1000:g}" for a, b in zip(edges, [*edges[1:], np.inf], strict=True)]
    return [
        "origin_density",
        "destination_density",
        "point_density",
        "stay_density",
        "in_out_ratio",
        "intra_share",
        *(f"depart_{s}" for s in tod),
        *(f"arrive_{s}" for s in tod),
        *(f"trip_km_{s}" for s in km),
    ]


def _seconds(t: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(absolute seconds, seconds of day) of a timestamp or integer-seconds column."""
    if pd.api.types.is_datetime64_any_dtype(t):
        ts = pd.to_datetime(t)
        of_day = (ts.dt.hour * 3600 + ts.dt.minute * 60 + ts.dt.second).to_numpy(np.float64)
        naive = ts.dt.tz_localize(None) if ts.dt.tz is not None else ts
        absolute = (naive - pd.Timestamp(0)).dt.total_seconds().to_numpy(np.float64)
        return absolute, of_day
    absolute = t.to_numpy(np.float64)
    return absolute, np.mod(absolute, DAY)


def _region_of(points: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Index of the region containing each point (lowest on ties), -1 outside all."""
    out = np.full(len(points), -1, np.int64)
    pt, rg = shapely.STRtree(regions).query(points, predicate="intersects")
    order = np.lexsort((rg, pt))
    pt, rg = pt[order], rg[order]
    head = np.r_[True, pt[1:] != pt[:-1]] if len(pt) else np.zeros(0, bool)
    out[pt[head]] = rg[head]
    return out


def _profile(region: np.ndarray, bins: np.ndarray, n_regions: int, n_bins: int) -> np.ndarray:
    """Row-normalized histogram ``[R, n_bins]`` of ``bins`` per ``region`` (-1 ignored)."""
    keep = region >= 0
    counts = np.bincount(region[keep] * n_bins + bins[keep], minlength=n_regions * n_bins).reshape(
        n_regions, n_bins
    )
    total = counts.sum(axis=1, keepdims=True)
    return counts / np.maximum(total, 1)


def mobility_features(
    trajectories: gpd.GeoDataFrame,
    regions: gpd.GeoDataFrame,
    crs: str,
    *,
    time_bins: int = 6,
    distance_edges: Sequence[float] = DEFAULT_DISTANCE_EDGES,
    stay_speed: float = 0.5,
    standardize: bool = True,
) -> np.ndarray:
    """Mobility features of each region, ``[R, F]`` float32 (columns: :func:`feature_names`).

    Args:
        trajectories: GPS points with ``traj_id``, ``t`` and Point geometry.
        regions: region polygons (row order = output row order).
        crs: a metric CRS for distances and areas.
        time_bins: bins of the 24-hour time-of-day profiles.
        distance_edges: inner edges (metres) of the OD-distance bins (last bin open).
        stay_speed: metres per second below which a point counts as a stay point.
        standardize: z-score every column (constant columns become 0).
    """
    n_regions = len(regions)
    n_dist = len(distance_edges) + 1
    polys = regions.geometry.to_crs(crs).to_numpy()
    area_km2 = np.maximum(shapely.area(polys) / 1e6, 1e-9)
    pts = trajectories.geometry.to_crs(crs).to_numpy()
    xy = shapely.get_coordinates(pts)
    absolute, of_day = _seconds(trajectories[TIME])
    ids = pd.factorize(trajectories[TRAJ_ID].astype(str))[0]
    order = np.lexsort((absolute, ids))
    ids, xy, absolute, of_day = ids[order], xy[order], absolute[order], of_day[order]
    region = _region_of(pts[order], polys)

    first = np.r_[True, ids[1:] != ids[:-1]] if len(ids) else np.zeros(0, bool)
    last = np.r_[ids[1:] != ids[:-1], True] if len(ids) else np.zeros(0, bool)
    o, d = np.flatnonzero(first), np.flatnonzero(last)
    o_reg, d_reg = region[o], region[d]

    def per_region(rows: np.ndarray) -> np.ndarray:
        return np.bincount(rows[rows >= 0], minlength=n_regions).astype(np.float64)

    departures, arrivals = per_region(o_reg), per_region(d_reg)
    step = np.hypot(*np.diff(xy, axis=0).T) if len(xy) > 1 else np.zeros(0)
    dt = np.diff(absolute)
    stay = np.zeros(len(xy), bool)
    stay[1:] = ~first[1:] & (dt > 0) & (step < stay_speed * np.maximum(dt, 1e-9))
    stays = per_region(region[stay])

    hour_bin = np.minimum((of_day / DAY * time_bins).astype(np.int64), time_bins - 1)
    trip_len = np.hypot(*(xy[d] - xy[o]).T) if len(o) else np.zeros(0)
    dist_bin = np.searchsorted(np.asarray(distance_edges, np.float64), trip_len, side="right")
    intra = np.bincount(o_reg[(o_reg >= 0) & (o_reg == d_reg)], minlength=n_regions)

    out = np.column_stack(
        [
            np.log1p(departures / area_km2),
            np.log1p(arrivals / area_km2),
            np.log1p(per_region(region) / area_km2),
            np.log1p(stays / area_km2),
            np.log((arrivals + 1) / (departures + 1)),
            intra / np.maximum(departures, 1),
            _profile(o_reg, hour_bin[o], n_regions, time_bins),
            _profile(d_reg, hour_bin[d], n_regions, time_bins),
            _profile(o_reg, dist_bin, n_regions, n_dist),
        ]
    )
    if standardize:
        std = out.std(axis=0)
        out = (out - out.mean(axis=0)) / np.where(std > 1e-12, std, 1.0)
    return out.astype(np.float32)
