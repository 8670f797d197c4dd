"""Terrain profiles of regions from a DEM GeoTIFF: pure numpy / rasterio, no torch.

A region's profile is computed on the DEM's own grid (regions are reprojected to the
DEM's CRS, never the DEM to the regions'): region ids are burnt onto the grid once with
:func:`rasterio.features.rasterize` and every statistic is a ``np.bincount`` (or one sort,
for min / max / percentiles) over the cells, so the cost is linear in the cells read.

Conventions (documented choices):

- Elevations are taken to be metres (the usual DEM unit); nodata cells (the band's nodata
  value or mask, and NaN/inf) are ignored.
- A cell belongs to the region that contains its centre (``all_touched=False``); a region
  too small to contain any cell centre is burnt again with ``all_touched=True`` so it
  still gets the cells it touches. Where regions overlap, the later one wins.
- Slope is ``atan(|grad z|)`` in degrees, with ``np.gradient`` divided by the pixel size in
  metres: the CRS unit for projected DEMs, the geodesic length of one pixel at each row's
  latitude for geographic (degree) DEMs. Cells next to nodata have no slope.
- ``coverage`` is the region's area covered by cells with data over its area (clipped to
  [0, 1]); ``has_data`` is 1 when at least one cell with data falls in the region. A region
  outside the DEM (or only over nodata) gets zeros in every column.
- Only the window of the DEM that covers the regions is read; windows larger than
  ``max_cells`` are read decimated (``Resampling.average``) to stay within memory.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from mfm import MfmError

if TYPE_CHECKING:
    import geopandas as gpd
    from affine import Affine

DEM_FILE = "dem.tif"
"""The file a city bundle may hold at its root; used when ``[plugin.terrain] dem`` is unset."""

DEFAULT_PERCENTILES = (10.0, 25.0, 50.0, 75.0, 90.0)
FLAG_COLUMNS = ("coverage", "has_data")
"""The last two columns: they describe the DEM's coverage of a region, not its terrain."""


def feature_names(percentiles: tuple[float, ...] = DEFAULT_PERCENTILES) -> list[str]:
    """Column names of :func:`terrain_features`, terrain statistics first, flags last."""
    pct = [f"elev_p{p:g}" for p in percentiles]
    elev = ["elev_mean", "elev_std", "elev_min", "elev_max", "elev_range"]
    return [*elev, *pct, "slope_mean", "slope_std", *FLAG_COLUMNS]


def resolve_dem(option: str | None, city_root: Path) -> Path:
    """The DEM file to use: ``option`` if set, else ``<city_root>/dem.tif``.

    A relative ``option`` is looked up in the working directory, then in the city root.

    Raises:
        MfmError: One line naming the missing file and how to pass a DEM.
    """
    if option is None:
        path = Path(city_root) / DEM_FILE
        if not path.is_file():
            raise MfmError(
                f"terrain plugin: no DEM at {path}; put a GeoTIFF DEM there, set "
                f'[plugin.terrain] dem = "path/to/dem.tif" in the run config (--config), '
                "or leave terrain out of --plugins"
            )
        return path
    path = Path(option).expanduser()
    for candidate in (path, Path(city_root) / path):
        if candidate.is_file():
            return candidate
    raise MfmError(
        f"terrain plugin: [plugin.terrain] dem = {option!r} does not exist (looked in the "
        f"working directory and in {city_root}); give the path of a GeoTIFF DEM"
    )


def file_digest(path: Path) -> str:
    """Short sha256 (16 hex chars) of a file's bytes: the DEM's cache key."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


@dataclass
class DemGrid:
    """A window of a DEM: elevations (NaN = no data) and where the cells lie."""

    z: np.ndarray  # [H, W] float64
    transform: Affine
    crs: object  # rasterio CRS
    dx: np.ndarray  # [H] metres per pixel along a row, per row
    dy: np.ndarray  # [H] metres per pixel along a column, per row

    @property
    def cell_area(self) -> np.ndarray:
        """``[H]`` area in square metres of one cell, per row."""
        return self.dx * self.dy


def pixel_size_m(crs: object, transform: Affine, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel width and height in metres for every row of a grid.

    Projected CRS: the pixel vectors' lengths times the CRS unit (metres, feet...).
    Geographic CRS: geodesic lengths of one pixel at each row centre's latitude.

    Raises:
        MfmError: The DEM has no CRS, or is a rotated grid in a geographic CRS.
    """
    from pyproj import CRS

    if crs is None:
        raise MfmError(
            "terrain plugin: the DEM has no CRS; assign one (gdal_edit.py -a_srs EPSG:...)"
        )
    pcrs = CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
    t = transform
    if not pcrs.is_geographic:
        unit = pcrs.axis_info[0].unit_conversion_factor or 1.0
        dx = math.hypot(t.a, t.d) * unit
        dy = math.hypot(t.b, t.e) * unit
        return np.full(rows, dx), np.full(rows, dy)
    if t.b != 0 or t.d != 0:
        raise MfmError(
            "terrain plugin: rotated DEMs in a geographic CRS are not supported; "
            "warp the DEM north-up with gdalwarp"
        )
    geod = pcrs.get_geod()
    lat = t.f + t.e * (np.arange(rows) + 0.5)
    zero = np.zeros(rows)
    _, _, dx = geod.inv(zero, lat, zero + abs(t.a), lat)
    _, _, dy = geod.inv(zero, lat - abs(t.e) / 2, zero, lat + abs(t.e) / 2)
    return np.asarray(dx, dtype=np.float64), np.asarray(dy, dtype=np.float64)


