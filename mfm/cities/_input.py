"""Shared input checks for the ``add-*`` importers (street view, satellite, trajectories).

Every problem in a user's input becomes one :class:`~mfm.core.errors.CityError` line that
names the input file, the 0-based data row (as :class:`mfm.core.bundle.validate.Problem` counts
rows), the column, the reason and the fix. With ``drop_invalid`` the bad rows are dropped
instead and counted per reason, so the importer can report them in its summary.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import numpy as np
import pandas as pd

from mfm.cities.bundle import Staging
from mfm.core.bundle.rules import IMAGE
from mfm.core.bundle.validate import check_image
from mfm.core.constants import SVI_DIRECTIONS
from mfm.core.errors import CityError, oneline, short_repr

if TYPE_CHECKING:
    import geopandas as gpd

DROP_HINT = "fix the row or pass --drop-invalid to skip bad rows"
PARQUET_SUFFIXES = (".parquet", ".pq", ".geoparquet")
_MAX_LISTED = 30


def read_vector(path: Path, what: str) -> gpd.GeoDataFrame:
    """A GeoParquet, GeoPackage, GeoJSON, Shapefile or FlatGeobuf file as a GeoDataFrame.

    Raises:
        CityError: One line naming the file and the formats accepted.
    """
    import geopandas as gpd

    try:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            return gpd.read_parquet(path)
        return gpd.read_file(path, engine="pyogrio")
    except Exception as exc:  # pyogrio/pyarrow raise many types for unreadable files
        raise CityError(
            f"{path}: cannot read {what} ({oneline(exc)}); pass a GeoPackage, GeoJSON, "
            "Shapefile or GeoParquet file"
        ) from None


def file_stem(ident: str) -> str:
    """A file-name-safe, collision-free stem for an id (URL-quoted: ``a/b`` -> ``a%2Fb``)."""
    return quote(ident, safe="")


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in PARQUET_SUFFIXES


def table_columns(path: Path, what: str) -> list[str]:
    """Column names of a CSV or Parquet file (header / schema only)."""
    if not path.is_file():
        raise CityError(f"{path} not found; pass the {what} file (CSV or Parquet)")
    try:
        if _is_parquet(path):
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        return [str(c) for c in pd.read_csv(path, nrows=0).columns]
    except Exception as exc:
        kind = "Parquet" if _is_parquet(path) else "CSV"
        raise CityError(
            f"cannot read {path} as {kind}: {oneline(exc)}; pass a CSV with a header row "
            "or a Parquet file"
        ) from None


def read_table(
    path: Path, columns: Iterable[str], text: Iterable[str] = (), what: str = "input"
) -> pd.DataFrame:
    """Read ``columns`` of a CSV or Parquet file; ``text`` columns are read as strings (CSV)."""
    columns, text = list(dict.fromkeys(columns)), set(text)
    try:
        if _is_parquet(path):
            frame = pd.read_parquet(path, columns=columns)
        else:
            dtype = {c: str for c in columns if c in text}
            frame = pd.read_csv(path, usecols=columns, dtype=dtype, keep_default_na=True)
    except Exception as exc:
        raise CityError(
            f"cannot read {path} ({what}): {oneline(exc)}; pass a CSV with a header row "
            "or a Parquet file"
        ) from None
    return frame.reset_index(drop=True)


def require_columns(path: Path, available: list[str], wanted: dict[str, tuple[str, str]]) -> None:
    """CityError naming every missing column, the option that maps it and the columns present.

    Args:
        path: The input file.
        available: Its columns.
        wanted: Column name -> (what it holds, CLI option that names another column).
    """
    missing = [
        (col, meaning, opt) for col, (meaning, opt) in wanted.items() if col not in available
    ]
    if not missing:
        return
    shown = ", ".join(available[:_MAX_LISTED]) + (" ..." if len(available) > _MAX_LISTED else "")
    need = "; ".join(
        f"no column '{col}' ({meaning}; pass {opt} NAME to use another)"
        for col, meaning, opt in missing
    )
    raise CityError(f"{path}: {need}; its columns are: {shown or '(none)'}")


class RowChecks:
    """Collects bad rows of one input table: raises on the first, or drops and counts them.

    Attributes:
        bad: Rows found bad so far (only grows with ``drop_invalid``).
        reasons: Dropped rows per reason (the ``kind`` passed to :meth:`flag`).
    """

    def __init__(self, file: Path | str, n: int, drop_invalid: bool) -> None:
        self.file, self.drop_invalid = str(file), drop_invalid
        self.bad = np.zeros(n, dtype=bool)
        self.reasons: dict[str, int] = {}

    @property
    def ok(self) -> np.ndarray:
        """Rows not found bad so far."""
        return ~self.bad

    def flag(
        self,
        mask: np.ndarray,
        column: str,
        reason: Callable[[int], str],
        kind: str,
        fix: str = DROP_HINT,
    ) -> None:
        """Report the rows where ``mask`` is True: raise for the first, or drop them all."""
        new = np.asarray(mask, dtype=bool) & ~self.bad
        rows = np.flatnonzero(new)
        if not len(rows):
            return
        if not self.drop_invalid:
            r = int(rows[0])
            more = f" (and {len(rows) - 1} more rows like it)" if len(rows) > 1 else ""
            where = f"{self.file} row {r} column {column}"
            raise CityError(f"{where}: {oneline(reason(r), 300)}{more}; {fix}")
        self.bad |= new
        self.reasons[kind] = self.reasons.get(kind, 0) + len(rows)

    def fail(self, row: int, message: str, kind: str) -> None:
        """One bad row with a ready message (it names the file, row and column itself)."""
        if self.bad[row]:
            return
        if not self.drop_invalid:
            raise CityError(f"{oneline(message, 400)}; {DROP_HINT}")
        self.bad[row] = True
        self.reasons[kind] = self.reasons.get(kind, 0) + 1

    @property
    def dropped(self) -> int:
        """Number of rows dropped."""
        return int(self.bad.sum())


def check_lonlat(
    checks: RowChecks, frame: pd.DataFrame, lat: str, lon: str
) -> tuple[np.ndarray, np.ndarray]:
    """Check a latitude and a longitude column (numeric, present, in range); return them."""
    values = {}
    for col in (lat, lon):
        raw = frame[col]
        num = pd.to_numeric(raw, errors="coerce").astype(np.float64)
        null = raw.isna().to_numpy()
        not_num = num.isna().to_numpy() & ~null
        checks.flag(
            null, col, lambda r, c=col: f"missing {c}; every point needs one", f"missing {col}"
        )
        given = raw.to_numpy()
        checks.flag(
            not_num,
            col,
            lambda r, c=col, v=given: f"{c} {short_repr(v[r])} is not a number",
            f"{col} not a number",
        )
        values[col] = num.to_numpy()
    y, x = values[lat], values[lon]
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(y) & np.isfinite(x)
        bad_lat = finite & (np.abs(y) > 90)
        bad_lon = finite & (np.abs(x) > 180)
        swapped = (np.abs(y) <= 180) & (np.abs(x) <= 90)
    hint = {True: " (are lat and lon swapped? check --lat-column / --lon-column)", False: ""}
    checks.flag(
        ~finite & ~np.isnan(y) & ~np.isnan(x),
        lat,
        lambda r: f"coordinates ({y[r]}, {x[r]}) are not finite",
        "not finite",
    )
    checks.flag(
        bad_lat,
        lat,
        lambda r: f"lat {y[r]:.6g} is out of range [-90, 90]{hint[bool(swapped[r])]}",
        "lat out of range",
    )
    checks.flag(
        bad_lon,
        lon,
        lambda r: f"lon {x[r]:.6g} is out of range [-180, 180]",
        "lon out of range",
    )
    return y, x


def check_near_city(root: Path, file: Path, lat: np.ndarray, lon: np.ndarray, what: str) -> None:
    """CityError when not one point lies near the bundle's POIs (wrong city, swapped lat/lon)."""
    import geopandas as gpd

    from mfm.cities.bundle import read_manifest

    rel = read_manifest(root).get("layers", {}).get("pois")
    if not isinstance(rel, str) or not len(lat):
        return
    try:
        minx, miny, maxx, maxy = gpd.read_parquet(root / rel, columns=["geometry"]).total_bounds
    except Exception:
        return  # an unreadable pois layer is reported by validation at commit
    if not np.isfinite([minx, miny, maxx, maxy]).all():
        return
    pad_x = max(0.05, maxx - minx)  # one city extent around it, at least ~5 km
    pad_y = max(0.05, maxy - miny)
    near = (
        (lon >= minx - pad_x)
        & (lon <= maxx + pad_x)
        & (lat >= miny - pad_y)
        & (lat <= maxy + pad_y)
    )
    if near.any():
        return
    raise CityError(
        f"none of the {len(lat)} {what} in {file} lie near the city: they span lon "
        f"{lon.min():.5f}..{lon.max():.5f}, lat {lat.min():.5f}..{lat.max():.5f}, the "
        f"bundle's pois lon {minx:.5f}..{maxx:.5f}, lat {miny:.5f}..{maxy:.5f}; check the "
        "file is for this city and that --lat-column / --lon-column are not swapped"
    )


