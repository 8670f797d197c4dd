"""Road-network geometry shared by the plugins that read the ``roads`` layer.

Pure numpy / shapely, metric CRS: the road graph's vertices with their degrees, road
length clipped to regions, and which region a point falls in. Each uses an STR tree, so
the cost grows with the number of road / region pairs that touch, never with their product.
"""

from __future__ import annotations

import numpy as np
import shapely


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
    coords, line = shapely.get_coordinates(shapely.get_parts(lines), return_index=True)
    if len(coords) == 0:
        return np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
    first = np.r_[True, line[1:] != line[:-1]]
    last = np.r_[line[1:] != line[:-1], True]
    weight = np.where(first | last, 1, 2)
    snapped = np.round(coords / precision).astype(np.int64)
    keys, inverse = np.unique(snapped, axis=0, return_inverse=True)
    degree = np.bincount(inverse.ravel(), weights=weight, minlength=len(keys)).astype(np.int64)
    return keys * precision, degree


def clipped_lengths(
    roads: np.ndarray, regions: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(road index, region index, metres of that road inside that region) of every road /
    region pair that intersect. A road on the shared edge of two regions counts in both."""
    road_i, region_i = shapely.STRtree(regions).query(roads, predicate="intersects")
    clipped = shapely.length(shapely.intersection(roads[road_i], regions[region_i]))
    return road_i, region_i, clipped


def points_in(xy: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Region index of every point of ``xy [M, 2]`` that lies in a region (a point on a
    shared edge counts in each region it touches); points outside every region are left out."""
    if len(xy) == 0:
        return np.zeros(0, dtype=np.int64)
    _, inside = shapely.STRtree(regions).query(shapely.points(xy), predicate="intersects")
    return inside.astype(np.int64)