def read_dem(
    path: Path,
    bounds: tuple[float, float, float, float] | None = None,
    band: int = 1,
    max_cells: int = 50_000_000,
) -> DemGrid:
    """Read the part of a DEM that covers ``bounds`` (in the DEM's CRS; None: all of it).

    Windows larger than ``max_cells`` cells are read decimated with an average filter.
    An empty window (bounds outside the DEM) gives a ``[0, 0]`` grid.
    """
    import rasterio
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.errors import RasterioIOError
    from rasterio.transform import rowcol
    from rasterio.windows import Window

    try:
        src = rasterio.open(path)
    except RasterioIOError as exc:
        raise MfmError(f"terrain plugin: cannot read DEM {path} ({exc}); give a GeoTIFF") from None
    with src:
        if not 1 <= band <= src.count:
            raise MfmError(
                f"terrain plugin: [plugin.terrain] band = {band} but {path} has {src.count} band(s)"
            )
        row0, col0, row1, col1 = 0, 0, src.height, src.width
        if bounds is not None:
            x0, y0, x1, y1 = bounds
            rows, cols = rowcol(src.transform, [x0, x0, x1, x1], [y0, y1, y0, y1], op=math.floor)
            row0, row1 = max(0, min(rows)), min(src.height, max(rows) + 1)
            col0, col1 = max(0, min(cols)), min(src.width, max(cols) + 1)
        if row1 <= row0 or col1 <= col0:
            empty = np.zeros((0, 0))
            return DemGrid(empty, src.transform, src.crs, np.zeros(0), np.zeros(0))
        window = Window(col0, row0, col1 - col0, row1 - row0)
        transform = src.window_transform(window)
        cells = window.width * window.height
        out_shape = None
        if cells > max_cells:
            f = math.ceil(math.sqrt(cells / max_cells))
            out_shape = (math.ceil(window.height / f), math.ceil(window.width / f))
            transform = transform @ Affine.scale(
                window.width / out_shape[1], window.height / out_shape[0]
            )
        data = src.read(
            band, window=window, out_shape=out_shape, masked=True, resampling=Resampling.average
        )
        crs = src.crs
    z = np.ma.filled(data.astype(np.float64), np.nan)
    z[~np.isfinite(z)] = np.nan
    dx, dy = pixel_size_m(crs, transform, z.shape[0])
    return DemGrid(z, transform, crs, dx, dy)


