"""Adding labelled tasks to a City bundle (DESIGN §5).

Three ways in, each written all or nothing through :func:`mfm.cities.bundle.edit_bundle`:

- **by id** (:func:`add_labels` with a table, or any file and ``id_column``): a CSV,
  Parquet, Feather or Excel table with an id column and a value column. Ids are compared
  as strings, so H3 cells (``"89a90e934cbffff"``) match H3 region ids.
- **by overlay** (:func:`add_labels` with a geometry file: GeoPackage, GeoJSON,
  Shapefile, FlatGeobuf, GeoParquet): values move onto the bundle's regions in its metric
  CRS. Polygons are area-weighted: ``sum`` splits an extensive quantity (population, jobs)
  by the share of each source polygon's area inside each region; ``mean`` (the default
  for regression) is the area-weighted mean of an intensive quantity (density, price);
  ``majority`` (the default for classification) is the class covering most of the region.
  Points count for the region that contains them (sum, plain mean, most frequent class).
  For ``level="poi"`` a POI takes the value of the label polygons that contain it (mean or
  majority); point labels cannot be placed on POIs by location (join them by id).
  Regions or POIs that nothing covers get no label (never 0).
- **from a POI tag** (:func:`label_from_tag`): a POI-level class label from one OSM tag
  (e.g. building function from ``building``); the tag is then removed from every POI so a
  model cannot read the answer from its text.

Every function returns a JSON-serialisable summary dict.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mfm.cities._input import PARQUET_SUFFIXES, read_vector
from mfm.cities.bundle import Staging, edit_bundle
from mfm.core.bundle.city import City
from mfm.core.constants import GEOMETRY, KIND_TARGET, LEVEL_ID, LEVEL_LAYER, POI_ID, TAGS
from mfm.core.errors import CityError, short_repr

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = ["AGGREGATES", "KINDS", "LEVELS", "add_labels", "label_from_tag"]

LEVELS = ("region", "poi")
KINDS = ("regression", "classification")
AGGREGATES = ("mean", "sum", "majority")

_NAME = re.compile(r"[A-Za-z0-9_-]+")
_GEO_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".gml", ".kml", ".zip")
_SLIVER = 1e-6
"""Overlaps smaller than this share of both the region and the source polygon are
numerical slivers (shared edges after reprojection) and are ignored."""

# Why a row is unusable, in the order they are checked and reported.
_REASONS = (
    "missing_id",
    "unknown_id",
    "missing_geometry",
    "missing_value",
    "non_numeric",
    "duplicate_id",
)


# --------------------------------------------------------------------------- public


def add_labels(
    root: Path | str,
    file: Path | str,
    *,
    name: str,
    column: str,
    id_column: str | None = None,
    level: str = "region",
    kind: str | None = None,
    aggregate: str | None = None,
    drop_invalid: bool = False,
) -> dict[str, Any]:
    """Add (or replace) the labelled task ``name`` from a table or a geometry file.

    Args:
        root: The bundle directory.
        file: A table (CSV/TSV, Parquet, Feather, Excel) joined by id, or a geometry file
            (GeoPackage, GeoJSON, Shapefile, FlatGeobuf, GeoParquet) overlaid on the
            bundle's regions (or POIs). A geometry file with ``id_column`` is joined by id.
        name: Label name: letters, digits, ``_`` and ``-``.
        column: The column holding the values (regression) or classes (classification).
        id_column: Id column of a table; default ``region_id``/``poi_id`` for the level,
            else ``id``.
        level: ``region`` or ``poi``.
        kind: ``regression`` or ``classification``; default: regression when every value
            is a number (or ``aggregate`` is sum/mean), else classification.
        aggregate: How values that land on the same region/POI combine: ``sum``
            (extensive, area-split), ``mean`` (area-weighted), ``majority``. Default for
            overlays: ``mean`` for regression, ``majority`` for classification. By id,
            ``aggregate`` combines rows that share an id (unweighted); without it, duplicate
            ids are invalid rows.
        drop_invalid: Skip unusable rows (unknown or missing id, missing or non-numeric
            value, missing geometry, duplicate id) and count them, instead of failing.

    Returns:
        Summary: name, level, kind (and whether it was inferred), method (``id`` or
        ``overlay``), aggregate, rows read, rows used, dropped rows (by reason), labelled
        items, their coverage of the level's rows, replaced, path; value range or classes.

    Raises:
        CityError: One line naming the file (and row) and the option that fixes it. The
            bundle is left unchanged.
    """
    file = Path(file)
    _check_name(name)
    if level not in LEVELS:
        raise CityError(f"unknown level {level!r}; use --level {' | '.join(LEVELS)}")
    if kind is not None and kind not in KINDS:
        raise CityError(f"unknown kind {kind!r}; use --kind {' | '.join(KINDS)}")
    if aggregate is not None and aggregate not in AGGREGATES:
        raise CityError(
            f"unknown aggregate {aggregate!r}; use --aggregate {' | '.join(AGGREGATES)}"
        )
    if not file.is_file():
        raise CityError(f"{file} not found; pass an existing label file")
    city = City.load(root)
    layer = LEVEL_LAYER[level]
    if not city.has(layer):
        other = "poi" if level == "region" else "region"
        raise CityError(
            f"{city.root} has no {layer} layer, so it cannot take {level}-level labels; add "
            f"{layer} to the bundle first or pass --level {other}"
        )
    frame = _read_file(file)
    is_geo = _is_geo(frame)
    columns = [c for c in frame.columns if c != GEOMETRY]
    if column not in frame.columns or column == GEOMETRY:
        raise CityError(
            f"{file}: no value column '{column}'; columns are {_list(columns)}; pass --column"
        )
    kind, inferred = _resolve_kind(frame[column], kind, aggregate)
    if is_geo and id_column is None:
        result = _by_overlay(city, file, frame, column, level, kind, aggregate, drop_invalid)
    else:
        result = _by_id(city, file, frame, column, id_column, level, kind, aggregate, drop_invalid)
    labels, summary = result
    summary = {
        "name": name,
        "file": str(file),
        "column": column,
        "level": level,
        "kind": kind,
        "kind_inferred": inferred,
        **summary,
    }
    return _write(city, name, level, kind, labels, summary)


def label_from_tag(
    root: Path | str,
    key: str,
    *,
    name: str,
    ignore: Iterable[str] = ("yes",),
    min_count: int = 10,
) -> dict[str, Any]:
    """Make a POI-level class label from OSM tag ``key`` and remove that tag from every POI.

    Values are stripped and lowercased. POIs whose value is in ``ignore`` (e.g. the generic
    ``building=yes``) or whose class has fewer than ``min_count`` POIs get no label. The tag
    is removed from every POI's ``tags`` (labelled or not), so the POI text never shows it;
    POIs left with no tags keep ``{}``, which the text encoder reads as an empty string.

    Returns:
        Summary: name, level, kind, key, labelled, total, coverage, classes (class ->
        count), ignored, rare classes and POIs, tags_removed, empty_tags, replaced, path.
    """
    _check_name(name)
    if not key:
        raise CityError("pass a tag key (e.g. --tag building)")
    if min_count < 1:
        raise CityError(f"min_count must be at least 1, not {min_count}")
    city = City.load(root)
    tags = city.poi_tags()
    raw = pd.Series([t.get(key) for t in tags], dtype=object)
    has = raw.notna().to_numpy()
    if not has.any():
        common = pd.Series([k for t in tags for k in t]).value_counts().head(8)
        raise CityError(
            f"no POI in {city.root / city.files['pois']} has a '{key}' tag; pick another key "
            f"(most common: {_list(common.index)})"
        )
    values = raw.str.strip().str.lower()
    skip = {str(v).strip().lower() for v in ignore} | {""}
    ignored = has & values.isin(skip).to_numpy()
    counts = values[has & ~ignored].value_counts()
    counts = counts.sort_index().sort_values(ascending=False, kind="stable")
    kept = counts[counts >= min_count]
    if len(kept) < 2:
        top = ", ".join(f"{k}={n}" for k, n in counts.head(5).items()) or "none"
        raise CityError(
            f"tag '{key}' gives {len(kept)} class(es) with at least {min_count} POIs (counts: "
            f"{top}); a classification label needs two: lower --min-count or pick another key"
        )
    labelled = has & ~ignored & values.isin(kept.index).to_numpy()
    ids = city.pois[POI_ID].to_numpy()[labelled]
    labels = pd.DataFrame({POI_ID: ids, "label": values.to_numpy()[labelled]})
    empty = _count_emptied(tags, has)
    rare = counts[counts < min_count]
    summary = {
        "name": name,
        "level": "poi",
        "kind": "classification",
        "key": key,
        "ignored": int(ignored.sum()),
        "rare_classes": len(rare),
        "rare_pois": int(rare.sum()),
        "tags_removed": int(has.sum()),
        "empty_tags": empty,
    }
    return _write(
        city, name, "poi", "classification", labels, summary, pois=_pois_without(city, key, has)
    )


# --------------------------------------------------------------------------- reading


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise CityError(
            f"label name {name!r} is not allowed; use letters, digits, _ and - (e.g. population)"
        )


def _list(items: Iterable[Any], limit: int = 12) -> str:
    items = [str(i) for i in items]
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more if items else "(none)"


def _is_geo(frame: pd.DataFrame) -> bool:
    import geopandas as gpd

    return isinstance(frame, gpd.GeoDataFrame) and GEOMETRY in frame.columns


def _read_file(path: Path) -> pd.DataFrame:
    """A table (strings kept as text) or a GeoDataFrame with its geometry as ``geometry``."""
    suffix = path.suffix.lower()
    try:
        if suffix in PARQUET_SUFFIXES:
            import pyarrow.parquet as pq

            if b"geo" in (pq.read_schema(path).metadata or {}):
                return _geo(path, read_vector(path, "labels"))
            return pd.read_parquet(path)
        if suffix in _GEO_SUFFIXES:
            return _geo(path, read_vector(path, "labels"))
        if suffix in (".feather", ".arrow"):
            return pd.read_feather(path)
        if suffix in (".xlsx", ".xls"):
            return pd.read_excel(path, dtype=str)
        return pd.read_csv(path, sep=_sniff_sep(path), dtype=str, skipinitialspace=True)
    except CityError:
        raise
    except Exception as exc:
        first = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise CityError(
            f"cannot read {path} ({first}); give a CSV/Parquet table or a GeoPackage, "
            "GeoJSON, Shapefile or GeoParquet file"
        ) from None


def _sniff_sep(path: Path) -> str:
    """The delimiter of a delimited text file (``,``, ``;``, tab or ``|``)."""
    if path.suffix.lower() == ".tsv":
        return "\t"
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as fh:
            head = fh.read(1 << 16)
        return csv.Sniffer().sniff(head, delimiters=",;\t|").delimiter
    except (csv.Error, OSError):
        return ","


def _geo(path: Path, gdf: pd.DataFrame) -> pd.DataFrame:
    """Name the active geometry ``geometry``; CityError when it has no CRS.

    A file without geometry (a GeoPackage attribute table) comes back as a plain table.
    """
    import geopandas as gpd

    if not isinstance(gdf, gpd.GeoDataFrame) or gdf._geometry_column_name is None:
        return pd.DataFrame(gdf)
    if gdf.crs is None:
        raise CityError(
            f"{path} has no CRS; write it with one (e.g. gdf.set_crs('EPSG:4326') before saving)"
        )
    if gdf.geometry.name != GEOMETRY:
        if GEOMETRY in gdf.columns:
            gdf = gdf.drop(columns=GEOMETRY)
        gdf = gdf.rename_geometry(GEOMETRY)
    return gdf


def _resolve_kind(values: pd.Series, kind: str | None, aggregate: str | None) -> tuple[str, bool]:
    """The label kind, and whether it was inferred rather than given."""
    if kind is None:
        if aggregate == "majority":
            kind = "classification"
        elif aggregate in ("sum", "mean"):
            kind = "regression"
        else:
            return ("regression" if _numeric(values) else "classification"), True
    if aggregate in ("sum", "mean") and kind == "classification":
        raise CityError(
            f"--aggregate {aggregate} needs numeric values; classification labels combine "
            "with --aggregate majority"
        )
    if aggregate == "majority" and kind == "regression":
        raise CityError("--aggregate majority is for classes; regression uses sum or mean")
    return kind, False


def _numeric(values: pd.Series) -> bool:
    """Whether every present value is a number (bool columns are classes)."""
    if pd.api.types.is_bool_dtype(values):
        return False
    if pd.api.types.is_numeric_dtype(values):
        return True
    present = values.dropna()
    if isinstance(values.dtype, pd.StringDtype) or values.dtype == object:
        present = present[present.astype(str).str.strip() != ""]
    return len(present) > 0 and bool(pd.to_numeric(present, errors="coerce").notna().all())


def _as_text(s: pd.Series) -> pd.Series:
    """Ids or classes as stripped strings (integral floats without ``.0``); None if missing."""
    s = s.reset_index(drop=True)
    missing = s.isna().to_numpy()
    if pd.api.types.is_float_dtype(s):
        v = s.to_numpy(dtype=float)
        integral = ~missing & np.isfinite(v) & (np.mod(np.where(missing, 0, v), 1) == 0)
        text = pd.Series(
            np.where(integral, np.where(integral, v, 0).astype(np.int64).astype(str), s.astype(str))
        )
    else:
        text = s.astype(str).str.strip()
    text = text.astype(object)
    text[missing | (text == "").to_numpy()] = None
    return text


# --------------------------------------------------------------------------- rows


def _target_values(s: pd.Series, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values (float or str), missing mask, non-numeric mask."""
    s = s.reset_index(drop=True)
    text = _as_text(s)
    missing = text.isna().to_numpy()
    if kind == "classification":
        return text.to_numpy(dtype=object), missing, np.zeros(len(s), dtype=bool)
    if pd.api.types.is_bool_dtype(s):
        num = pd.Series(np.full(len(s), np.nan))
    else:
        num = pd.to_numeric(s, errors="coerce").astype(float)
    v = num.to_numpy(dtype=float)
    return v, missing, ~missing & ~np.isfinite(v)


