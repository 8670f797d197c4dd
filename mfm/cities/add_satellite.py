"""Import satellite (or any overhead raster) imagery into a City bundle: the ``satellite`` layer.

Two sources (DESIGN §5, one image per region, ``images/sat/<region_id>.png``):

- ``raster``: a GeoTIFF in any CRS, cropped per region. Each tile frames the region's
  bounding *square* in the city's metric CRS (so tiles are not stretched, whatever the
  raster's CRS), centred on the region. Only that window is read, resampled to
  ``size`` x ``size`` with bilinear resampling by GDAL, so a large raster is never loaded.
  Bands: 3 or more -> the first three as RGB; 1 or 2 -> the first one as gray. Bands
  that are not 8-bit are scaled linearly from the raster-wide 2nd-98th percentile
  (taken from a decimated read of at most ~1024 px a side, which GDAL serves from
  overviews when the file has them), 8-bit bands are kept as they are. Nodata, NaN and
  the part of the frame outside the raster become 0 (black). Pixels outside the region's
  polygon are kept by default (the surroundings are context, and the synthetic tiles
  show them too); ``mask=True`` blacks them out. Regions whose polygon does not overlap
  the raster get no tile and are counted in the summary (``skipped``); the satellite
  layer may cover a subset of the regions.
- ``images``: a folder of ready tiles named ``<region_id>.png|.jpg|.jpeg|.tif|.tiff``,
  linked in as they are (any size). Other files are ignored and counted.

The edit is all or nothing (:func:`mfm.cities.bundle.edit_bundle`); an existing satellite
layer and its images are replaced.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from mfm.cities._input import (
    file_stem,
    image_problems,
    remove_layer_files,
)
from mfm.cities.bundle import Staging, edit_bundle
from mfm.core.bundle.rules import IMAGE
from mfm.core.constants import REGION_ID, WGS84
from mfm.core.errors import CityError, oneline
from mfm.core.progress import progress_bar

if TYPE_CHECKING:
    from rasterio.io import DatasetReader

__all__ = ["IMAGE_SUFFIXES", "add_satellite"]

IMAGE_DIR = "images/sat"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
STATS_SIDE = 1024
"""Longest side (pixels) of the decimated read the percentile stretch is computed from."""
PERCENTILES = (2.0, 98.0)


def _regions(root: Path) -> tuple[gpd.GeoDataFrame, str, str]:
    """The bundle's regions (validated), its metric CRS and the regions file."""
    from mfm.core.bundle.city import City

    city = City.load(root)
    if not city.has("regions"):
        raise CityError(
            f"{root} has no regions layer; satellite tiles are per region: add regions first "
            "(`mfm city from-osm --regions ...`)"
        )
    return city.regions, city.crs, city.files["regions"]


def _rel(region_id: str, ext: str) -> str:
    """Bundle path of a region's tile (ids that are not file-name safe are URL-quoted)."""
    return f"{IMAGE_DIR}/{file_stem(region_id)}{ext}"


# --------------------------------------------------------------------------- raster


def _open(raster: Path) -> DatasetReader:
    try:
        import rasterio
        from rasterio.errors import RasterioError
    except ImportError:
        raise CityError(
            f"cropping tiles from {raster} needs rasterio: pip install 'urban-mfm[raster]' "
            "(or pass --images with ready tiles)"
        ) from None

    if not raster.is_file():
        raise CityError(f"{raster} not found; pass a GeoTIFF")
    try:
        src = rasterio.open(raster)
    except RasterioError as exc:
        raise CityError(
            f"cannot read {raster} as a raster: {oneline(exc)}; pass a GeoTIFF"
        ) from None
    t = src.transform
    problem = None
    if src.crs is None:
        problem = f"has no CRS; set it (e.g. `gdal_edit.py -a_srs EPSG:3067 {raster}`)"
    elif t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
        problem = f"is rotated or not north-up; warp it first (`gdalwarp {raster} out.tif`)"
    if problem:
        src.close()
        raise CityError(f"{raster} {problem}")
    return src


