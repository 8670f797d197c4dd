"""Road-network descriptors of a region: how much road of which kind, how it is joined,
how it is oriented.

Pure numpy / shapely in a metric CRS (no torch), so they can be tested on hand-made
lines. One row per region:

- road length density, km per km2, of each class of :data:`ROAD_CLASSES` and in total;
- crossing density (vertices of degree >= 3 per km2) and dead-end density (degree 1);
- orientation entropy: the Shannon entropy of the length-weighted bearings of the
  region's road segments (modulo 180 degrees, ``bins`` bins), over ``log(bins)``, so 0 is
  one direction and 1 is every direction alike (grid plans are low, organic streets high).

Densities enter as ``log1p``: they span orders of magnitude between a city centre and
its fringe, and a log keeps one dense region from dominating a standardized column.
"""

from __future__ import annotations

import json

import numpy as np
import shapely

from mfm.core.roads import clipped_lengths, points_in, road_nodes

ROAD_CLASSES: dict[str, tuple[str, ...]] = {
    "major": ("motorway", "motorway_link", "trunk", "trunk_link", "primary", "primary_link"),
    "secondary": ("secondary", "secondary_link", "tertiary", "tertiary_link"),
    "local": ("residential", "living_street", "unclassified", "road"),
    "service": ("service",),
    "path": ("footway", "pedestrian", "path", "cycleway", "steps", "track", "bridleway"),
}
"""OSM ``highway`` values by class; any other value (or none) is class ``other``."""
CLASS_NAMES: tuple[str, ...] = (*ROAD_CLASSES, "other")
_CLASS_OF = {v: i for i, values in enumerate(ROAD_CLASSES.values()) for v in values}
CLASS_KEYS = ("highway", "fclass", "type")
"""Tag keys read for the class, first present wins (OSM, Geofabrik shapefiles, others)."""


def road_class(tags: str | dict[str, str] | None) -> int:
    """Index into :data:`CLASS_NAMES` of a road from its tags (a JSON object or a dict)."""
    if isinstance(tags, str):
        tags = json.loads(tags) if tags else {}
    for key in CLASS_KEYS:
        if tags and key in tags:
            return _CLASS_OF.get(str(tags[key]), len(ROAD_CLASSES))
    return len(ROAD_CLASSES)


def feature_names() -> list[str]:
    """Column names of :func:`road_features`."""
    return [
        *(f"km_per_km2_{c}" for c in CLASS_NAMES),
        "km_per_km2",
        "crossings_per_km2",
        "dead_ends_per_km2",
        "orientation_entropy",
    ]


def road_features(
    roads: np.ndarray,
    classes: np.ndarray,
    regions: np.ndarray,
    area_m2: np.ndarray,
    bins: int = 18,
) -> np.ndarray:
    """Descriptors ``[N_regions, len(feature_names())]`` (module docstring), float32.

    Args:
        roads: ``[N_roads]`` (Multi)LineStrings in a metric CRS.
        classes: ``[N_roads]`` class index of each road (:func:`road_class`).
        regions: ``[N_regions]`` Polygons in the same CRS.
        area_m2: ``[N_regions]`` their areas.
        bins: Orientation bins over 180 degrees.
    """
    n, k = len(regions), len(CLASS_NAMES)
    km2 = np.maximum(np.asarray(area_m2, dtype=np.float64), 1.0) / 1e6
    road_i, region_i, metres = clipped_lengths(roads, regions)
    length = np.zeros((n, k))
    np.add.at(length, (region_i, np.asarray(classes)[road_i]), metres)
    xy, degree = road_nodes(roads)
    crossings = np.bincount(points_in(xy[degree >= 3], regions), minlength=n)
    dead_ends = np.bincount(points_in(xy[degree == 1], regions), minlength=n)
    density = np.column_stack([length, length.sum(1), crossings * 1e3, dead_ends * 1e3])
    density = np.log1p(density / 1e3 / km2[:, None])
    return np.column_stack([density, orientation_entropy(roads, regions, bins)]).astype(np.float32)


def orientation_entropy(roads: np.ndarray, regions: np.ndarray, bins: int = 18) -> np.ndarray:
    """``[N_regions]`` normalized entropy of length-weighted segment bearings (0 without
    roads); a segment belongs to the region that holds its midpoint."""
    n = len(regions)
    coords, part = shapely.get_coordinates(shapely.get_parts(roads), return_index=True)
    same = part[1:] == part[:-1]  # consecutive vertices of one line make a segment
    a, b = coords[:-1][same], coords[1:][same]
    d = b - a
    seg_len = np.hypot(d[:, 0], d[:, 1])
    if len(seg_len) == 0:
        return np.zeros(n)
    bearing = np.mod(np.arctan2(d[:, 1], d[:, 0]), np.pi)
    which = np.minimum((bearing / np.pi * bins).astype(np.int64), bins - 1)
    mid = shapely.points((a + b) / 2)
    seg_i, region_i = shapely.STRtree(regions).query(mid, predicate="intersects")
    hist = np.zeros((n, bins))
    np.add.at(hist, (region_i, which[seg_i]), seg_len[seg_i])
    total = hist.sum(1, keepdims=True)
    p = hist / np.where(total > 0, total, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(1)
    return h / np.log(bins)
