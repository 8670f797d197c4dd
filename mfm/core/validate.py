"""Validation of a City bundle (DESIGN §5): every problem, with file, row and column.

:func:`validate_city` lists every problem found; :class:`~mfm.core.city.City` loads a
bundle only after it passes, so nothing downstream reads an unchecked layer.
"""

from __future__ import annotations

import functools
import json
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from mfm.core.constants import (
    CITY_MANIFEST,
    FOOTPRINT,
    GEOMETRY,
    KIND_TARGET,
    LAYERS,
    LEVEL_ID,
    LEVEL_LAYER,
    POI_ID,
    REGION_ID,
    ROAD_ID,
    SVI_DIRECTIONS,
    SVI_ID,
    TAGS,
    TRAJ_ID,
    WGS84,
)
from mfm.core.errors import CityError, oneline, short_repr

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = ["LabelSpec", "Problem", "check_image", "validate_city"]

ROW_CAP = 20
"""Row-level problems reported per file, column and rule before one summary line."""

IMAGE = "image"
TIME = "t"
_MANIFEST_KEYS = ("name", "crs", "layers", "labels")
_LABEL_KEYS = ("path", "level", "kind")
_POINT = ("Point",)
_LINE = ("LineString", "MultiLineString")
_POLYGON = ("Polygon", "MultiPolygon")


@dataclass(frozen=True)
class _LayerRule:
    id: str
    columns: tuple[str, ...]
    geom: tuple[str, ...] | None
    unique_ids: bool = True


_RULES: dict[str, _LayerRule] = {
    "pois": _LayerRule(POI_ID, (POI_ID, GEOMETRY, TAGS), _POINT),
    "roads": _LayerRule(ROAD_ID, (ROAD_ID, GEOMETRY, TAGS), _LINE),
    "regions": _LayerRule(REGION_ID, (REGION_ID, GEOMETRY), _POLYGON),
    "svi": _LayerRule(SVI_ID, (SVI_ID, GEOMETRY, *SVI_DIRECTIONS), _POINT),
    "satellite": _LayerRule(REGION_ID, (REGION_ID, IMAGE), None),
    "trajectories": _LayerRule(TRAJ_ID, (TRAJ_ID, TIME, GEOMETRY), _POINT, unique_ids=False),
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a bundle.

    Attributes:
        file: Path relative to the bundle (e.g. ``"pois.parquet"``).
        row: 0-based data row (CSV: not counting the header), or None for a file-level
            problem.
        column: Column (or manifest key) concerned, or None.
        message: What is wrong and how to fix it, one line.
    """

    file: str
    row: int | None
    column: str | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f" row {self.row}"
        if self.column is not None:
            where += f" column {self.column}"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class LabelSpec:
    """A labelled task declared under ``[labels.<name>]`` in ``city.toml``."""

    name: str
    path: Path
    level: Literal["region", "poi"]
    kind: Literal["regression", "classification"]


class _Report:
    """Collects problems; caps row-level reports per rule."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, file: str, message: str, *, row: int | None = None, column: str | None = None):
        self.problems.append(Problem(file, row, column, oneline(message, 400)))

    def rows(
        self,
        file: str,
        column: str | None,
        bad: np.ndarray,
        message: Callable[[int], str],
        what: str,
    ) -> None:
        """Report each row where ``bad`` is True (capped at ROW_CAP, then one summary)."""
        idx = np.flatnonzero(np.asarray(bad, dtype=bool))
        for r in idx[:ROW_CAP]:
            self.add(file, message(int(r)), row=int(r), column=column)
        if len(idx) > ROW_CAP:
            self.add(file, f"... and {len(idx) - ROW_CAP} more rows: {what}", column=column)


# --------------------------------------------------------------------------- images


def check_image(path: Path | str) -> None:
    """Raise CityError when ``path`` is not a readable image (PNG/JPEG/GeoTIFF)."""
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()  # decode fully: catches truncated files that verify() lets through
        return
    except Exception as exc:
        reason = exc
    if path.suffix.lower() in (".tif", ".tiff"):
        try:
            import tifffile

            tifffile.imread(path)
            return
        except ImportError:
            pass
        except Exception as exc:
            reason = exc
    raise CityError(f"cannot read image {path}: {oneline(reason)}; re-export it as PNG/JPEG")


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

    return CRS.from_user_input(crs).equals(_parse_crs(json.dumps(WGS84)), ignore_axis_order=True)


def _check_ids(rep: _Report, file: str, column: str, s: pd.Series, unique: bool) -> pd.Series:
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
    rep: _Report, file: str, layer: str, gs: Any, column: str, allowed: tuple[str, ...]
) -> None:
    """Check a geometry column: type, CRS, nulls, coordinate ranges."""
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
        return
    if not _is_wgs84(gs.crs):
        rep.add(
            file,
            f"CRS is {gs.crs.to_string()}; layers must be EPSG:4326: reproject with "
            "gdf.to_crs('EPSG:4326') before writing",
            column=column,
        )
        return
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


