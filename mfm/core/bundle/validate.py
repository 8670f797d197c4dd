"""Validation of a City bundle (docs/bundle.md): every problem, with file, row and column.

:func:`validate_city` lists every problem found; :class:`~mfm.core.bundle.city.City` loads a
bundle only after it passes, so nothing downstream reads an unchecked layer.

Besides types and columns it rejects input that parses but is wrong:

- coordinates outside the area of use of the bundle ``crs`` (with AREA_MARGIN_DEG), or far
  from the rest of the city (beyond max(FAR_KM, FAR_SPREAD x the median distance of the POIs
  from their median point)); when swapping x and y would fix it, the message says that
  latitude and longitude look swapped;
- image files that do not decode (checked cheaply: PNG chunk CRCs, JPEG end marker, and a
  full decode only for anything else or anything suspicious);
- degenerate layers: no trajectory with two points, only zero-area regions, only
  zero-length roads, every POI at one point.
"""

from __future__ import annotations

import functools
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mfm.core.bundle.problems import Problem, ProblemReport
from mfm.core.bundle.rules import (
    _LABEL_KEYS,
    _MANIFEST_KEYS,
    _POLYGON,
    IMAGE,
    LAYER_RULES,
    TIME,
    LabelSpec,
)
from mfm.core.constants import (
    CITY_MANIFEST,
    FOOTPRINT,
    GEOMETRY,
    KIND_TARGET,
    LAYERS,
    LEVEL_ID,
    LEVEL_LAYER,
    OD_COLUMNS,
    REGION_ID,
    SVI_DIRECTIONS,
    TAGS,
    TRAJ_ID,
    WGS84,
)
from mfm.core.errors import CityError, oneline, short_repr

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = ["LabelSpec", "Problem", "check_image", "validate_city"]

AREA_MARGIN_DEG = 2.0
"""Degrees a layer may reach past its crs's area of use. A UTM zone is still accurate to
about 0.2 % 3 degrees past its edge, and a city near the equator may use the northern zone;
a swapped or wrong CRS is off by far more (Berlin swapped: 34 degrees)."""

FAR_KM = 50.0
"""A point closer than this to the city's median point is never "far" (a city's airport,
outlying suburbs and tiny bundles with all POIs in one block stay valid)."""

FAR_SPREAD = 10.0
"""A point is far when beyond FAR_SPREAD x the median distance of the POIs (or, when larger,
of its own layer) from the POIs' median point, and beyond FAR_KM. Berlin's POIs have a median
distance of 5.7 km, so the limit there is 57 km (its farthest POI: 26 km); a typo'd sign, a
(0, 0) or a swapped row is hundreds to thousands of km out. A trajectory point is far only
when its trip never comes within the limit, or it is a lone jump out and back (a GPS
glitch), so a trip out of town stays valid."""

_EARTH_KM = 6371.0088


def check_image(path: Path | str) -> None:
    """Raise CityError when ``path`` is not a readable image (PNG/JPEG/GeoTIFF)."""
    path = Path(path)
    reason = _decode_error(path)
    if reason is not None:
        raise CityError(f"cannot read image {path}: {reason}; re-export it as PNG/JPEG")


def _decode_error(path: Path) -> str | None:
    """Why ``path`` does not decode fully (None when it does)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()  # decode fully: catches truncated files that verify() lets through
        return None
    except Exception as exc:
        reason = exc
    if path.suffix.lower() in (".tif", ".tiff"):
        try:
            import tifffile

            tifffile.imread(path)
            return None
        except ImportError:
            pass
        except Exception as exc:
            reason = exc
    text = oneline(str(reason).replace(f" {str(path)!r}", ""))  # the caller names the file
    return text or type(reason).__name__


def _image_error(path: Path) -> str | None:
    """Why an image does not decode, cheaply: about 0.05 ms for a PNG or JPEG that is fine.

    PNG: every chunk's CRC up to IEND (verify(), no inflating); JPEG: the header parses and
    the file ends with the EOI marker. Anything else, or failing that, is decoded fully
    (so a JPEG with data after EOI, e.g. a motion photo, is decoded and passes).
    """
    from PIL import Image

    try:
        with open(path, "rb") as fh, Image.open(fh) as im:
            if im.format == "PNG":
                im.verify()
                return None
            if im.format == "JPEG":
                fh.seek(-2, os.SEEK_END)
                if fh.read(2) == b"\xff\xd9":
                    return None
    except Exception:
        pass  # confirmed (or not) by the full decode
    return _decode_error(path)


def _missing_files(root: Path, paths: pd.Series) -> np.ndarray:
    """Which bundle-relative paths name no file: one listing per distinct parent directory."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.array(paths.astype(str).to_numpy(dtype=object), type=pa.string())
    split = pc.split_pattern(arr, "/", max_splits=1, reverse=True)
    has_dir = pc.equal(pc.list_value_length(split), 2)
    parents = pc.if_else(
        has_dir, pc.binary_join_element_wise(pc.list_element(split, 0), "", "/"), ""
    )
    existing: list[str] = []
    for parent in pc.unique(parents).to_pylist():  # "img/sat/", or "" for the bundle root
        try:
            with os.scandir(root / parent) as it:
                existing.extend(parent + e.name for e in it if e.is_file())
        except OSError:
            continue
    found = pc.is_in(arr, value_set=pa.array(existing, type=pa.string()))
    return ~found.to_numpy(zero_copy_only=False).astype(bool)


