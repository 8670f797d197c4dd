"""Reading POIs and roads from an OpenStreetMap file with GDAL's OSM driver (via pyogrio).

Why this reader: GDAL parses the PBF, resolves node locations, assembles multipolygons and
serialises all tags to JSON in C++, and pyogrio streams each layer as Arrow record
batches, so Python only filters columns. Node locations go to GDAL's own temporary
store (in memory up to ``OSM_MAX_TMPFILE_SIZE``, 100 MB by default, then on disk), and
batches are filtered as they arrive, so a file of hundreds of MB never has all its
elements in memory. pyosmium was measured too (benchmarks/ingest.py history): it hands
every kept object to Python, where reading its tags one by one cost 3x GDAL's time;
pyrosm decodes whole blocks into NumPy arrays and keeps them. GDAL's OSM driver does not
report a truncated file (it stops and returns what it read), so :func:`check_pbf` walks
the PBF block headers first (a seek per block; milliseconds).

Layers read (with a private ``osmconf.ini``: every tag in ``all_tags`` as JSON):

* ``points``: tagged nodes; kept when they carry a key in :data:`POI_KEYS`.
* ``multipolygons``: closed ways and multipolygon relations; POIs likewise.
* ``lines``: ways; kept as roads when tagged ``highway`` (not ``area=yes``).
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import shapely

from mfm.core.constants import FOOTPRINT, POI_ID, ROAD_ID, TAGS, WGS84
from mfm.core.errors import CityError

__all__ = ["POI_KEYS", "OsmExtract", "check_osm_xml", "check_pbf", "read_osm"]

POI_KEYS = (
    "amenity", "shop", "tourism", "leisure", "office", "craft", "healthcare",
    "public_transport", "historic", "building",
)  # fmt: skip
BBox = tuple[float, float, float, float]
_SUFFIXES = (".osm.pbf", ".pbf", ".osm")
_BATCH = 65_536
_MAX_BLOB_HEADER = 64 * 1024  # the PBF spec's limit
_POI_RE = '[{,]"(' + "|".join(POI_KEYS) + ')":'
_HIGHWAY_RE = '[{,]"highway":'
_AREA_YES = '"area":"yes"'
_AREA_KEYS = (
    "aeroway,amenity,boundary,building,craft,geological,historic,landuse,leisure,military,"
    "natural,office,place,shop,sport,tourism,healthcare,public_transport,highway=platform"
)
_OSMCONF = f"""closed_ways_are_polygons={_AREA_KEYS}
tags_format=json

[points]
osm_id=yes
attributes=
all_tags=yes
unsignificant=created_by,converted_by,source,time,ele,attribution
ignore=created_by,converted_by

[lines]
osm_id=yes
attributes=
all_tags=yes
ignore=created_by,converted_by

[multipolygons]
osm_id=yes
osm_way_id=yes
attributes=
all_tags=yes
ignore=created_by,converted_by

[multilinestrings]
osm_id=yes
attributes=