def _parse_json_objects(
    rep: _Report, file: str, column: str, s: pd.Series
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
def _parse_crs(text: str) -> Any:
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
                crs = None if crs is None else _parse_crs(json.dumps(crs, sort_keys=True))
                frame[col] = from_wkb(frame[col].to_numpy(), crs=crs)
    is_geom = GEOMETRY in frame.columns and isinstance(frame[GEOMETRY].dtype, GeometryDtype)
    return gpd.GeoDataFrame(frame, geometry=GEOMETRY if is_geom else None)


def _read_layer(rep: _Report, root: Path, file: str, layer: str) -> pd.DataFrame | None:
    import pyarrow.parquet as pq

    path = root / file
    try:
        meta = pq.read_schema(path).metadata or {}
        if _RULES[layer].geom is None:
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
class _Parsed:
    """What validation read, handed to City.load so nothing is read twice."""

    name: str = ""
    crs: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    labels: dict[str, LabelSpec] = field(default_factory=dict)
    label_files: dict[str, str] = field(default_factory=dict)
    tags: list[dict[str, str]] | None = None


def _check_layer(rep: _Report, root: Path, file: str, layer: str, parsed: _Parsed) -> None:
    frame = _read_layer(rep, root, file, layer)
    if frame is None:
        return
    rule = _RULES[layer]
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
        _check_geometry(rep, file, layer, frame[GEOMETRY], GEOMETRY, rule.geom)
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
    rep: _Report, root: Path, file: str, frame: pd.DataFrame, columns: tuple[str, ...]
) -> None:
    """Check image path columns: non-empty strings naming existing files (not opened)."""
    columns = tuple(c for c in columns if c in frame.columns)
    if not columns or len(frame) == 0:
        return
    n = len(frame)
    flat = pd.Series(frame[list(columns)].to_numpy(dtype=object).ravel(order="F"))
    is_str = flat.map(lambda v: isinstance(v, str) and v != "").to_numpy(dtype=bool)
    gone = np.zeros(len(flat), dtype=bool)
    gone[is_str] = _missing_files(root, flat[is_str])
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


def _check_time(rep: _Report, file: str, frame: pd.DataFrame) -> None:
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


def _check_satellite_regions(rep: _Report, file: str, parsed: _Parsed) -> None:
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


def _label_frame(
    rep: _Report, file: str, spec: LabelSpec, known: pd.Series | None, layer_file: str
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


def _check_manifest(rep: _Report, root: Path, manifest: dict[str, Any], parsed: _Parsed) -> None:
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
    elif "pois" not in layers:
        rep.add(
            m, '[layers] has no pois; pois is required (pois = "pois.parquet")', column="layers"
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


def _check_crs(rep: _Report, crs: str) -> str | None:
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


def _check_label_spec(rep: _Report, root: Path, name: str, spec: Any, parsed: _Parsed) -> None:
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
    if ok:
        parsed.labels[name] = LabelSpec(name, root / rel, spec["level"], spec["kind"])
        parsed.label_files[name] = rel


def _validate(root: Path | str) -> tuple[list[Problem], _Parsed]:
    root = Path(root)
    rep, parsed = _Report(), _Parsed()
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a directory"
        rep.add(str(root), f"bundle directory {what}; pass a directory holding {CITY_MANIFEST}")
        return rep.problems, parsed
    manifest_path = root / CITY_MANIFEST
    try:
        manifest = tomllib.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        rep.add(
            CITY_MANIFEST,
            f"not found in {root}; a bundle needs a {CITY_MANIFEST} with [layers] pois = ... "
            "(`mfm city synth` writes an example bundle)",
        )
        return rep.problems, parsed
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        rep.add(CITY_MANIFEST, f"not valid TOML: {oneline(exc)}; fix the syntax")
        return rep.problems, parsed
    _check_manifest(rep, root, manifest, parsed)
    layers = manifest.get("layers")
    listed = set(layers) if isinstance(layers, dict) else set()
    for layer in LAYERS:  # pois and regions come before the layers that refer to them
        if layer in parsed.files:
            _check_layer(rep, root, parsed.files[layer], layer, parsed)
    if "satellite" in parsed.frames:
        _check_satellite_regions(rep, parsed.files["satellite"], parsed)
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
        _label_frame(rep, file, spec, known, parsed.files[layer])
    return rep.problems, parsed


def validate_city(root: Path | str) -> list[Problem]:
    """Check a bundle and return every problem found (an empty list when it is valid).

    Args:
        root: The bundle directory (holding ``city.toml``).

    Returns:
        The problems, in manifest, layer, then label order.
    """
    return _validate(root)[0]


def _one_line_error(problems: list[Problem], root: Path | str) -> CityError:
    msg = str(problems[0])
    if len(problems) > 1:
        n = len(problems) - 1
        msg += f"; ({n} more problem{'s' if n > 1 else ''}: run `mfm city validate {root}`)"
    return CityError(msg)


# --------------------------------------------------------------------------- City