# --------------------------------------------------------------------------- checks


@functools.lru_cache(maxsize=64)
def _is_wgs84(crs: Any) -> bool:
    """Whether a layer CRS is EPSG:4326 (either axis order, so OGC:CRS84 too); None counts."""
    if crs is None:
        return True
    from pyproj import CRS

    return CRS.from_user_input(crs).equals(parse_crs(json.dumps(WGS84)), ignore_axis_order=True)


def _check_ids(rep: ProblemReport, file: str, column: str, s: pd.Series, unique: bool) -> pd.Series:
    """Check an id column; return it as strings (None where null or unusable)."""
    s = s.reset_index(drop=True)
    null = s.isna().to_numpy()
    rep.rows(file, column, null, lambda r: f"missing {column}; every row needs an id", "no id")
    if pd.api.types.is_bool_dtype(s):
        bad, text = ~null, s.astype(str)
    elif pd.api.types.is_integer_dtype(s):
        bad, text = np.zeros(len(s), dtype=bool), s.astype(str)
    elif pd.api.types.is_float_dtype(s):
        values = s.fillna(0).to_numpy()
        bad = ~null & (np.mod(values, 1) != 0)
        text = pd.Series(np.where(bad, 0, values).astype(np.int64)).astype(str)
    else:
        ok = s.map(lambda v: isinstance(v, (str, int, np.integer)) and not isinstance(v, bool))
        bad, text = ~null & ~ok.to_numpy(dtype=bool), s.astype(str)
    values_ = s.to_numpy()
    rep.rows(
        file,
        column,
        bad,
        lambda r: (
            f"{column} {short_repr(values_[r])} is not a string; ids must be strings (or integers)"
        ),
        "ids must be strings",
    )
    ids = text.astype(object).where(~bad & ~null, None)
    if unique:
        valid = ids.notna().to_numpy()
        dup = ids.duplicated(keep="first").to_numpy() & valid
        if dup.any():
            firsts = ids[valid & ~dup]
            first_row = pd.Series(firsts.index, index=firsts.to_numpy())
            rep.rows(
                file,
                column,
                dup,
                lambda r: (
                    f"duplicate {column} '{ids[r]}' (first at row {first_row[ids[r]]}); "
                    "ids must be unique"
                ),
                f"duplicate {column}",
            )
    return ids


