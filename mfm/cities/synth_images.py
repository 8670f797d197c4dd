"""Vectorized drawing of the synthetic city's street-view and satellite tiles.

Every function works on a batch: parameters are 1-D arrays (one entry per image) and the
result is a ``(B, H, W, 3)`` uint8 array. Nothing here loops over pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SVI_SIZE = 32
SAT_SIZE = 64
HORIZON = 26  # first street-view row that shows the road
MAX_FACADE = HORIZON - 4  # the top rows always show sky

# Facade colours in class order: residential, commercial, office, industrial,
# education, healthcare, civic, leisure.
FACADE_RGB = np.array(
    [
        [205, 165, 120],  # residential: warm plaster
        [225, 222, 210],  # commercial: light, with a coloured shop front
        [105, 125, 148],  # office: blue-grey glass
        [138, 138, 136],  # industrial: grey cladding
        [168, 82, 62],  # education: red brick
        [236, 236, 240],  # healthcare: white
        [200, 188, 150],  # civic: sandstone
        [92, 152, 128],  # leisure: teal panels
    ],
    dtype=np.float64,
)
WARM_RGB = np.array([[205, 165, 120], [215, 190, 145], [190, 120, 90], [225, 205, 165]], float)
SHOPFRONT_RGB = np.array([[200, 40, 40], [40, 120, 200], [230, 180, 30], [40, 160, 80]], float)
SKY_RGB = np.array([182, 204, 230], dtype=np.float64)
ROAD_RGB = np.array([92, 92, 96], dtype=np.float64)
TREE_RGB = np.array([58, 112, 52], dtype=np.float64)
SAT_GROUND = np.array([184, 174, 150], dtype=np.float64)
SAT_ROAD = np.array([84, 84, 90], dtype=np.float64)
SAT_GREEN = np.array([62, 112, 54], dtype=np.float64)
SAT_WATER = np.array([42, 72, 118], dtype=np.float64)
SAT_ROOFS = np.array([[122, 122, 128], [158, 82, 62], [208, 208, 202], [82, 82, 92]], float)


def save_png(path: Path, array: np.ndarray) -> None:
    """Write one ``(H, W, 3)`` uint8 array as a fast-compressed RGB PNG."""
    Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG", compress_level=1)


def save_pngs(paths: list[Path], arrays: np.ndarray) -> None:
    """Write a batch of images (used by worker processes)."""
    for path, pixels in zip(paths, arrays, strict=True):
        save_png(path, pixels)


@dataclass(frozen=True)
class SviScene:
    """What one street-view image looks at (all arrays have one entry per image).

    Attributes:
        has_building: whether a building stands in this direction within range.
        cls: building function class index (into ``FACADE_RGB``).
        floors: number of floors of that building.
        distance: metres from the sampling point to the building.
        width_m: building width in metres (sqrt of its footprint area).
        greenery: greenery fraction of the surrounding region (trees at the bottom).
    """

    has_building: np.ndarray
    cls: np.ndarray
    floors: np.ndarray
    distance: np.ndarray
    width_m: np.ndarray
    greenery: np.ndarray


def facade_height_px(floors: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """Pixel height of a facade: grows with floors, shrinks a little with distance."""
    shrink = 1.0 - 0.2 * np.clip(distance / 150.0, 0.0, 1.0)
    return np.clip(np.round(MAX_FACADE * (1.0 - np.exp(-floors / 9.0)) * shrink), 2, MAX_FACADE)


def _paint(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Colour a ``(B, H, W)`` label map with per-image palettes ``(B, L, 3)``."""
    return palette[np.arange(len(labels))[:, None, None], labels]


def _finish(
    rng: np.random.Generator, rgb: np.ndarray, sigma: np.ndarray, light: float
) -> np.ndarray:
    """Add lighting (+-``light``), pixel noise (per-pixel ``sigma``) and convert to uint8."""
    n = len(rgb)
    rgb *= rng.uniform(1 - light, 1 + light, (n, 1, 1, 1)).astype(np.float32)
    rgb += rng.standard_normal(rgb.shape, dtype=np.float32) * sigma[..., None]
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


# Street-view label map values.
_SKY, _ROAD, _LANE, _FACADE, _WINDOW, _SHOP, _TREE = range(7)