def slope_degrees(z: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Slope ``atan(|grad z|)`` in degrees; ``dx``/``dy`` are metres per pixel per row.

    NaN where ``z`` or a neighbour used by the central difference is NaN.
    """
    if z.shape[0] < 2 or z.shape[1] < 2:
        return np.where(np.isfinite(z), 0.0, np.nan)
    gy, gx = np.gradient(z)
    grad = np.hypot(gx / dx[:, None], gy / dy[:, None])
    return np.degrees(np.arctan(grad))


def _group_percentiles(
    values: np.ndarray, labels: np.ndarray, n: int, qs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per label ``0..n-1``: min, max and percentiles ``qs`` (fractions), linear interpolation.

    One lexsort; groups without values give zeros.
    """
    order = np.lexsort((values, labels))
    v = values[order]
    count = np.bincount(labels, minlength=n)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    has = count > 0
    out_min, out_max = np.zeros(n), np.zeros(n)
    out_q = np.zeros((n, len(qs)))
    if not has.any():
        return out_min, out_max, out_q
    s, c = start[has], count[has]
    out_min[has] = v[s]
    out_max[has] = v[s + c - 1]
    pos = s[:, None] + qs[None, :] * (c[:, None] - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, (s + c - 1)[:, None])
    frac = pos - lo
    out_q[has] = v[lo] + frac * (v[hi] - v[lo])
    return out_min, out_max, out_q


def zonal_terrain(
    grid: DemGrid,
    geoms: np.ndarray,
    area_m2: np.ndarray,
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES,
) -> np.ndarray:
    """Terrain profile of every region on ``grid``: ``[R, len(feature_names(percentiles))]``.

    Args:
        grid: The DEM window (see :func:`read_dem`).
        geoms: ``[R]`` region polygons in the DEM's CRS (None/empty: no data).
        area_m2: ``[R]`` region areas in square metres (for ``coverage``).
        percentiles: elevation percentiles (0-100) to report.
    """
    from rasterio.features import rasterize

    n = len(geoms)
    out = np.zeros((n, len(feature_names(percentiles))))
    if grid.z.size == 0 or n == 0:
        return out
    import shapely

    ok = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    ids = np.flatnonzero(ok)
    if len(ids) == 0:
        return out
    shape = grid.z.shape
    labels = rasterize(
        zip(geoms[ids], ids + 1, strict=True),
        out_shape=shape,
        transform=grid.transform,
        fill=0,
        dtype="int32",
        all_touched=False,
    )
    slope = slope_degrees(grid.z, grid.dx, grid.dy)
    area = np.broadcast_to(grid.cell_area[:, None], shape)
    # cells of each region: (label, elevation, slope, cell area)
    taken = labels > 0
    lab, z, s, a = labels[taken] - 1, grid.z[taken], slope[taken], area[taken]
    missing = np.setdiff1d(ids, lab)
    if len(missing):  # regions that hold no cell centre: take every cell they touch
        small = rasterize(
            zip(geoms[missing], missing + 1, strict=True),
            out_shape=shape,
            transform=grid.transform,
            fill=0,
            dtype="int32",
            all_touched=True,
        )
        t2 = small > 0
        lab = np.concatenate([lab, small[t2] - 1])
        z = np.concatenate([z, grid.z[t2]])
        s = np.concatenate([s, slope[t2]])
        a = np.concatenate([a, area[t2]])
    valid = np.isfinite(z)
    lab_v, z_v = lab[valid], z[valid]
    count = np.bincount(lab_v, minlength=n).astype(np.float64)
    has = count > 0
    safe = np.maximum(count, 1)
    mean = np.bincount(lab_v, weights=z_v, minlength=n) / safe
    var = np.bincount(lab_v, weights=z_v**2, minlength=n) / safe - mean**2
    lo, hi, q = _group_percentiles(z_v, lab_v, n, np.asarray(percentiles) / 100.0)
    s_ok = np.isfinite(s)
    lab_s, s_v = lab[s_ok], s[s_ok]
    s_count = np.maximum(np.bincount(lab_s, minlength=n), 1)
    s_mean = np.bincount(lab_s, weights=s_v, minlength=n) / s_count
    s_var = np.bincount(lab_s, weights=s_v**2, minlength=n) / s_count - s_mean**2
    covered = np.bincount(lab_v, weights=a[valid], minlength=n)
    coverage = np.clip(covered / np.maximum(area_m2, 1e-9), 0.0, 1.0)
    cols = [mean, np.sqrt(np.maximum(var, 0)), lo, hi, hi - lo, *q.T]
    cols += [s_mean, np.sqrt(np.maximum(s_var, 0)), coverage, has.astype(np.float64)]
    out[:] = np.column_stack(cols)
    out[~has] = 0.0
    return out


def terrain_features(
    dem: Path,
    regions: gpd.GeoSeries,
    area_m2: np.ndarray | None = None,
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES,
    band: int = 1,
    max_cells: int = 50_000_000,
) -> np.ndarray:
    """Raw terrain profiles ``[R, F]`` of ``regions`` (any CRS) from the DEM file ``dem``.

    Args:
        dem: A GeoTIFF (or any single-band raster GDAL reads) with a CRS.
        regions: Region polygons; reprojected to the DEM's CRS.
        area_m2: Region areas in square metres; None: computed in the regions' UTM zone.
        percentiles: elevation percentiles (0-100).
        band: the raster band holding elevations.
        max_cells: read the covering window decimated beyond this many cells.

    Returns:
        float64 ``[R, len(feature_names(percentiles))]`` (columns in that order).
    """
    import rasterio

    with rasterio.open(dem) as src:
        crs = src.crs
    if crs is None:
        raise MfmError(
            f"terrain plugin: DEM {dem} has no CRS; assign one (gdal_edit.py -a_srs EPSG:...)"
        )
    if area_m2 is None:
        metric = (
            regions.to_crs(regions.estimate_utm_crs()) if regions.crs.is_geographic else regions
        )
        area_m2 = metric.area.to_numpy(dtype=np.float64)
    local = regions.to_crs(crs.to_wkt())
    valid = local[~(local.is_empty | local.isna())]
    bounds = tuple(valid.total_bounds) if len(valid) else None
    if bounds is None or not np.all(np.isfinite(bounds)):
        return np.zeros((len(regions), len(feature_names(percentiles))))
    grid = read_dem(dem, bounds, band, max_cells)  # type: ignore[arg-type]
    return zonal_terrain(grid, local.to_numpy(), np.asarray(area_m2), percentiles)


def standardize(raw: np.ndarray) -> np.ndarray:
    """Z-score the columns of :func:`terrain_features` output.

    Terrain statistics are standardized over the regions with data, and regions without
    data get 0 (the mean) there; the two flag columns (coverage, has_data) over all
    regions. Constant columns become 0.
    """
    out = np.zeros_like(raw, dtype=np.float64)
    has = raw[:, -1] > 0
    n_stats = raw.shape[1] - len(FLAG_COLUMNS)
    for cols, rows in ((slice(0, n_stats), has), (slice(n_stats, None), slice(None))):
        block = raw[rows, cols]
        if len(block) == 0:
            continue
        mean, std = block.mean(0), block.std(0)
        z = np.divide(block - mean, std, out=np.zeros_like(block), where=std > 1e-12)
        out[rows, cols] = z
    return out


def describe_dem(path: Path) -> dict[str, object]:
    """What the plugin sees in a DEM: CRS, size, pixel size in metres, elevation range."""
    grid = read_dem(Path(path))
    z = grid.z[np.isfinite(grid.z)]
    return {
        "path": str(path),
        "crs": grid.crs.to_string() if grid.crs is not None else None,
        "width": int(grid.z.shape[1]),
        "height": int(grid.z.shape[0]),
        "pixel_m": [round(float(grid.dx.mean()), 3), round(float(grid.dy.mean()), 3)],
        "valid_share": round(float(z.size / max(grid.z.size, 1)), 4),
        "elevation_m": [float(z.min()), float(z.max())] if z.size else None,
    }


def write_hill_dem(
    path: Path,
    bounds: tuple[float, float, float, float],
    crs: str,
    pixel: float = 10.0,
    margin: float = 100.0,
) -> Path:
    """Write a synthetic DEM: a smooth hill and a gentle tilt over ``bounds`` (in ``crs``).

    For demos and tests on the synthetic city, which has no elevation data: the hill
    (60 m high) sits near the north-east corner, the ground tilts up to the east (10 m over
    the extent), and a band of nodata cells runs along the southern edge.
    """
    import rasterio
    from rasterio.transform import from_origin

    x0, y0, x1, y1 = bounds[0] - margin, bounds[1] - margin, bounds[2] + margin, bounds[3] + margin
    width, height = math.ceil((x1 - x0) / pixel), math.ceil((y1 - y0) / pixel)
    xs = x0 + (np.arange(width) + 0.5) * pixel
    ys = y1 - (np.arange(height) + 0.5) * pixel
    gx, gy = np.meshgrid(xs, ys)
    cx, cy = x0 + 0.75 * (x1 - x0), y0 + 0.7 * (y1 - y0)
    sigma = 0.25 * max(x1 - x0, y1 - y0)
    z = 20.0 + 60.0 * np.exp(-((gx - cx) ** 2 + (gy - cy) ** 2) / (2 * sigma**2))
    z += 10.0 * (gx - x0) / (x1 - x0)
    z = z.astype(np.float32)
    nodata = -9999.0
    z[-max(1, int(margin / pixel) // 2) :, :] = nodata
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 1,
        "dtype": "float32",
        "crs": crs,
        "transform": from_origin(x0, y1, pixel, pixel),
        "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(z, 1)
    return path


def write_city_dem(city_root: Path, out: Path | None = None, pixel: float = 10.0) -> Path:
    """Write :func:`write_hill_dem` over a City bundle's regions (default ``<city>/dem.tif``)."""
    from mfm import City

    city = City.load(city_root)
    bounds = tuple(city.layer("regions").to_crs(city.crs).total_bounds)
    return write_hill_dem(out or Path(city_root) / DEM_FILE, bounds, city.crs, pixel)  # type: ignore[arg-type]
