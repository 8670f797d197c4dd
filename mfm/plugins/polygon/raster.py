"""Rasterize building footprints to binary images (the ``Raster`` of paper Eq. 4).

Each footprint is fitted to its own bounding box with the aspect ratio kept: the longer
side spans the whole image, the shorter one is centred. A pixel is set when its centre
lies inside the footprint (even-odd rule, so holes stay empty). The fill is a scanline
algorithm vectorized over all footprints at once: every ring edge is intersected with the
pixel-centre rows it spans, crossings are counted per (footprint, row, column) with one
``bincount`` and a running parity along each row gives the mask. No Python loop over
footprints: ~64k footprints at 64 px take a few seconds.
"""

from __future__ import annotations

import numpy as np
import shapely
import torch
from torch import Tensor

RASTER_VERSION = "scanline-centre-v1"
"""Changes whenever the rasterization changes, so cached features are recomputed."""

_CELLS_PER_CHUNK = 1 << 22
"""Bound on the crossing-count cells (int64) held at once: about 32 MB."""


def _edges(geoms: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Ring edges in image coordinates ``[E, 4]`` (x0, y0, x1, y1) and their footprint."""
    minx, miny, maxx, maxy = shapely.bounds(geoms).T
    w, h = maxx - minx, maxy - miny
    scale = size / np.maximum(np.maximum(w, h), 1e-9)
    off_x, off_y = (size - w * scale) / 2, (size - h * scale) / 2
    parts, part_owner = shapely.get_parts(geoms, return_index=True)
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    coords, coord_ring = shapely.get_coordinates(rings, return_index=True)
    owner = part_owner[ring_part][coord_ring]
    # Image coordinates: x right, y down from the northern edge; pixel j covers [j, j + 1).
    px = (coords[:, 0] - minx[owner]) * scale[owner] + off_x[owner]
    py = (maxy[owner] - coords[:, 1]) * scale[owner] + off_y[owner]
    same = coord_ring[1:] == coord_ring[:-1]  # rings are closed: consecutive coords = edges
    edges = np.column_stack([px[:-1], py[:-1], px[1:], py[1:]])[same]
    return edges, owner[:-1][same]


def rasterize_footprints(geoms: np.ndarray, size: int) -> np.ndarray:
    """Binary masks of polygons, each fitted to its bounding box (aspect kept, centred).

    Args:
        geoms: ``[N]`` shapely Polygon/MultiPolygon in a metric CRS (non-missing).
        size: Output image side in pixels.

    Returns:
        uint8 ``[N, size, size]``: 1 where the pixel centre is inside the footprint.
        Row 0 is the northern edge (image convention).
    """
    n = len(geoms)
    out = np.zeros((n, size, size), dtype=np.uint8)
    if n == 0:
        return out
    edges, edge_owner = _edges(geoms, size)
    chunk = max(1, _CELLS_PER_CHUNK // (size * (size + 1)))
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        lo_e, hi_e = np.searchsorted(edge_owner, [start, stop])
        x0, y0, x1, y1 = edges[lo_e:hi_e].T
        tile = edge_owner[lo_e:hi_e] - start
        # rows r whose centre r + 0.5 lies in [min(y0, y1), max(y0, y1)): half-open, so a
        # vertex shared by two edges is crossed once and horizontal edges never.
        r0 = np.clip(np.ceil(np.minimum(y0, y1) - 0.5), 0, size).astype(np.int64)
        r1 = np.clip(np.ceil(np.maximum(y0, y1) - 0.5), 0, size).astype(np.int64)
        count = np.maximum(r1 - r0, 0)
        e = np.repeat(np.arange(len(count)), count)
        row = r0[e] + np.arange(len(e)) - np.repeat(np.cumsum(count) - count, count)
        t = (row + 0.5 - y0[e]) / (y1[e] - y0[e])
        x = x0[e] + t * (x1[e] - x0[e])
        # first pixel whose centre is right of the crossing: parity toggles from there on
        col = np.clip(np.ceil(x - 0.5), 0, size).astype(np.int64)
        flat = (tile[e] * size + row) * (size + 1) + col
        cells = np.bincount(flat, minlength=(stop - start) * size * (size + 1))
        cells = cells.reshape(stop - start, size, size + 1)[:, :, :size]
        out[start:stop] = np.cumsum(cells, axis=2, dtype=np.uint8) & 1  # wraps: parity kept
    return out


class MaskImages(torch.utils.data.Dataset):
    """Binary masks ``[N, H, W]`` served as 3-channel uint8 ``[H, W, 3]`` images (0 / 255)."""

    def __init__(self, masks: np.ndarray) -> None:
        self.masks = torch.from_numpy(masks)

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, i: int) -> Tensor:
        return (self.masks[i] * 255).unsqueeze(-1).expand(-1, -1, 3).contiguous()