def draw_svi(rng: np.random.Generator, scene: SviScene) -> np.ndarray:
    """Draw a batch of street-view images (sky, facade with window rows, trees, road)."""
    n, s = len(scene.cls), SVI_SIZE
    yy = np.arange(s)[None, :, None]
    xx = np.arange(s)[None, None, :]
    cls = scene.cls.astype(int)
    h_px = np.where(scene.has_building, facade_height_px(scene.floors, scene.distance), 0)
    width = np.clip(np.round(s * scene.width_m / np.maximum(scene.distance, 8.0)), 8, s)
    left = np.floor(rng.uniform(0.0, 1.0, n) * (s - width + 1))[:, None, None]
    top, right = (HORIZON - h_px)[:, None, None], left + width[:, None, None]

    labels = np.repeat(np.where(yy >= HORIZON, _ROAD, _SKY) + 0 * xx, n, axis=0)
    labels[:, HORIZON + 3, 2::6] = _LANE
    facade = (yy >= top) & (yy < HORIZON) & (xx >= left) & (xx < right)
    labels[facade] = _FACADE

    # One window row per floor (as many as fit at two pixels per row).
    rows = np.maximum(np.minimum(np.round(scene.floors), h_px // 2), 1)
    pitch = np.maximum(h_px / rows, 1.0)[:, None, None]
    from_ground = HORIZON - 1 - yy
    in_floor = from_ground - np.floor(from_ground / pitch) * pitch
    col = xx - left
    col_ok = np.where((cls == 2)[:, None, None], True, col % 3 != 0)  # office: glass bands
    col_ok = np.where((cls == 3)[:, None, None], col % 6 == 1, col_ok)  # industrial: sparse
    upper = from_ground < h_px[:, None, None] - 1
    labels[facade & (in_floor >= pitch / 2.0) & upper & col_ok] = _WINDOW
    labels[facade & (from_ground < 3) & (cls == 1)[:, None, None]] = _SHOP

    # Trees: 4-px-wide canopies at the bottom edge, more of them where the region is green.
    blocks = rng.uniform(0.0, 1.0, (n, s // 4)) < 1.3 * scene.greenery[:, None]
    canopy = np.where(blocks, rng.integers(3, 10, (n, s // 4)), 0).repeat(4, axis=1)
    labels[(yy >= HORIZON - canopy[:, None, :]) & (yy < HORIZON)] = _TREE

    facade_rgb = FACADE_RGB[cls]
    warm = WARM_RGB[rng.integers(0, len(WARM_RGB), n)]
    facade_rgb = np.where((cls == 0)[:, None], warm, facade_rgb) + rng.normal(0, 8.0, (n, 3))
    pane = np.where((cls == 2)[:, None], [150.0, 175.0, 200.0], [52.0, 60.0, 72.0])
    palette = np.stack(
        [
            SKY_RGB + rng.normal(0.0, 6.0, (n, 3)),
            ROAD_RGB + rng.normal(0.0, 5.0, (n, 3)),
            np.full((n, 3), 220.0),
            facade_rgb,
            pane,
            SHOPFRONT_RGB[rng.integers(0, len(SHOPFRONT_RGB), n)],
            np.broadcast_to(TREE_RGB, (n, 3)),
        ],
        axis=1,
    ).astype(np.float32)
    rgb = _paint(labels, palette)
    rgb += np.where(labels == _SKY, 0.6 * yy, 0.0).astype(np.float32)[..., None]
    return _finish(rng, rgb, np.where(labels == _TREE, 10.0, 3.0).astype(np.float32), 0.1)


def rasterize_polygons(rings: list[list[np.ndarray]], size: int = SAT_SIZE) -> np.ndarray:
    """Rasterize polygons given in pixel coordinates into a ``(B, size, size)`` bool mask.

    Args:
        rings: per polygon, its exterior ring followed by its holes, each ``(k, 2)`` (col, row).
        size: image side in pixels.
    """
    out = np.zeros((len(rings), size, size), dtype=bool)
    for i, poly in enumerate(rings):
        canvas = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(canvas)
        for k, ring in enumerate(poly):
            draw.polygon([tuple(p) for p in ring.tolist()], fill=0 if k else 1)
        out[i] = np.asarray(canvas, dtype=bool)
    return out


def _smooth_noise(rng: np.random.Generator, n: int, size: int, cells: int = 9) -> np.ndarray:
    """Smooth random fields ``(n, size, size)``: coarse noise, bilinearly upsampled."""
    coarse = rng.standard_normal((n, cells, cells), dtype=np.float32)
    pos = np.linspace(0, cells - 1, size)
    lo = np.minimum(pos.astype(int), cells - 2)
    up = np.zeros((size, cells), dtype=np.float32)
    up[np.arange(size), lo] = 1 - (pos - lo)
    up[np.arange(size), lo + 1] = pos - lo
    return np.einsum("ik,nkl,jl->nij", up, coarse, up, optimize=True)


# Satellite label map values (roofs take the last four).
_S_ROAD, _S_GROUND, _S_GREEN, _S_WATER, _S_ROOF = range(5)


def draw_satellite(
    rng: np.random.Generator,
    inside: np.ndarray,
    water: np.ndarray,
    greenery: np.ndarray,
    built: np.ndarray,
) -> np.ndarray:
    """Draw a batch of top-down tiles: green patches, roofs, bare ground, water, roads.

    Args:
        rng: random generator.
        inside: ``(B, S, S)`` pixels inside the region (the rest is road and neighbours).
        water: ``(B, S, S)`` pixels covered by the river.
        greenery: ``(B,)`` share of the region's land that is green.
        built: ``(B,)`` share of the region's land covered by roofs.
    """
    n, s = inside.shape[0], inside.shape[1]
    noise = _smooth_noise(rng, n, s).reshape(n, -1)
    cut = np.clip((greenery * s * s).astype(int), 0, s * s - 1)
    level = np.take_along_axis(np.sort(noise, axis=1), cut[:, None], axis=1)
    green_px = (noise < level).reshape(n, s, s)
    cell = rng.uniform(0.0, 1.0, (n, s // 4, s // 4)).repeat(4, axis=1).repeat(4, axis=2)
    roof_px = cell < (built / np.clip(1.0 - greenery, 1e-3, None))[:, None, None]
    roof_kind = rng.integers(0, len(SAT_ROOFS), (n, s // 4, s // 4)).repeat(4, 1).repeat(4, 2)

    land = inside & ~water
    labels = np.full((n, s, s), _S_ROAD, dtype=np.int64)
    labels[land] = _S_GROUND
    labels[land & ~green_px & roof_px] = _S_ROOF + roof_kind[land & ~green_px & roof_px]
    labels[land & green_px] = _S_GREEN
    labels[water] = _S_WATER
    palette = np.vstack([SAT_ROAD, SAT_GROUND, SAT_GREEN, SAT_WATER, SAT_ROOFS]).astype(np.float32)
    rgb = _paint(labels, np.broadcast_to(palette, (n, *palette.shape)))
    return _finish(rng, rgb, np.where(labels == _S_GREEN, 9.0, 4.0).astype(np.float32), 0.05)