def _stretch(src: DatasetReader, bands: list[int]) -> tuple[float, float] | None:
    """Raster-wide 2nd-98th percentile of ``bands`` (None when all are 8-bit: kept as is)."""
    from rasterio.enums import Resampling

    if all(src.dtypes[b - 1] == "uint8" for b in bands):
        return None
    f = max(1.0, max(src.width, src.height) / STATS_SIDE)
    shape = (len(bands), max(1, round(src.height / f)), max(1, round(src.width / f)))
    data = src.read(bands, out_shape=shape, masked=True, resampling=Resampling.nearest)
    values = np.asarray(data.compressed(), dtype=np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return 0.0, 1.0
    lo, hi = np.percentile(values, PERCENTILES)
    return float(lo), float(hi if hi > lo else lo + 1.0)


def _tile(
    src: DatasetReader,
    bands: list[int],
    frame: np.ndarray,
    size: int,
    stretch: tuple[float, float] | None,
) -> np.ndarray:
    """The ``size`` x ``size`` RGB uint8 tile of ``frame`` (bounds in the raster CRS)."""
    from rasterio.enums import Resampling
    from rasterio.errors import WindowError
    from rasterio.windows import Window, from_bounds

    out = np.zeros((size, size, 3), dtype=np.uint8)
    win = from_bounds(*frame, transform=src.transform)
    try:
        part = win.intersection(Window(0, 0, src.width, src.height))
    except WindowError:
        return out
    c0 = round((part.col_off - win.col_off) / win.width * size)
    c1 = round((part.col_off + part.width - win.col_off) / win.width * size)
    r0 = round((part.row_off - win.row_off) / win.height * size)
    r1 = round((part.row_off + part.height - win.row_off) / win.height * size)
    if c1 <= c0 or r1 <= r0:
        return out
    data = src.read(
        bands,
        window=part,
        out_shape=(len(bands), r1 - r0, c1 - c0),
        resampling=Resampling.bilinear,
        masked=True,
    )
    values = np.asarray(data.data, dtype=np.float32)
    valid = ~np.ma.getmaskarray(data) & np.isfinite(values)
    if stretch is not None:
        lo, hi = stretch
        values = (values - lo) * np.float32(255.0 / (hi - lo))
    pixels = np.where(valid, np.clip(np.rint(values), 0, 255), 0).astype(np.uint8)
    out[r0:r1, c0:c1] = np.moveaxis(pixels, 0, -1)  # a gray band broadcasts to RGB
    return out


def _mask_outside(tile: np.ndarray, geom: Any, frame: np.ndarray) -> None:
    """Black out the pixels of ``tile`` outside ``geom`` (both in the raster CRS)."""
    from rasterio.features import geometry_mask
    from rasterio.transform import Affine

    size = tile.shape[0]
    west, south, east, north = frame
    transform = Affine((east - west) / size, 0, west, 0, -(north - south) / size, north)
    outside = geometry_mask([geom], out_shape=(size, size), transform=transform, all_touched=True)
    tile[outside] = 0


def _frames(geoms: gpd.GeoSeries, metric_crs: str, raster_crs: Any) -> np.ndarray:
    """Bounds in the raster CRS of each geometry's bounding square in the metric CRS."""
    b = shapely.bounds(geoms.to_crs(metric_crs).to_numpy())
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    half = np.maximum(np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) / 2, 1.0)
    squares = shapely.segmentize(shapely.box(cx - half, cy - half, cx + half, cy + half), half / 4)
    return shapely.bounds(gpd.GeoSeries(squares, crs=metric_crs).to_crs(raster_crs).to_numpy())


def _no_overlap(raster: Path, src: DatasetReader, regions: gpd.GeoDataFrame) -> CityError:
    from rasterio.warp import transform_bounds

    w, s, e, n = transform_bounds(src.crs, WGS84, *src.bounds, densify_pts=21)
    rw, rs, re, rn = regions.total_bounds
    return CityError(
        f"{raster} does not overlap any region: it covers lon {w:.5f}..{e:.5f}, lat "
        f"{s:.5f}..{n:.5f} (CRS {src.crs.to_string()}), the {len(regions)} regions lon "
        f"{rw:.5f}..{re:.5f}, lat {rs:.5f}..{rn:.5f}; pass a raster of this city's area"
    )