[other_relations]
osm_id=yes
attributes=
"""


@dataclass
class OsmExtract:
    """What :func:`read_osm` found: POI and road frames (EPSG:4326) and counts."""

    pois: gpd.GeoDataFrame
    roads: gpd.GeoDataFrame
    features: int  # features GDAL returned (tagged nodes, ways, polygons), before filtering
    broken: int  # kept features without a usable geometry (cut by the extract's edge)


# ----------------------------------------------------------------------------- PBF check


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf):
            raise ValueError("varint runs past the header")
        b = buf[i]
        value |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return value, i
        shift += 7


def _blob_header(buf: bytes) -> tuple[str, int]:
    """``(type, datasize)`` of a protobuf BlobHeader (fields 1: string, 3: int32)."""
    kind, size, i = "", -1, 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
            if field == 3:
                size = value
        elif wire == 2:
            length, i = _varint(buf, i)
            if field == 1:
                kind = buf[i : i + length].decode("ascii", "replace")
            i += length
        else:
            raise ValueError(f"unexpected wire type {wire}")
    if size < 0 or not kind:
        raise ValueError("BlobHeader lacks type or datasize")
    return kind, size


def check_pbf(path: Path) -> int:
    """Walk the PBF block headers; return the number of blocks.

    Raises:
        CityError: The file is not a PBF (first block is not ``OSMHeader``) or it is
            truncated (a block runs past the end of the file).
    """
    size = path.stat().st_size
    blocks = pos = 0
    with open(path, "rb") as fh:
        while pos < size:
            head = fh.read(4)
            length = int.from_bytes(head, "big") if len(head) == 4 else -1
            if not 0 < length <= _MAX_BLOB_HEADER:
                raise _unreadable(path, f"no block header at byte {pos}")
            try:
                kind, datasize = _blob_header(fh.read(length))
            except ValueError as exc:
                raise _unreadable(path, f"bad block header at byte {pos}: {exc}") from None
            if blocks == 0 and kind != "OSMHeader":
                raise _unreadable(path, f"first block is {kind!r}, not 'OSMHeader'")
            pos += 4 + length + datasize
            if pos > size:
                raise _unreadable(
                    path, f"truncated: block {blocks} ends at byte {pos}, file has {size}"
                )
            fh.seek(pos)
            blocks += 1
    if blocks == 0:
        raise _unreadable(path, "the file is empty")
    return blocks


def check_osm_xml(path: Path) -> None:
    """Refuse an OSM XML file that does not start with ``<?xml``/``<osm`` or end with ``</osm>``.

    GDAL's parser returns what it read from a cut file without an error, as for PBF.
    """
    with open(path, "rb") as fh:
        head = fh.read(512).lstrip()
        fh.seek(max(0, path.stat().st_size - 512))
        tail = fh.read().rstrip()
    if not (head.startswith(b"<?xml") or head.startswith(b"<osm")):
        raise _unreadable(path, "it does not start like OSM XML", "XML")
    if not tail.endswith(b"</osm>"):
        raise _unreadable(path, "truncated: it does not end with </osm>", "XML")


def _unreadable(path: Path, why: str, kind: str = "PBF") -> CityError:
    return CityError(
        f"{path}: not a readable OSM {kind} ({why}); download the extract again "
        "(e.g. from Geofabrik) or check it with `osmium fileinfo`"
    )


# ----------------------------------------------------------------------------- reading


def _check_input(path: Path) -> None:
    if not path.is_file():
        raise CityError(f"{path}: file not found; pass an OpenStreetMap extract (.osm.pbf)")
    if not path.name.lower().endswith(_SUFFIXES):
        raise CityError(
            f"{path}: not an OSM file name (expected .osm.pbf, .pbf or .osm); "
            "download a .osm.pbf extract (e.g. from Geofabrik)"
        )
    if path.name.lower().endswith(".osm"):
        check_osm_xml(path)
    else:
        check_pbf(path)


def _read_layer(
    path: Path,
    layer: str,
    conf: Path,
    keep: Callable[[pa.Array], pa.Array],
    bbox: BBox | None,
    tick: Callable[[int], None],
) -> tuple[pa.Table, int]:
    """Stream one layer, keeping the rows ``keep(all_tags)`` selects.

    The layer is read through ``SELECT * FROM layer``: for GDAL's OSM driver that marks
    it as the only layer of interest, so features of the other layers are dropped as
    the file streams instead of piling up (on big files they would end the read with
    "too many features have accumulated").
    """
    import pyogrio
    from pyogrio.errors import DataLayerError, DataSourceError

    kept, seen = [], 0
    try:
        with pyogrio.open_arrow(
            path,
            sql=f"SELECT * FROM {layer}",
            bbox=bbox,
            batch_size=_BATCH,
            use_pyarrow=True,
            CONFIG_FILE=str(conf),
        ) as (meta, reader):
            geom = meta["geometry_name"] or "wkb_geometry"
            for batch in reader:
                seen += batch.num_rows
                tags = batch.column("all_tags")
                if isinstance(tags.type, pa.BaseExtensionType):  # arrow.json -> plain strings
                    tags = tags.storage
                    batch = batch.set_column(
                        batch.schema.get_field_index("all_tags"), "all_tags", tags
                    )
                kept.append(batch.filter(pc.fill_null(keep(tags), False)))
                tick(batch.num_rows)
    except (DataSourceError, DataLayerError) as exc:
        raise _unreadable(path, " ".join(str(exc).split())[:160]) from None
    if not kept:
        return pa.table({"osm_id": pa.array([], pa.string())}), seen
    table = pa.Table.from_batches(kept)
    return table.rename_columns(["geometry" if c == geom else c for c in table.column_names]), seen


def _has_poi_key(tags: pa.Array) -> pa.Array:
    return pc.match_substring_regex(tags, _POI_RE)


def _is_road(tags: pa.Array) -> pa.Array:
    return pc.and_(
        pc.match_substring_regex(tags, _HIGHWAY_RE), pc.invert(pc.match_substring(tags, _AREA_YES))
    )


def _ids(prefix: str, values: pa.ChunkedArray) -> pd.Series:
    """``prefix + id`` as Arrow-backed strings (no Python object per row)."""
    joined = pc.binary_join_element_wise(prefix, values.cast(pa.string()), "")
    return joined.to_pandas().astype("str")


def _geoms(table: pa.Table) -> np.ndarray:
    if table.num_rows == 0:
        return np.empty(0, dtype=object)
    wkb = table.column("geometry").to_numpy(zero_copy_only=False)
    return shapely.from_wkb(wkb, on_invalid="ignore")  # rings cut by the extract -> None


def _single(geoms: np.ndarray) -> np.ndarray:
    """MultiPolygons of one part as Polygons."""
    geoms = geoms.copy()
    one = shapely.get_num_geometries(geoms) == 1
    geoms[one] = shapely.get_geometry(geoms[one], 0)
    return geoms


def _in_bbox(geoms: np.ndarray, bbox: BBox | None) -> np.ndarray:
    if bbox is None:
        return np.ones(len(geoms), dtype=bool)
    return shapely.intersects(geoms, shapely.box(*bbox))


def _tags(table: pa.Table) -> pd.Series:
    """The JSON tags as Arrow-backed strings."""
    if table.num_rows == 0:
        return pd.Series([], dtype="str")
    return table.column("all_tags").to_pandas().astype("str")


def _area_ids(polygons: pa.Table) -> pd.Series:
    """``w<way id>`` for closed ways, ``r<relation id>`` for multipolygon relations."""
    if polygons.num_rows == 0:
        return pd.Series([], dtype="str")
    way, rel = polygons.column("osm_way_id"), polygons.column("osm_id")
    ids = pc.if_else(
        pc.is_null(way),
        pc.binary_join_element_wise("r", rel.cast(pa.string()), ""),
        pc.binary_join_element_wise("w", way.cast(pa.string()), ""),
    )
    return ids.to_pandas().astype("str")


def _pois(points: pa.Table, polygons: pa.Table, bbox: BBox | None) -> gpd.GeoDataFrame:
    nodes = _geoms(points)
    areas = _geoms(polygons)
    invalid = ~shapely.is_valid(areas) & ~shapely.is_missing(areas)  # self-touching rings
    areas[invalid] = shapely.make_valid(areas[invalid], method="structure", keep_collapsed=False)
    areas = _single(areas)
    kind = shapely.get_type_id(areas)  # -1 for None
    ok = ((kind == 3) | (kind == 6)) & ~shapely.is_empty(areas)  # Polygon, MultiPolygon
    node_ids = _ids("n", points.column("osm_id")) if points.num_rows else _tags(points)
    frame = gpd.GeoDataFrame(
        {
            POI_ID: pd.concat([node_ids, _area_ids(polygons)[ok]], ignore_index=True),
            TAGS: pd.concat([_tags(points), _tags(polygons)[ok]], ignore_index=True),
            FOOTPRINT: gpd.GeoSeries(
                np.concatenate([np.full(len(nodes), None, dtype=object), areas[ok]]), crs=WGS84
            ),
        },
        geometry=np.concatenate([nodes, shapely.point_on_surface(areas[ok])]),
        crs=WGS84,
    )
    inside = _in_bbox(frame.geometry.to_numpy(), bbox)
    if not inside.all():
        frame = frame[inside]
    frame.attrs["broken"] = int((~ok).sum())
    return frame.drop_duplicates(POI_ID).reset_index(drop=True)


def _roads(lines: pa.Table, bbox: BBox | None) -> gpd.GeoDataFrame:
    geoms = _geoms(lines)
    ids = _ids("w", lines.column("osm_id")) if lines.num_rows else _tags(lines)
    frame = gpd.GeoDataFrame({ROAD_ID: ids, TAGS: _tags(lines)}, geometry=geoms, crs=WGS84)
    ok = ~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)
    keep = ok & _in_bbox(geoms, bbox)
    if not keep.all():
        frame = frame[keep].reset_index(drop=True)
    frame.attrs["broken"] = int((~ok).sum())
    return frame


class _Status:
    """A transient rich status line with the features read so far, or nothing."""

    def __init__(self, enabled: bool, name: str) -> None:
        self.name, self.count, self._status = name, 0, None
        if enabled:
            from rich.console import Console

            self._status = Console(stderr=True).status(f"reading {name}")

    def __enter__(self) -> _Status:
        if self._status is not None:
            self._status.__enter__()
        return self

    def layer(self, layer: str) -> Callable[[int], None]:
        def tick(n: int) -> None:
            self.count += n
            if self._status is not None:
                self._status.update(f"reading {self.name} ({layer}): {self.count:,} features")

        return tick

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.__exit__(*exc)


def read_osm(path: Path | str, bbox: BBox | None = None, progress: bool = False) -> OsmExtract:
    """Read the POIs and roads of an OSM file (see the module docstring).

    Args:
        path: A ``.osm.pbf`` (or ``.osm``) file.
        bbox: Keep features intersecting ``(W, S, E, N)`` in degrees.
        progress: Show a status line with the features read.

    Raises:
        CityError: The file is missing, truncated or not an OSM file (one line).
    """
    path = Path(path)
    _check_input(path)
    with (
        tempfile.TemporaryDirectory(prefix="mfm-osm-") as tmp,
        _Status(progress, path.name) as st,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", RuntimeWarning)  # GDAL on relations cut by the extract
        conf = Path(tmp) / "osmconf.ini"
        conf.write_text(_OSMCONF)
        points, n1 = _read_layer(path, "points", conf, _has_poi_key, bbox, st.layer("points"))
        polys, n2 = _read_layer(path, "multipolygons", conf, _has_poi_key, bbox, st.layer("areas"))
        lines, n3 = _read_layer(path, "lines", conf, _is_road, bbox, st.layer("lines"))
    pois, roads = _pois(points, polys, bbox), _roads(lines, bbox)
    broken = pois.attrs.pop("broken", 0) + roads.attrs.pop("broken", 0)
    return OsmExtract(pois, roads, n1 + n2 + n3, broken)