def _reject(
    file: Path,
    bad: dict[str, np.ndarray],
    describe: dict[str, Any],
    drop_invalid: bool,
) -> tuple[np.ndarray, dict[str, int]]:
    """Rows to keep; CityError on the first bad row unless ``drop_invalid``."""
    n = len(next(iter(bad.values())))
    keep = np.ones(n, dtype=bool)
    dropped: dict[str, int] = {}
    for reason in _REASONS:
        mask = bad.get(reason)
        if mask is None:
            continue
        mask = mask & keep  # one reason per row, the first that applies
        count = int(mask.sum())
        if not count:
            continue
        if not drop_invalid:
            r = int(np.flatnonzero(mask)[0])
            more = f" (and {count - 1} more such rows)" if count > 1 else ""
            fix = "pass --drop-invalid to skip them"
            if reason == "duplicate_id":
                fix = (
                    "pass --aggregate sum|mean|majority to combine them or --drop-invalid "
                    "to keep the first"
                )
            raise CityError(f"{file} row {r}: {describe[reason](r)}{more}; {fix}")
        keep &= ~mask
        dropped[reason] = count
    return keep, dropped


def _by_id(
    city: City,
    file: Path,
    frame: pd.DataFrame,
    column: str,
    id_column: str | None,
    level: str,
    kind: str,
    aggregate: str | None,
    drop_invalid: bool,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Join rows to the level's items by id."""
    frame = pd.DataFrame(frame).reset_index(drop=True)
    id_col = LEVEL_ID[level]
    columns = [c for c in frame.columns if c != GEOMETRY]
    if id_column is None:
        id_column = next((c for c in (id_col, "id") if c in frame.columns), None)
        if id_column is None:
            raise CityError(
                f"{file}: no id column ('{id_col}' or 'id'); columns are {_list(columns)}; "
                "pass --id-column"
            )
    elif id_column not in frame.columns:
        raise CityError(
            f"{file}: no id column '{id_column}'; columns are {_list(columns)}; pass --id-column"
        )
    if id_column == column:
        raise CityError(f"{file}: --column and --id-column are both '{column}'; pick two columns")
    items = city.layer(LEVEL_LAYER[level])[id_col].astype(str)
    position = pd.Series(np.arange(len(items)), index=items.to_numpy())
    ids = _match_ids(frame[id_column], position)
    values, missing, non_numeric = _target_values(frame[column], kind)
    known = ids.isin(position.index).to_numpy()
    bad = {
        "missing_id": ids.isna().to_numpy(),
        "unknown_id": ids.notna().to_numpy() & ~known,
        "missing_value": missing,
        "non_numeric": non_numeric,
    }
    if ids.notna().any() and not known.any():
        raise CityError(
            f"{file}: none of the {int(ids.notna().sum())} ids in column '{id_column}' "
            f"(e.g. '{ids.dropna().iloc[0]}') is a {id_col} of the bundle (e.g. "
            f"'{items.iloc[0]}'); pass the right --id-column or --level"
        )
    ok = ~(bad["missing_id"] | bad["unknown_id"] | missing | non_numeric)
    first_row = pd.Series(np.arange(len(ids))[ok], index=ids[ok].to_numpy())
    first_row = first_row[~first_row.index.duplicated()]
    if aggregate is None:
        dup = np.zeros(len(ids), dtype=bool)  # among usable rows: a bad first row is no rival
        dup[ok] = ids[ok].duplicated(keep="first").to_numpy()
        bad["duplicate_id"] = dup
    raw = frame[column].to_numpy()
    raw_ids = frame[id_column].to_numpy()
    layer_file = city.files[LEVEL_LAYER[level]]
    describe = {
        "missing_id": lambda r: f"missing id in column '{id_column}'",
        "unknown_id": lambda r: f"{id_col} '{ids[r]}' is not in {layer_file}",
        "missing_value": lambda r: f"missing value in column '{column}'",
        "non_numeric": lambda r: (
            f"value {short_repr(raw[r])} in column '{column}' is not a finite number (kind "
            "regression; pass --kind classification if it is a class)"
        ),
        "duplicate_id": lambda r: (
            f"duplicate id {short_repr(raw_ids[r])} (first at row {first_row[ids[r]]})"
        ),
    }
    keep, dropped = _reject(file, bad, describe, drop_invalid)
    target = position.loc[ids[keep].to_numpy()].to_numpy()
    weights = np.ones(len(target))
    idx, out = _combine(target, values[keep], weights, aggregate or "first", kind)
    labels = label_frame(items.to_numpy(), idx, out, id_col, kind)
    summary = {
        "method": "id",
        "id_column": id_column,
        "aggregate": aggregate,
        "rows": len(frame),
        "used": int(keep.sum()),
        "dropped": sum(dropped.values()),
        "dropped_by_reason": dropped,
    }
    return labels, summary


def _match_ids(s: pd.Series, position: pd.Series) -> pd.Series:
    """Ids as strings; integer H3 cells become their hex form when that is what matches."""
    ids = _as_text(s)
    if pd.api.types.is_integer_dtype(s) and not ids.isin(position.index).any():
        as_hex = pd.Series([format(int(v), "x") for v in s.to_numpy()], dtype=object)
        if as_hex.isin(position.index).any():
            return as_hex
    return ids


# --------------------------------------------------------------------------- overlay


def _by_overlay(
    city: City,
    file: Path,
    frame: gpd.GeoDataFrame,
    column: str,
    level: str,
    kind: str,
    aggregate: str | None,
    drop_invalid: bool,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Transfer values from polygons or points onto regions (or POIs) by location."""
    import shapely

    frame = frame.reset_index(drop=True)
    aggregate = aggregate or ("majority" if kind == "classification" else "mean")
    geoms = frame.geometry.to_crs(city.crs).to_numpy()
    no_geom = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    types = set(shapely.get_type_id(geoms[~no_geom]).tolist())
    polygons, points = {3, 6}, {0}  # shapely type ids: Polygon, MultiPolygon; Point
    if types <= points and types:
        family = "points"
    elif types <= polygons and types:
        family = "polygons"
        no_geom |= ~no_geom & (shapely.area(geoms) <= 0)
    elif not types:
        raise CityError(f"{file} has no geometries; give polygons or points")
    else:
        names = sorted(set(frame.geometry[~no_geom].geom_type))
        raise CityError(
            f"{file} has {', '.join(names)} geometries; overlays need only polygons or only "
            "points (or join by id with --id-column)"
        )
    if level == "poi" and family == "points":
        raise CityError(
            f"{file} holds points: point labels cannot be placed on POIs by location; join "
            "them by id with --id-column"
        )
    if level == "poi" and aggregate == "sum":
        raise CityError(
            "--aggregate sum splits totals by area and applies to regions only; use mean or "
            "majority for POIs"
        )
    values, missing, non_numeric = _target_values(frame[column], kind)
    raw = frame[column].to_numpy()
    bad = {"missing_geometry": no_geom, "missing_value": missing, "non_numeric": non_numeric}
    describe = {
        "missing_geometry": lambda r: "missing or empty geometry",
        "missing_value": lambda r: f"missing value in column '{column}'",
        "non_numeric": lambda r: (
            f"value {short_repr(raw[r])} in column '{column}' is not a finite number (kind "
            "regression; pass --kind classification if it is a class)"
        ),
    }
    keep, dropped = _reject(file, bad, describe, drop_invalid)
    rows = np.flatnonzero(keep)
    src, values = geoms[rows], values[rows]
    items = city.layer(LEVEL_LAYER[level])
    targets = items.geometry.to_crs(city.crs).to_numpy()
    stats: dict[str, Any] = {}
    if level == "poi":
        tgt, s = shapely.STRtree(src).query(targets, predicate="intersects")
        weights = np.ones(len(tgt))
    elif family == "points":
        s, tgt = _first_container(src, targets)
        weights = np.ones(len(tgt))
        stats["outside"] = int(len(src) - len(s))
    else:
        s, tgt, weights, stats = _area_pairs(src, targets, aggregate)
    idx, out = _combine(tgt, values[s], weights, aggregate, kind)
    if aggregate == "sum":
        stats["source_total"] = float(values.sum())
        stats["assigned_total"] = float(out.sum())
    labels = label_frame(
        items[LEVEL_ID[level]].astype(str).to_numpy(), idx, out, LEVEL_ID[level], kind
    )
    summary = {
        "method": "overlay",
        "geometry": family,
        "aggregate": aggregate,
        "crs": city.crs,
        "rows": len(frame),
        "used": len(rows),
        "dropped": sum(dropped.values()),
        "dropped_by_reason": dropped,
        **stats,
    }
    return labels, summary


def _first_container(points: np.ndarray, polygons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(point, polygon) pairs: each point with the lowest-index polygon holding it."""
    import shapely

    pt, pg = shapely.STRtree(polygons).query(points, predicate="intersects")
    order = np.lexsort((pg, pt))
    pt, pg = pt[order], pg[order]
    first = np.r_[True, pt[1:] != pt[:-1]] if len(pt) else np.zeros(0, dtype=bool)
    return pt[first], pg[first]


def _area_pairs(
    src: np.ndarray, regions: np.ndarray, aggregate: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """(source, region, weight) of overlapping pairs and coverage statistics.

    Weight: the share of the source's area inside the region (``sum``), else the area
    of the overlap in square metres.
    """
    import shapely

    src = shapely.make_valid(src)
    regions = shapely.make_valid(regions)
    src_area = shapely.area(src)
    reg_area = shapely.area(regions)
    s, r = shapely.STRtree(regions).query(src, predicate="intersects")
    area = shapely.area(shapely.intersection(src[s], regions[r])) if len(s) else np.zeros(0)
    real = area > _SLIVER * np.minimum(src_area[s], reg_area[r])
    s, r, area = s[real], r[real], area[real]
    covered = np.bincount(r, area, minlength=len(regions))
    share = np.minimum(covered / np.where(reg_area > 0, reg_area, 1.0), 1.0)
    hit = covered > 0
    stats = {
        "area_covered": float((share * reg_area).sum() / reg_area.sum()) if reg_area.sum() else 0.0,
        "partly_covered": int((hit & (share < 0.99)).sum()),
    }
    weights = area / src_area[s] if aggregate == "sum" else area
    return s, r, weights, stats


def _combine(
    target: np.ndarray, values: np.ndarray, weights: np.ndarray, how: str, kind: str
) -> tuple[np.ndarray, np.ndarray]:
    """Combine (target, value, weight) triples per target: sorted target indices, values.

    ``sum``: sum of value * weight; ``mean``: weighted mean; ``majority``: the class with
    the largest total weight (ties: the first class by name); ``first``: one row per target.
    """
    if how == "first" or len(target) == 0:
        order = np.argsort(target, kind="stable")
        return target[order], values[order]
    if how == "majority":
        df = pd.DataFrame({"t": target, "c": values.astype(str), "w": weights})
        g = df.groupby(["t", "c"], sort=False)["w"].sum().reset_index()
        g = g.sort_values(["t", "w", "c"], ascending=[True, False, True], kind="stable")
        g = g.drop_duplicates("t")
        return g["t"].to_numpy(), g["c"].to_numpy(dtype=object)
    n = int(target.max()) + 1
    values = values.astype(float)
    hit = np.flatnonzero(np.bincount(target, minlength=n) > 0)
    total = np.bincount(target, values * weights, minlength=n)
    if how == "sum":
        return hit, total[hit]
    return hit, total[hit] / np.bincount(target, weights, minlength=n)[hit]


def label_frame(
    item_ids: np.ndarray, idx: np.ndarray, values: np.ndarray, id_col: str, kind: str
) -> pd.DataFrame:
    target = KIND_TARGET[kind]
    out = values.astype(float) if kind == "regression" else values.astype(str)
    return pd.DataFrame({id_col: item_ids[idx], target: out})


# --------------------------------------------------------------------------- writing


def _pois_without(city: City, key: str, has: np.ndarray) -> pd.DataFrame:
    """The pois layer as stored, with ``key`` removed from the tags of rows ``has``."""
    import geopandas as gpd

    pois = gpd.read_parquet(city.root / city.files["pois"]).reset_index(drop=True)
    tags = pois[TAGS].to_numpy(dtype=object).copy()
    for i in np.flatnonzero(has):
        obj = json.loads(tags[i])
        obj.pop(key, None)
        tags[i] = json.dumps(obj, ensure_ascii=False)
    pois[TAGS] = tags
    return pois


def _count_emptied(tags: list[dict[str, str]], has: np.ndarray) -> int:
    """How many POIs are left with no tags once the key they have (``has``) is removed."""
    return int(sum(1 for i in np.flatnonzero(has) if len(tags[i]) == 1))


def _write(
    city: City,
    name: str,
    level: str,
    kind: str,
    labels: pd.DataFrame,
    summary: dict[str, Any],
    pois: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Write the label (and a rewritten pois layer) all or nothing; finish the summary."""
    total = len(city.layer(LEVEL_LAYER[level]))
    if len(labels) == 0:
        raise CityError(
            f"no {level} got a label from {summary.get('file', summary.get('key'))}; check that "
            "it covers the city (same area, right CRS) and the ids match"
        )
    replaced = name in city.labels
    with edit_bundle(city.root) as staging:
        if replaced:
            _drop_old_label(staging, name)
        if pois is not None:
            staging.add_layer("pois", pois, rel=city.files["pois"])
        rel = staging.add_label(name, labels, level, kind)
    summary.update(
        labelled=len(labels), total=total, coverage=round(len(labels) / total, 6), replaced=replaced
    )
    summary["path"] = rel
    target = labels[KIND_TARGET[kind]]
    if kind == "regression":
        summary.update(min=float(target.min()), mean=float(target.mean()), max=float(target.max()))
    else:
        counts = target.value_counts()
        counts = counts.sort_index().sort_values(ascending=False, kind="stable")
        summary["classes"] = {str(k): int(v) for k, v in counts.items()}
    return summary


def _drop_old_label(staging: Staging, name: str) -> None:
    """Remove the replaced label's CSV when it lives elsewhere and no other label uses it."""
    labels = staging.manifest.get("labels", {})
    old = labels.get(name, {}).get("path")
    if not old or old == f"labels/{name}.csv":
        return
    if any(spec.get("path") == old for k, spec in labels.items() if k != name):
        return
    path = (staging.root / old).resolve()
    if path.is_relative_to(staging.root.resolve()) and path.is_file():  # never outside the bundle
        path.unlink()