def _from_raster(
    staging: Staging,
    raster: Path,
    regions: gpd.GeoDataFrame,
    metric_crs: str,
    size: int,
    mask: bool,
    drop_invalid: bool,
    progress: bool,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Write one tile per overlapping region into ``staging``; return the layer and summary."""
    from rasterio.errors import RasterioError

    with _open(raster) as src:
        geoms = regions.geometry.to_crs(src.crs)
        footprint = shapely.box(*src.bounds)
        arr = geoms.to_numpy()
        overlap = shapely.intersects(arr, footprint) & ~shapely.touches(arr, footprint)
        if not overlap.any():
            raise _no_overlap(raster, src, regions)
        idx = np.flatnonzero(overlap)
        frames = _frames(regions.geometry.iloc[idx], metric_crs, src.crs)
        inside = (
            (frames[:, 0] >= src.bounds.left)
            & (frames[:, 2] <= src.bounds.right)
            & (frames[:, 1] >= src.bounds.bottom)
            & (frames[:, 3] <= src.bounds.top)
        )
        bands = [1, 2, 3] if src.count >= 3 else [1]
        stretch = _stretch(src, bands)
        ids = regions[REGION_ID].to_numpy()[idx]
        written = np.zeros(len(idx), dtype=bool)
        remove_layer_files(staging, "satellite")
        with progress_bar(
            "satellite tiles", len(idx), quiet=not progress, unit="tiles", transient=True
        ) as bar:
            for k, i in enumerate(idx):
                try:
                    tile = _tile(src, bands, frames[k], size, stretch)
                except RasterioError as exc:
                    if not drop_invalid:
                        raise CityError(
                            f"{raster}: cannot read the window of region '{ids[k]}': "
                            f"{oneline(exc)}; check the file (`gdalinfo -checksum`) or pass "
                            "--drop-invalid to skip such regions"
                        ) from None
                    bar.advance()
                    continue
                if mask:
                    _mask_outside(tile, arr[i], frames[k])
                _save_png(staging.file(_rel(str(ids[k]), ".png")), tile)
                written[k] = True
                bar.advance()
        layer = pd.DataFrame(
            {REGION_ID: ids[written], IMAGE: [_rel(str(r), ".png") for r in ids[written]]}
        )
        dropped = int((~written).sum())
        summary = {
            "mode": "raster",
            "regions": len(regions),
            "skipped": int((~overlap).sum()),
            "partial": int((~inside & written).sum()),
            "dropped": dropped,
            "dropped_reasons": {"unreadable window": dropped} if dropped else {},
            "size": size,
            "bands": "rgb" if len(bands) == 3 else "gray",
            "stretch": list(stretch) if stretch is not None else None,
            "mask": mask,
            "raster_crs": src.crs.to_string(),
        }
    if layer.empty:
        raise CityError(f"no tile could be read from {raster} (all {dropped} windows failed)")
    return layer, summary


def _save_png(path: Path, tile: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(tile, mode="RGB").save(path, format="PNG")


# --------------------------------------------------------------------------- folder


def _from_folder(
    staging: Staging,
    images: Path,
    regions: gpd.GeoDataFrame,
    regions_file: str,
    drop_invalid: bool,
    progress: bool,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Link ``<region_id>.<ext>`` files into ``staging``; return the layer and summary."""
    if not images.is_dir():
        raise CityError(f"{images} is not a folder; pass the folder of <region_id>.png tiles")
    files = sorted(p for p in images.iterdir() if p.is_file() and not p.name.startswith("."))
    pics = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    stems = pd.Series([p.stem for p in pics], dtype=object)
    region_ids = regions[REGION_ID].astype(str)
    known = stems.isin(set(region_ids)).to_numpy()
    dup = stems.duplicated(keep="first").to_numpy() & known
    reasons: dict[str, int] = {}
    hint = "or pass --drop-invalid to skip such files"
    if not drop_invalid:
        if not known.all():
            p = pics[int(np.flatnonzero(~known)[0])]
            examples = ", ".join(region_ids.head(3))
            raise CityError(
                f"{p} is not named after a region: '{p.stem}' is not a region_id in "
                f"{regions_file} (ids look like {examples}); rename it to "
                f"<region_id>{p.suffix} {hint}"
            )
        if dup.any():
            p = pics[int(np.flatnonzero(dup)[0])]
            first = pics[int(np.flatnonzero((stems == p.stem).to_numpy())[0])]
            raise CityError(
                f"{p} and {first.name} are both images of region '{p.stem}'; keep one "
                "(or pass --drop-invalid to keep the first)"
            )
    for kind, bad in (("not a region id", ~known), ("duplicate region", dup)):
        if bad.any():
            reasons[kind] = int(bad.sum())
    keep = np.flatnonzero(known & ~dup)
    with progress_bar(
        "checking tiles", len(keep), quiet=not progress, unit="images", transient=True
    ) as bar:
        problems = list(image_problems([pics[i] for i in keep], lambda n: bar.advance(n)))
    good = []
    for i, why in zip(keep, problems, strict=True):
        if why is None:
            good.append(i)
        elif not drop_invalid:
            raise CityError(f"{why} ({pics[i]}); fix the file {hint}")
        else:
            reasons["unreadable image"] = reasons.get("unreadable image", 0) + 1
    if not good:
        raise CityError(
            f"no usable tiles in {images}: name them <region_id>.png (or .jpg, .jpeg, .tif, "
            f".tiff) after the ids in {regions_file}, e.g. {region_ids.iloc[0]}.png"
        )
    # layer rows in region order
    order = pd.Series(np.arange(len(region_ids)), index=region_ids.to_numpy())
    good = sorted(good, key=lambda i: order[pics[i].stem])
    rels = [_rel(pics[i].stem, pics[i].suffix.lower()) for i in good]
    remove_layer_files(staging, "satellite")
    for i, rel in zip(good, rels, strict=True):
        staging.link(pics[i], rel)
    layer = pd.DataFrame({REGION_ID: [pics[i].stem for i in good], IMAGE: rels})
    summary = {
        "mode": "images",
        "regions": len(regions),
        "without_image": len(regions) - len(layer),
        "dropped": sum(reasons.values()),
        "dropped_reasons": reasons,
        "ignored_files": len(files) - len(pics),
    }
    return layer, summary


# --------------------------------------------------------------------------- entry point


def add_satellite(
    root: Path | str,
    raster: Path | str | None = None,
    images: Path | str | None = None,
    *,
    size: int = 256,
    mask: bool = False,
    drop_invalid: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Import one satellite tile per region into the bundle at ``root`` (layer ``satellite``).

    Args:
        root: The City bundle directory; it needs a regions layer.
        raster: A GeoTIFF (any CRS) cropped per region. Exactly one of raster/images.
        images: A folder of ``<region_id>.png|.jpg|.jpeg|.tif|.tiff`` tiles.
        size: Tile side in pixels (raster only).
        mask: Black out pixels outside each region's polygon (raster only).
        drop_invalid: Skip bad files (folder) or unreadable windows (raster) and count
            them, instead of raising.
        progress: Show a progress bar over regions / files.

    Returns:
        A JSON-serialisable summary: layer, file, source, rows, regions, dropped (and
        why), replaced, plus per source: skipped (regions not overlapping the raster),
        partial, size, bands, stretch, mask, raster_crs; or without_image and
        ignored_files.

    Raises:
        CityError: One line naming the file and the fix.
    """
    if (raster is None) == (images is None):
        raise CityError(
            "pass exactly one of --raster (a GeoTIFF) or --images (a folder of "
            "<region_id>.png tiles)"
        )
    if raster is not None and (not isinstance(size, int) or size < 1):
        raise CityError(f"size must be a positive number of pixels, not {size!r}")
    root = Path(root)
    regions, metric_crs, regions_file = _regions(root)
    with edit_bundle(root) as staging:
        replaced = "satellite" in staging.manifest["layers"]
        if raster is not None:
            source = Path(raster)
            layer, extra = _from_raster(
                staging, source, regions, metric_crs, size, mask, drop_invalid, progress
            )
        else:
            source = Path(images)  # type: ignore[arg-type]
            layer, extra = _from_folder(
                staging, source, regions, regions_file, drop_invalid, progress
            )
        rel = staging.manifest["layers"].get("satellite") or "satellite.parquet"
        staging.add_layer("satellite", layer, rel)
    return {
        "layer": "satellite",
        "file": rel,
        "source": str(source),
        "rows": len(layer),
        "replaced": replaced,
        **extra,
    }