def _check_geometry(
    rep: ProblemReport, file: str, layer: str, gs: Any, column: str, allowed: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Check a geometry column: type, CRS, nulls, coordinate ranges.

    Returns:
        (bounds [N, 4], good [N]: rows with a finite, in-range geometry of an allowed type),
        or None when the column is not usable at all.
    """
    import geopandas as gpd
    import shapely

    optional = column == FOOTPRINT
    if not isinstance(gs, gpd.GeoSeries):
        rep.add(
            file,
            f"column {column} is not a geometry column; write the layer with "
            "GeoDataFrame.to_parquet() so it is stored as GeoParquet geometry",
            column=column,
        )
        return None
    if not _is_wgs84(gs.crs):
        rep.add(
            file,
            f"CRS is {gs.crs.to_string()}; layers must be EPSG:4326: reproject with "
            "gdf.to_crs('EPSG:4326') before writing",
            column=column,
        )
        return None
    arr = gs.to_numpy()
    null = shapely.is_missing(arr) | shapely.is_empty(arr)
    want = " or ".join(allowed)
    if not optional:
        rep.rows(
            file,
            column,
            null,
            lambda r: f"missing or empty geometry; every {layer} row needs a {want}",
            "missing geometry",
        )
    types = gs.geom_type.to_numpy()
    bad_type = ~null & ~np.isin(types, allowed)
    rep.rows(
        file,
        column,
        bad_type,
        lambda r: f"geometry is a {types[r]}; {layer} {column} must be {want}",
        f"{layer} {column} must be {want}",
    )
    ok = ~null & ~bad_type
    with np.errstate(invalid="ignore"):
        b = shapely.bounds(arr)
        finite = np.isfinite(b).all(axis=1)
        minx, miny, maxx, maxy = b.T
        out = ok & finite & ((minx < -180) | (maxx > 180) | (miny < -90) | (maxy > 90))
        swap = (miny >= -180) & (maxy <= 180) & (minx >= -90) & (maxx <= 90)
    rep.rows(
        file,
        column,
        ok & ~finite,
        lambda r: "coordinates are NaN or infinite; every geometry needs finite (lon, lat)",
        "non-finite coordinates",
    )
    rep.rows(
        file,
        column,
        out & swap,
        lambda r: (
            f"coordinates (x={minx[r]:.6g}, y={miny[r]:.6g}) out of range; "
            "lat/lon look swapped: write geometry as (lon, lat)"
        ),
        "lat/lon look swapped: write geometry as (lon, lat)",
    )
    rep.rows(
        file,
        column,
        out & ~swap,
        lambda r: (
            f"coordinates (x={minx[r]:.6g}, y={miny[r]:.6g}) out of range: lon must be "
            "in [-180, 180] and lat in [-90, 90]; reproject the layer to EPSG:4326"
        ),
        "coordinates out of range",
    )
    return b, ok & finite & ~out


def _parse_json_objects(
    rep: ProblemReport, file: str, column: str, s: pd.Series
) -> list[dict[str, str]] | None:
    """Parse a column of JSON object strings; report each bad row (capped)."""
    parsed: list[dict[str, str]] = []
    bad = np.zeros(len(s), dtype=bool)
    for i, v in enumerate(s.to_numpy()):
        obj = None
        if isinstance(v, str):
            try:
                obj = json.loads(v)
            except ValueError:
                obj = None
        if isinstance(obj, dict):
            parsed.append(
                {str(k): x if isinstance(x, str) else json.dumps(x) for k, x in obj.items()}
            )
        else:
            bad[i] = True
            parsed.append({})
    values = s.to_numpy()
    rep.rows(
        file,
        column,
        bad,
        lambda r: (
            f'{column} must be a JSON object string like \'{{"amenity": "cafe"}}\' '
            f"(use '{{}}' for none); got {short_repr(values[r])}"
        ),
        f"{column} must be a JSON object string",
    )
    return None if bad.any() else parsed


# --------------------------------------------------------------------------- reading


@functools.lru_cache(maxsize=64)
def parse_crs(text: str) -> Any:
    from pyproj import CRS

    return CRS.from_user_input(json.loads(text))


def _read_geoparquet(path: Path, geo: dict[str, Any]) -> gpd.GeoDataFrame:
    """Read GeoParquet; WKB columns are decoded here so each distinct CRS is parsed once."""
    import geopandas as gpd
    import pyarrow.parquet as pq
    from geopandas.array import GeometryDtype, from_wkb

    columns: dict[str, Any] = geo.get("columns", {})
    if any(str(c.get("encoding", "WKB")).upper() != "WKB" for c in columns.values()):
        frame = gpd.read_parquet(path)  # GeoArrow encodings: let geopandas decode them
    else:
        frame = pq.read_table(path).to_pandas()
        for col, info in columns.items():
            if col in frame.columns:
                # GeoParquet: a missing "crs" key means OGC:CRS84, an explicit null means unknown
                crs = info.get("crs", "OGC:CRS84")
                crs = None if crs is None else parse_crs(json.dumps(crs, sort_keys=True))
                with np.errstate(invalid="ignore"):  # NaN coordinates: reported later
                    frame[col] = from_wkb(frame[col].to_numpy(), crs=crs)
    is_geom = GEOMETRY in frame.columns and isinstance(frame[GEOMETRY].dtype, GeometryDtype)
    return gpd.GeoDataFrame(frame, geometry=GEOMETRY if is_geom else None)


def _read_layer(rep: ProblemReport, root: Path, file: str, layer: str) -> pd.DataFrame | None:
    import pyarrow.parquet as pq

    path = root / file
    try:
        if LAYER_RULES[layer].geom is None and path.suffix.lower() == ".csv":
            return pd.read_csv(path, dtype={c: str for c in OD_COLUMNS[:2]}).reset_index(drop=True)
        meta = pq.read_schema(path).metadata or {}
        if LAYER_RULES[layer].geom is None:
            frame = pd.read_parquet(path)
        elif b"geo" not in meta:
            rep.add(
                file,
                f"not GeoParquet (no 'geo' metadata); layer {layer} needs geometry: write it "
                "with GeoDataFrame.to_parquet()",
            )
            return None
        else:
            frame = _read_geoparquet(path, json.loads(meta[b"geo"]))
    except Exception as exc:
        rep.add(
            file,
            f"cannot read as (Geo)Parquet: {oneline(exc)}; re-write it with "
            "GeoDataFrame.to_parquet()",
        )
        return None
    return frame.reset_index(drop=True)


@dataclass
class ParsedBundle:
    """What validation read, handed to City.load so nothing is read twice."""

    name: str = ""
    crs: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    labels: dict[str, LabelSpec] = field(default_factory=dict)
    label_files: dict[str, str] = field(default_factory=dict)
    tags: list[dict[str, str]] | None = None
    extents: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    """Layer -> (geometry bounds [N, 4], rows usable for the spatial checks)."""


def _check_layer(
    rep: ProblemReport, root: Path, file: str, layer: str, parsed: ParsedBundle
) -> None:
    frame = _read_layer(rep, root, file, layer)
    if frame is None:
        return
    rule = LAYER_RULES[layer]
    missing = [c for c in rule.columns if c not in frame.columns]
    for col in missing:
        need = ", ".join(rule.columns)
        rep.add(file, f"missing column '{col}' in layer {layer}; {layer} needs {need}", column=col)
    if len(frame) == 0:
        what = "pois are required" if layer == "pois" else f"remove layers.{layer} or fill it"
        rep.add(file, f"{file} has no rows; {what}")
        return
    if rule.id in frame.columns:
        frame[rule.id] = _check_ids(rep, file, rule.id, frame[rule.id], rule.unique_ids)
    if rule.geom is not None and GEOMETRY in frame.columns:
        checked = _check_geometry(rep, file, layer, frame[GEOMETRY], GEOMETRY, rule.geom)
        if checked is not None:
            parsed.extents[layer] = checked
            _check_degenerate(rep, file, layer, frame, checked[1])
    if layer == "pois" and FOOTPRINT in frame.columns:
        _check_geometry(rep, file, layer, frame[FOOTPRINT], FOOTPRINT, _POLYGON)
    if TAGS in rule.columns and TAGS in frame.columns:
        tags = _parse_json_objects(rep, file, TAGS, frame[TAGS])
        if layer == "pois":
            parsed.tags = tags
    if layer == "svi":
        _check_images(rep, root, file, frame, SVI_DIRECTIONS)
    if layer == "satellite":
        _check_images(rep, root, file, frame, (IMAGE,))
    if layer == "trajectories" and TIME in frame.columns and TRAJ_ID in frame.columns:
        _check_time(rep, file, frame)
    parsed.frames[layer] = frame


def _check_images(
    rep: ProblemReport, root: Path, file: str, frame: pd.DataFrame, columns: tuple[str, ...]
) -> None:
    """Check image path columns: non-empty strings naming existing files that decode."""
    columns = tuple(c for c in columns if c in frame.columns)
    if not columns or len(frame) == 0:
        return
    n = len(frame)
    flat = pd.Series(frame[list(columns)].to_numpy(dtype=object).ravel(order="F"))
    is_str = flat.map(lambda v: isinstance(v, str) and v != "").to_numpy(dtype=bool)
    gone = np.zeros(len(flat), dtype=bool)
    gone[is_str] = _missing_files(root, flat[is_str])
    present = flat[is_str & ~gone]
    errors = {rel: _image_error(root / rel) for rel in present.unique()}
    why = present.map(errors)
    broken = np.zeros(len(flat), dtype=bool)
    broken[why.index[why.notna().to_numpy()]] = True
    for k, col in enumerate(columns):
        values = flat.to_numpy()[k * n : (k + 1) * n]
        rep.rows(
            file,
            col,
            ~is_str[k * n : (k + 1) * n],
            lambda r, v=values: (
                f"image path is {short_repr(v[r])}; write a path relative to the bundle"
            ),
            "missing image paths",
        )
        rep.rows(
            file,
            col,
            gone[k * n : (k + 1) * n],
            lambda r, v=values: f"image file '{v[r]}' not found (paths are relative to the bundle)",
            "image files not found",
        )
        rep.rows(
            file,
            col,
            broken[k * n : (k + 1) * n],
            lambda r, v=values: (
                f"image file '{v[r]}' does not decode ({errors[v[r]]}); re-export it as "
                "PNG/JPEG or drop the row"
            ),
            "image files that do not decode",
        )


def _check_degenerate(
    rep: ProblemReport, file: str, layer: str, frame: pd.DataFrame, good: np.ndarray
) -> None:
    """One line for a layer that parses but cannot be used: nothing to learn from."""
    import shapely

    n = int(good.sum())
    if n == 0:
        return
    geoms = frame[GEOMETRY].to_numpy()[good]
    if layer == "trajectories" and TRAJ_ID in frame.columns:
        ids = frame[TRAJ_ID][good].dropna()
        if len(ids) and ids.value_counts().max() < 2:
            rep.add(
                file,
                f"no trajectory has two points (all {len(ids)} points have distinct "
                "traj_id); give the points of one trip the same traj_id",
                column=TRAJ_ID,
            )
    elif layer == "regions" and (shapely.area(geoms) <= 0).all():
        rep.add(
            file,
            f"all {n} regions have zero area; regions must be polygons that enclose an area "
            "(check the ring coordinates)",
            column=GEOMETRY,
        )
    elif layer == "roads" and (shapely.length(geoms) <= 0).all():
        rep.add(
            file,
            f"all {n} roads have zero length; roads must be lines between distinct points",
            column=GEOMETRY,
        )
    elif layer == "pois" and n > 1:
        xy = shapely.get_coordinates(shapely.centroid(geoms))
        if (xy == xy[0]).all():
            rep.add(
                file,
                f"all {n} POIs are at the same point (lon={xy[0, 0]:.6g}, lat={xy[0, 1]:.6g}); "
                "geocoding failed? write each POI's own (lon, lat)",
                column=GEOMETRY,
            )


def _check_time(rep: ProblemReport, file: str, frame: pd.DataFrame) -> None:
    t = frame[TIME]
    if not (pd.api.types.is_datetime64_any_dtype(t) or pd.api.types.is_integer_dtype(t)):
        rep.add(
            file,
            f"column t has type {t.dtype}; t must be a timestamp or an integer sequence",
            column=TIME,
        )
        return
    null = t.isna().to_numpy()
    rep.rows(file, TIME, null, lambda r: "missing t; every point needs a time", "missing t")
    dup = frame.duplicated([TRAJ_ID, TIME], keep="first").to_numpy() & ~null
    ids, ts = frame[TRAJ_ID].to_numpy(), t.to_numpy()
    rep.rows(
        file,
        TIME,
        dup,
        lambda r: (
            f"duplicate (traj_id, t) = ('{ids[r]}', {ts[r]}); each point of a "
            "trajectory needs its own t"
        ),
        "duplicate (traj_id, t)",
    )


# --------------------------------------------------------------------------- extent

_SWAPPED = "latitude and longitude look swapped: write geometry as (lon, lat)"


def _km(lon: np.ndarray, lat: np.ndarray, lon0: Any, lat0: Any) -> np.ndarray:
    """Great-circle distance in km from (lon0, lat0) (scalars or arrays), by haversine."""
    la, la0 = np.radians(lat), np.radians(lat0)
    h = (
        np.sin((la - la0) / 2) ** 2
        + np.cos(la) * np.cos(la0) * np.sin(np.radians(lon - lon0) / 2) ** 2
    )
    return 2 * _EARTH_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def _swapped_km(lon: np.ndarray, lat: np.ndarray, lon0: float, lat0: float) -> np.ndarray:
    """Distance from (lon0, lat0) with x and y swapped; inf where x is no latitude."""
    d = np.full(len(lon), np.inf)
    can = np.abs(lon) <= 90
    d[can] = _km(lat[can], lon[can], lon0, lat0)
    return d


def _median_point(lon: np.ndarray, lat: np.ndarray) -> tuple[float, float]:
    """Coordinate-wise median; longitudes taken in [0, 360) when tighter (antimeridian)."""

    def iqr(x: np.ndarray) -> float:
        q75, q25 = np.percentile(x, [75, 25])
        return float(q75 - q25)

    east = np.mod(lon, 360.0)
    lon0 = float(np.median(east)) if iqr(east) < iqr(lon) else float(np.median(lon))
    return (lon0 + 180.0) % 360.0 - 180.0, float(np.median(lat))


def _in_area(b: np.ndarray, area: Any, margin: float) -> np.ndarray:
    """Whether bounds [N, 4] lie in a pyproj AreaOfUse widened by ``margin`` degrees."""
    w, s, e, n = area.west - margin, area.south - margin, area.east + margin, area.north + margin

    def lon_ok(x: np.ndarray) -> np.ndarray:
        if area.west <= area.east:
            return (x >= w) & (x <= e)
        return (x >= w) | (x <= e)  # the area crosses the antimeridian

    with np.errstate(invalid="ignore"):
        return lon_ok(b[:, 0]) & lon_ok(b[:, 2]) & (b[:, 1] >= s) & (b[:, 3] <= n)


def _check_area_of_use(rep: ProblemReport, parsed: ParsedBundle) -> None:
    """Rows outside the area of use of the bundle crs (rows reported are then left out)."""
    from pyproj import CRS

    if parsed.crs is None:
        return
    try:
        area = CRS.from_user_input(parsed.crs).area_of_use
    except Exception:
        return
    if area is None:
        return
    where = (
        f"the area of use of crs {parsed.crs} (lon {area.west:g}..{area.east:g}, "
        f"lat {area.south:g}..{area.north:g})"
    )
    for layer, (b, good) in parsed.extents.items():
        bad = good & ~_in_area(b, area, AREA_MARGIN_DEG)
        if not bad.any():
            continue
        swapped = _in_area(b[:, [1, 0, 3, 2]], area, AREA_MARGIN_DEG)
        x, y = _centres(b)
        file = parsed.files[layer]
        rep.rows(
            file,
            GEOMETRY,
            bad & swapped,
            lambda r, x=x, y=y: f"(lon={x[r]:.6g}, lat={y[r]:.6g}) is outside {where}; {_SWAPPED}",
            _SWAPPED,
        )
        rep.rows(
            file,
            GEOMETRY,
            bad & ~swapped,
            lambda r, x=x, y=y: (
                f"(lon={x[r]:.6g}, lat={y[r]:.6g}) is outside {where}; fix the coordinates, "
                "or the crs in city.toml (drop it to use the POIs' UTM zone)"
            ),
            f"outside {where}",
        )
        parsed.extents[layer] = (b, good & ~bad)


def _on_a_trip(
    frame: pd.DataFrame, good: np.ndarray, xy: np.ndarray, d: np.ndarray, limit: float
) -> np.ndarray:
    """Trajectory points explained by a trip from the city: their trajectory comes within
    ``limit`` km of it and they are no lone jump (> limit km to the points before and after)."""
    rows = np.flatnonzero(good & frame[TRAJ_ID].notna().to_numpy())
    out = np.zeros(len(frame), dtype=bool)
    if len(rows) == 0:
        return out
    part = pd.DataFrame({"id": frame[TRAJ_ID].to_numpy()[rows], "row": rows})
    t = frame[TIME] if TIME in frame.columns else None
    if t is not None and (
        pd.api.types.is_datetime64_any_dtype(t) or pd.api.types.is_integer_dtype(t)
    ):
        part["t"] = t.to_numpy()[rows]
        part = part.sort_values(["id", "t"], kind="stable")
    else:
        part = part.sort_values("id", kind="stable")
    r, ids = part["row"].to_numpy(), part["id"].to_numpy()
    x, y = xy[r, 0], xy[r, 1]
    step = np.where(ids[1:] == ids[:-1], _km(x[1:], y[1:], x[:-1], y[:-1]), np.inf)
    before, after = np.r_[np.inf, step], np.r_[step, np.inf]
    lone = (before > limit) & (after > limit)
    near = pd.Series(d[r] <= limit).groupby(ids).transform("any").to_numpy()
    out[r] = near & ~lone
    return out


def _centres(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lon, lat) of the centre of each bounds row [N, 4]."""
    with np.errstate(invalid="ignore"):
        return (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2


def _pois_astray(rep: ProblemReport, parsed: ParsedBundle, limit: float) -> bool:
    """Report the POIs when two or more other layers agree with each other but not with them."""
    meds = {}
    for layer, (b, good) in parsed.extents.items():
        if good.any():
            meds[layer] = _median_point(*(c[good] for c in _centres(b)))
    lon0, lat0 = meds.pop("pois")
    away = [k for k, (x, y) in meds.items() if _km(x, y, lon0, lat0) > limit]
    if len(away) < 2 or 2 * len(away) <= len(meds):
        return False
    ax, ay = np.array([meds[k][0] for k in away]), np.array([meds[k][1] for k in away])
    if (_km(ax, ay, ax[0], ay[0]) > limit).any():
        return False  # the other layers disagree among themselves too
    d = float(_km(ax[:1], ay[:1], lon0, lat0)[0])
    swapped = _swapped_km(np.array([lon0]), np.array([lat0]), ax[0], ay[0])[0] <= limit
    hint = _SWAPPED if swapped else "check that all layers are of one city, in (lon, lat)"
    others = ", ".join(parsed.files[k] for k in away)
    rep.add(
        parsed.files["pois"],
        f"the POIs lie {d:.0f} km from the other layers ({others}); {hint}",
        column=GEOMETRY,
    )
    return True


def _check_far(rep: ProblemReport, parsed: ParsedBundle) -> None:
    """Rows far from the rest of the city, and layers far from the POIs."""
    if "pois" not in parsed.extents or not parsed.extents["pois"][1].any():
        return
    b, good = parsed.extents["pois"]
    pois_file = parsed.files["pois"]
    px, py = (c[good] for c in _centres(b))
    lon0, lat0 = _median_point(px, py)
    limit = max(FAR_KM, FAR_SPREAD * float(np.median(_km(px, py, lon0, lat0))))
    if _pois_astray(rep, parsed, limit):
        return
    centre = f"the city's median point (lon={lon0:.6g}, lat={lat0:.6g})"
    for layer, (b, good) in parsed.extents.items():
        if not good.any():
            continue
        file = parsed.files[layer]
        x, y = _centres(b)
        with np.errstate(invalid="ignore"):
            d, ds = _km(x, y, lon0, lat0), _swapped_km(x, y, lon0, lat0)
        lim = limit
        if layer != "pois":
            own = float(np.median(d[good]))
            if layer == "trajectories":  # trips may leave town: far only if none comes near
                own = float(np.min(d[good]))
            if own > limit:
                hint = (
                    _SWAPPED
                    if np.median(ds[good]) <= limit
                    else f"check that {file} and {pois_file} are of one city, in (lon, lat)"
                )
                what = f"at least {own:.0f} km" if layer == "trajectories" else f"{own:.0f} km"
                rep.add(
                    file,
                    f"layer {layer} lies {what} from the POIs of {pois_file} (limit {lim:.0f} km"
                    f"{'' if layer == 'trajectories' else ', median distance'}); {hint}",
                    column=GEOMETRY,
                )
                continue
            if layer != "trajectories":
                lim = max(limit, FAR_SPREAD * own)
        with np.errstate(invalid="ignore"):
            far = good & (d > lim)
        if layer == "trajectories" and far.any():
            far &= ~_on_a_trip(parsed.frames[layer], good, np.c_[x, y], d, lim)
        if not far.any():
            continue
        swapped = ds <= lim
        rep.rows(
            file,
            GEOMETRY,
            far & swapped,
            lambda r, x=x, y=y, d=d: (
                f"(lon={x[r]:.6g}, lat={y[r]:.6g}) is {d[r]:.0f} km from {centre}; {_SWAPPED}"
            ),
            _SWAPPED,
        )
        rep.rows(
            file,
            GEOMETRY,
            far & ~swapped,
            lambda r, x=x, y=y, d=d, lim=lim: (
                f"(lon={x[r]:.6g}, lat={y[r]:.6g}) is {d[r]:.0f} km from {centre}, beyond "
                f"{lim:.0f} km; fix its coordinates or drop the row"
            ),
            f"far from the rest of the city (> {lim:.0f} km)",
        )


def _check_extent(rep: ProblemReport, parsed: ParsedBundle) -> None:
    """Coordinates that are valid numbers but in the wrong place."""
    _check_area_of_use(rep, parsed)
    _check_far(rep, parsed)


def _check_od(rep: ProblemReport, file: str, parsed: ParsedBundle) -> None:
    """Origins and destinations must be region ids; counts positive numbers."""
    od, regions = parsed.frames["od"], parsed.frames.get("regions")
    if regions is None:
        rep.add(file, "layer od names regions, but city.toml lists no regions; add them")
        return
    known = regions[REGION_ID].astype(str) if REGION_ID in regions else pd.Series([], dtype=str)
    for col in OD_COLUMNS[:2]:
        if col not in od:
            continue
        ids = od[col].astype(str).to_numpy()
        rep.rows(
            file,
            col,
            ~od[col].astype(str).isin(known).to_numpy(),
            lambda r, ids=ids, col=col: (
                f"{col} '{ids[r]}' is not a region_id of {parsed.files['regions']}"
            ),
            f"{col} not a region_id",
        )
    if "count" in od:
        count = pd.to_numeric(od["count"], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(count) | (count <= 0)
        shown = od["count"].astype(str).to_numpy()
        rep.rows(
            file,
            "count",
            bad,
            lambda r: f"count {shown[r]} is not a positive number; drop the row",
            "count not a positive number",
        )


def _check_satellite_regions(rep: ProblemReport, file: str, parsed: ParsedBundle) -> None:
    sat, regions = parsed.frames.get("satellite"), parsed.frames.get("regions")
    if sat is None or regions is None or REGION_ID not in regions or REGION_ID not in sat:
        return
    ids = sat[REGION_ID].to_numpy()
    unknown = ~sat[REGION_ID].isin(regions[REGION_ID]).to_numpy()
    where = parsed.files["regions"]
    rep.rows(
        file,
        REGION_ID,
        unknown,
        lambda r: f"region_id '{ids[r]}' is not in {where}; satellite rows must name a region",
        f"region_id not in {where}",
    )


def label_frame(
    rep: ProblemReport, file: str, spec: LabelSpec, known: pd.Series | None, layer_file: str
) -> pd.DataFrame | None:
    """Read and check one labels CSV; return columns id (str) and value/label."""
    id_col, target = LEVEL_ID[spec.level], KIND_TARGET[spec.kind]
    if not spec.path.is_file():
        rep.add(file, f"label file not found; fix labels.{spec.name}.path in city.toml")
        return None
    try:
        df = pd.read_csv(spec.path, dtype={id_col: str}, keep_default_na=True)
    except Exception as exc:
        rep.add(file, f"cannot read as CSV: {oneline(exc)}; write a CSV with a header row")
        return None
    n_before = len(rep.problems)
    for col in (id_col, target):
        if col not in df.columns:
            rep.add(
                file,
                f"missing column '{col}' (labels.{spec.name} has level = '{spec.level}', "
                f"kind = '{spec.kind}'); the CSV needs columns {id_col},{target}",
                column=col,
            )
    if n_before != len(rep.problems):
        return None
    ids = _check_ids(rep, file, id_col, df[id_col], unique=True)
    raw = df[target].to_numpy()
    if spec.kind == "regression":
        values = pd.to_numeric(df[target], errors="coerce")
        bad = values.isna().to_numpy() | ~np.isfinite(values.to_numpy(dtype=float))
        rep.rows(
            file,
            target,
            bad,
            lambda r: (
                f"value {short_repr(raw[r])} is not a finite number; regression labels "
                "need numeric values"
            ),
            "non-numeric values",
        )
    else:
        values = df[target]
        rep.rows(
            file,
            target,
            values.isna().to_numpy(),
            lambda r: "missing label; drop the row or give it a class",
            "missing labels",
        )
    if known is not None:
        unknown = ids.notna() & ~ids.isin(known)
        if unknown.any():
            examples = ", ".join(f"'{v}'" for v in ids[unknown].head(3))
            rep.add(
                file,
                f"{int(unknown.sum())} of {len(ids)} {id_col} values are not in {layer_file} "
                f"(e.g. {examples}); labels must refer to existing ids",
                column=id_col,
            )
    if n_before != len(rep.problems):
        return None
    return pd.DataFrame({"id": ids.astype(str), target: values.to_numpy()})


def _check_manifest(
    rep: ProblemReport, root: Path, manifest: dict[str, Any], parsed: ParsedBundle
) -> None:
    m = CITY_MANIFEST
    for key in manifest:
        if key not in _MANIFEST_KEYS:
            rep.add(m, f"unknown key '{key}'; allowed: {', '.join(_MANIFEST_KEYS)}", column=key)
    name = manifest.get("name", root.name)
    if not isinstance(name, str) or not name:
        rep.add(m, "name must be a non-empty string", column="name")
    parsed.name = str(name)
    crs = manifest.get("crs")
    if crs is not None and not isinstance(crs, str):
        rep.add(m, f'crs must be a string like "EPSG:3067", not {short_repr(crs)}', column="crs")
    elif crs is not None:
        parsed.crs = _check_crs(rep, crs)
    layers = manifest.get("layers")
    if not isinstance(layers, dict):
        rep.add(m, 'missing [layers] table; add [layers] with pois = "pois.parquet"')
        layers = {}
    elif "pois" not in layers and "regions" not in layers:
        rep.add(
            m,
            '[layers] has neither pois nor regions; add one (pois = "pois.parquet")',
            column="layers",
        )
    for layer, rel in layers.items():
        key = f"layers.{layer}"
        if layer not in LAYERS:
            rep.add(m, f"unknown layer '{layer}'; layers are {', '.join(LAYERS)}", column=key)
        elif not isinstance(rel, str) or not rel:
            rep.add(m, f"{key} must be a path relative to the bundle", column=key)
        elif not (root / rel).is_file():
            rep.add(rel, f"file not found (listed as {key} in city.toml); fix the path or drop it")
        else:
            parsed.files[layer] = rel
    labels = manifest.get("labels", {})
    if not isinstance(labels, dict):
        rep.add(m, "labels must be tables [labels.<name>] with path, level, kind", column="labels")
        labels = {}
    for name, spec in labels.items():
        _check_label_spec(rep, root, str(name), spec, parsed)


def _check_crs(rep: ProblemReport, crs: str) -> str | None:
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        parsed = CRS.from_user_input(crs)
    except CRSError as exc:
        rep.add(CITY_MANIFEST, f"crs {short_repr(crs)} is not a CRS ({oneline(exc)})", column="crs")
        return None
    units = {a.unit_name for a in parsed.axis_info}
    if not parsed.is_projected or not units <= {"metre", "meter"}:
        rep.add(
            CITY_MANIFEST,
            f"crs {crs!r} is not a metric projected CRS; use one in metres (e.g. a UTM zone) "
            "or drop crs to have the UTM zone guessed",
            column="crs",
        )
        return None
    return crs


def _check_label_spec(
    rep: ProblemReport, root: Path, name: str, spec: Any, parsed: ParsedBundle
) -> None:
    m, key = CITY_MANIFEST, f"labels.{name}"
    if not isinstance(spec, dict):
        rep.add(m, f"{key} must be a table with path, level, kind", column=key)
        return
    ok = True
    for k in spec:
        if k not in _LABEL_KEYS:
            rep.add(m, f"unknown key '{k}'; allowed: {', '.join(_LABEL_KEYS)}", column=f"{key}.{k}")
            ok = False
    choices = {"level": tuple(LEVEL_ID), "kind": tuple(KIND_TARGET)}
    for k, allowed in choices.items():
        if spec.get(k) not in allowed:
            got = "missing" if k not in spec else f"{short_repr(spec[k])}"
            rep.add(m, f"{k} is {got}; use one of {' | '.join(allowed)}", column=f"{key}.{k}")
            ok = False
    rel = spec.get("path")
    if not isinstance(rel, str) or not rel:
        rep.add(m, "path must be a CSV path relative to the bundle", column=f"{key}.path")
        ok = False
    unit = spec.get("unit", "")
    if not isinstance(unit, str):
        got = short_repr(unit)
        rep.add(m, f'unit is {got}; use a string, e.g. unit = "people"', column=f"{key}.unit")
        ok = False
    if ok:
        parsed.labels[name] = LabelSpec(name, root / rel, spec["level"], spec["kind"], unit)
        parsed.label_files[name] = rel


def read_city_toml(root: Path | str) -> dict[str, Any]:
    """Parse ``root/city.toml``, the one place it is parsed; CityError (one line) when it is
    missing or not TOML."""
    path = Path(root) / CITY_MANIFEST
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CityError(
            f"{path} not found; pass a City bundle directory (make one with `mfm city from-osm` "
            "or `mfm city synth`)"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        raise CityError(f"{path} is not valid TOML ({oneline(exc)}); fix the syntax") from exc


def check_bundle(root: Path | str) -> tuple[list[Problem], ParsedBundle]:
    root = Path(root)
    rep, parsed = ProblemReport(), ParsedBundle()
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a directory"
        rep.add(str(root), f"bundle directory {what}; pass a directory holding {CITY_MANIFEST}")
        return rep.problems, parsed
    if not (root / CITY_MANIFEST).is_file():
        rep.add(
            CITY_MANIFEST,
            f"not found in {root}; a bundle needs a {CITY_MANIFEST} with [layers] pois = ... "
            "or regions = ... "
            "(`mfm city synth` writes an example bundle)",
        )
        return rep.problems, parsed
    try:
        manifest = read_city_toml(root)
    except CityError as exc:
        rep.add(CITY_MANIFEST, f"not valid TOML: {exc.__cause__ or exc}; fix the syntax")
        return rep.problems, parsed
    _check_manifest(rep, root, manifest, parsed)
    layers = manifest.get("layers")
    listed = set(layers) if isinstance(layers, dict) else set()
    for layer in LAYERS:  # pois and regions come before the layers that refer to them
        if layer in parsed.files:
            _check_layer(rep, root, parsed.files[layer], layer, parsed)
    if "satellite" in parsed.frames:
        _check_satellite_regions(rep, parsed.files["satellite"], parsed)
    if "od" in parsed.frames:
        _check_od(rep, parsed.files["od"], parsed)
    _check_extent(rep, parsed)
    for name, spec in parsed.labels.items():
        layer = LEVEL_LAYER[spec.level]
        file = parsed.label_files[name]
        if layer not in parsed.files:
            if layer not in listed:  # a listed-but-missing file is reported already
                msg = f"labels.{name} has level '{spec.level}' but city.toml lists no {layer}"
                rep.add(file, msg)
            continue
        frame = parsed.frames.get(layer)
        id_col = LEVEL_ID[spec.level]
        known = frame[id_col] if frame is not None and id_col in frame else None
        label_frame(rep, file, spec, known, parsed.files[layer])
    return rep.problems, parsed


def validate_city(root: Path | str) -> list[Problem]:
    """Check a bundle and return every problem found (an empty list when it is valid).

    Args:
        root: The bundle directory (holding ``city.toml``).

    Returns:
        The problems, in manifest, layer, then label order.
    """
    return check_bundle(root)[0]


# --------------------------------------------------------------------------- City