def image_problems(
    paths: list[Path], progress: Callable[[int], None] | None = None
) -> Iterator[str | None]:
    """Per path, in order: None (a readable image), ``"not found"`` or why it cannot be read.

    Images are decoded in a few threads (PIL releases the GIL while decoding).
    """

    def one(path: Path) -> str | None:
        if not path.is_file():
            return "not found"
        try:
            check_image(path)
        except CityError as exc:
            return str(exc)
        return None

    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        for result in pool.map(one, paths, chunksize=16):
            if progress is not None:
                progress(1)
            yield result


def suffixes(values: pd.Series) -> pd.Series:
    """Lower-case file extensions (``".jpg"``; ``""`` when none) of path strings."""
    ext = values.astype(str).str.extract(r"(\.[^./\\]+)$", expand=False)
    return ext.str.lower().fillna("")


_IMAGE_COLUMNS = {"svi": SVI_DIRECTIONS, "satellite": (IMAGE,)}


def _listed(root: Path, rel: object, columns: Iterable[str]) -> set[str] | None:
    """The paths a layer file lists in ``columns`` (None when it cannot be read)."""
    if not isinstance(rel, str) or not (root / rel).is_file():
        return set()
    try:
        frame = pd.read_parquet(root / rel, columns=list(columns))
    except Exception:
        return None
    return {v for v in pd.unique(frame.to_numpy(dtype=object).ravel()) if isinstance(v, str)}


def remove_layer_files(staging: Staging, layer: str) -> None:
    """Remove (from the staging copy) the image files the current ``layer`` lists.

    Used when a layer is replaced, so its old images do not linger. Only files inside the
    bundle are removed, and none that a layer, a label or another image layer refers to;
    when a layer cannot be read nothing is removed.
    """
    layers = staging.manifest.get("layers", {})
    old = _listed(staging.root, layers.get(layer), _IMAGE_COLUMNS[layer])
    if not old:
        return
    keep = {str(v) for v in layers.values()}
    keep |= {str(s.get("path")) for s in staging.manifest.get("labels", {}).values()}
    for other, columns in _IMAGE_COLUMNS.items():
        if other != layer and other in layers:
            used = _listed(staging.root, layers[other], columns)
            if used is None:
                return
            keep |= used
    root = staging.root.resolve()
    for name in sorted(old - keep):
        path = (staging.root / name).resolve()
        if path.is_relative_to(root) and path != root and path.is_file():
            path.unlink()
