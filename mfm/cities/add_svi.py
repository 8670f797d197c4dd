"""Import street-view imagery into a City bundle: the ``svi`` layer (DESIGN §5).

Input: a folder of images and an index table (CSV or Parquet) with one row per sampling
point: its latitude, longitude and four image files (east, south, west, north), paths
relative to the folder (absolute paths work too). Every image is checked (found and
decodable), then hard-linked (copied where links are impossible) into the bundle as
``images/svi/<svi_id>_<direction><ext>``; an existing ``svi`` layer and its images are
replaced. The whole edit is all or nothing (:func:`mfm.cities.bundle.edit_bundle`).

Ids: the ``id_column`` when given (strings, unique), else ``s`` + the 0-based index row
zero-padded to six digits (``s000000``, ``s000001``, ...), so an id points back at its
index row and stays the same when other rows are dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from mfm.cities._input import (
    RowChecks,
    check_lonlat,
    check_near_city,
    file_stem,
    image_problems,
    read_table,
    remove_layer_files,
    require_columns,
    suffixes,
    table_columns,
)
from mfm.cities.bundle import edit_bundle
from mfm.core.constants import GEOMETRY, SVI_DIRECTIONS, SVI_ID, WGS84
from mfm.core.errors import CityError, short_repr
from mfm.core.progress import progress_bar

__all__ = ["OPTIONS", "add_svi"]

OPTIONS = {
    "lat": "--lat-column",
    "lon": "--lon-column",
    "id": "--id-column",
    **{d: f"--{d}-column" for d in SVI_DIRECTIONS},
}
"""CLI option that maps each input column, quoted in error messages."""

IMAGE_DIR = "images/svi"


def _svi_ids(checks: RowChecks, frame: pd.DataFrame, id_column: str | None) -> np.ndarray:
    """Ids from ``id_column`` (strings, present) or generated from the row number."""
    n = len(frame)
    if id_column is None:
        width = max(6, len(str(max(n - 1, 0))))
        return np.char.add("s", np.char.zfill(np.arange(n).astype(str), width)).astype(object)
    raw = frame[id_column]
    null = raw.isna().to_numpy()
    if pd.api.types.is_float_dtype(raw):  # Parquet floats: ids must be whole numbers
        frac = ~null & (np.mod(raw.fillna(0).to_numpy(), 1) != 0)
        checks.flag(
            frac,
            id_column,
            lambda r: f"id {short_repr(raw[r])} is not a whole number or string",
            "bad id",
        )
        text = raw.fillna(0).astype(np.int64).astype(str)
    else:
        text = raw.astype(str).str.strip()
    ids = text.where(~null, "")
    checks.flag(
        null | (ids == "").to_numpy(),
        id_column,
        lambda r: "missing id; every point needs one",
        "missing id",
    )
    return ids.to_numpy(dtype=object)


def _flag_duplicates(checks: RowChecks, ids: np.ndarray, id_column: str) -> None:
    """Flag repeated ids among the rows still good (the first one stays)."""
    ok = checks.ok
    good = pd.Series(ids[ok], index=np.flatnonzero(ok))
    repeated = good.duplicated(keep="first")
    if not repeated.any():
        return
    first = pd.Series(good.index[~repeated], index=good[~repeated].to_numpy())
    dup = np.zeros(len(ids), dtype=bool)
    dup[good.index[repeated]] = True
    checks.flag(
        dup,
        id_column,
        lambda r: f"duplicate id '{ids[r]}' (first at row {first[ids[r]]}); ids must be unique",
        "duplicate id",
    )


def _check_paths(
    checks: RowChecks, frame: pd.DataFrame, columns: dict[str, str], images: Path, progress: bool
) -> dict[str, np.ndarray]:
    """Check the image columns (paths present, files found and decodable); return the paths."""
    sources: dict[str, np.ndarray] = {}
    for direction, col in columns.items():
        raw = frame[col]
        text = raw.astype(str).str.strip()
        empty = raw.isna().to_numpy() | (text == "").to_numpy()
        checks.flag(
            empty,
            col,
            lambda r, d=direction: f"no {d} image path; every point needs four images",
            "missing image path",
        )
        sources[direction] = text.to_numpy(dtype=object)
    ok = checks.ok
    flat = pd.Series(np.concatenate([v[ok] for v in sources.values()]))
    unique = flat.drop_duplicates().to_numpy(dtype=object)
    resolved = {v: images / v for v in unique}  # absolute paths stay absolute
    with progress_bar(
        "checking street view images",
        len(unique),
        quiet=not progress,
        unit="images",
        transient=True,
    ) as bar:
        problems = dict(
            zip(
                unique,
                image_problems([resolved[v] for v in unique], lambda n: bar.advance(n)),
                strict=True,
            )
        )
    status = {d: pd.Series(v).map(problems).to_numpy(dtype=object) for d, v in sources.items()}
    # report in row order: the first bad row of the index first
    bad_rows = np.flatnonzero(ok & np.any([pd.notna(s) for s in status.values()], axis=0))
    for r in bad_rows:
        for direction, col in columns.items():
            why = status[direction][r]
            if why is None or (isinstance(why, float) and np.isnan(why)):
                continue
            shown = resolved[sources[direction][r]]
            where = f"{shown} ({checks.file} row {r} column {col})"
            if why == "not found":
                checks.fail(int(r), f"{where} not found", "image not found")
            else:
                checks.fail(int(r), f"{where}: {why}", "unreadable image")
    return sources


def add_svi(
    root: Path | str,
    images: Path | str,
    index: Path | str,
    *,
    lat: str = "lat",
    lon: str = "lon",
    id_column: str | None = None,
    directions: dict[str, str] | None = None,
    drop_invalid: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Import street-view images into the bundle at ``root`` as its ``svi`` layer.

    Args:
        root: The City bundle directory.
        images: Folder the index's image paths are relative to.
        index: CSV or Parquet, one row per sampling point.
        lat, lon: Coordinate columns of the index (WGS84 degrees).
        id_column: Column with the point ids; None generates ``s000000``-style ids.
        directions: Direction -> index column, for columns not named east/south/west/north.
        drop_invalid: Drop bad rows (counted in the summary) instead of raising.
        progress: Show a progress bar while images are checked and linked.

    Returns:
        A JSON-serialisable summary: layer, file, rows, images, dropped (and why),
        replaced.

    Raises:
        CityError: One line naming the input file, row, column and fix.
    """
    root, images, index = Path(root), Path(images), Path(index)
    directions = dict(directions or {})
    unknown = sorted(set(directions) - set(SVI_DIRECTIONS))
    if unknown:
        raise CityError(
            f"unknown direction {unknown[0]!r} in the direction mapping; use "
            f"{', '.join(SVI_DIRECTIONS)}"
        )
    columns = {d: directions.get(d, d) for d in SVI_DIRECTIONS}
    if not images.is_dir():
        raise CityError(f"{images} is not a folder; pass the folder holding the images")
    wanted = {lat: ("latitude", OPTIONS["lat"]), lon: ("longitude", OPTIONS["lon"])}
    wanted |= {col: (f"{d} image path", OPTIONS[d]) for d, col in columns.items()}
    if id_column is not None:
        wanted[id_column] = ("point id", OPTIONS["id"])
    require_columns(index, table_columns(index, "street-view index"), wanted)
    text = [*columns.values(), *([id_column] if id_column else [])]
    frame = read_table(index, wanted, text=text, what="street-view index")
    if frame.empty:
        raise CityError(f"{index} has no data rows; add one row per street-view point")

    checks = RowChecks(index, len(frame), drop_invalid)
    y, x = check_lonlat(checks, frame, lat, lon)
    ids = _svi_ids(checks, frame, id_column)
    sources = _check_paths(checks, frame, columns, images, progress)
    if id_column is not None:
        _flag_duplicates(checks, ids, id_column)
    keep = checks.ok
    if not keep.any():
        raise CityError(f"no valid rows left in {index} after dropping {checks.dropped} bad rows")
    check_near_city(root, index, y[keep], x[keep], "street-view points")

    ids = ids[keep]
    stems = pd.Series(ids, dtype=object).astype(str)
    unsafe = ~stems.str.fullmatch(r"[A-Za-z0-9_.~-]+")
    stems[unsafe] = stems[unsafe].map(file_stem)
    rels: dict[str, np.ndarray] = {}
    for d in SVI_DIRECTIONS:
        ext = suffixes(pd.Series(sources[d][keep], dtype=object))
        rels[d] = (f"{IMAGE_DIR}/" + stems + f"_{d}" + ext).to_numpy(dtype=object)
    layer = gpd.GeoDataFrame(
        {SVI_ID: ids, **rels},
        geometry=gpd.points_from_xy(x[keep], y[keep]),
        crs=WGS84,
    )
    n = len(layer)
    with edit_bundle(root) as staging:
        replaced = "svi" in staging.manifest["layers"]
        remove_layer_files(staging, "svi")
        with progress_bar(
            "linking street view images", 4 * n, quiet=not progress, unit="images", transient=True
        ) as bar:
            for d in SVI_DIRECTIONS:
                for src, rel in zip(sources[d][keep], rels[d], strict=True):
                    staging.link(images / src, rel)  # an absolute src stays absolute
                    bar.advance(1)
        rel = staging.manifest["layers"].get("svi") or "svi.parquet"
        staging.add_layer("svi", layer[[SVI_ID, *SVI_DIRECTIONS, GEOMETRY]], rel)
    return {
        "layer": "svi",
        "file": rel,
        "source": str(index),
        "rows": n,
        "images": 4 * n,
        "dropped": checks.dropped,
        "dropped_reasons": dict(checks.reasons),
        "replaced": replaced,
    }
