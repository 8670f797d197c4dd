"""``mfm city from-osm``: an OpenStreetMap extract (.osm.pbf) to a City bundle.

Reader: pyosmium (libosmium). It streams the file block by block on C++ threads, keeps
only node *locations* in a compact index (``flex_mem``: a sparse array for extracts, a
dense one for continent-sized files) and filters tags in C++ before Python sees an
object, so a file of hundreds of MB never has all its elements in memory. pyrosm reads
whole blocks into NumPy arrays (memory grows with the file) and GDAL's OSM driver goes
through a temporary SQLite database and a generic feature model (slower); both were
ruled out for that reason.

What becomes what:

* POIs: nodes and areas (closed ways, multipolygon relations) with any key in
  :data:`POI_KEYS`. All tags are kept. Areas keep their polygon as ``footprint`` and a
  point inside it (``shapely.point_on_surface``) as ``geometry``. Ids: ``n<id>``,
  ``w<id>`` (area from a way), ``r<id>`` (from a relation).
* Roads: ways with a ``highway`` tag (not ``area=yes``), with tags and ``length_m``.
* Regions: see :mod:`mfm.cities.regions`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely

from mfm.cities.bundle import new_bundle
from mfm.cities.regions import file_regions, h3_regions, parse_regions, road_regions
from mfm.core.constants import FOOTPRINT, POI_ID, REGION_ID, ROAD_ID, TAGS, WGS84
from mfm.core.errors import CityError

__all__ = ["POI_KEYS", "OsmExtract", "from_osm", "parse_bbox", "read_osm"]

POI_KEYS = (
    "amenity", "shop", "tourism", "leisure", "office", "craft", "healthcare",
    "public_transport", "historic", "building",
)  # fmt: skip
_SUFFIXES = (".pbf", ".osm", ".bz2", ".gz", ".o5m", ".opl")
_PROGRESS_EVERY = 4096
BBox = tuple[float, float, float, float]


@dataclass
class OsmExtract:
    """What :func:`read_osm` found: POI and road frames (EPSG:4326) and counts."""

    pois: gpd.GeoDataFrame
    roads: gpd.GeoDataFrame
    seen: int  # tagged objects handed to Python
    skipped: int  # objects whose geometry osmium could not build (missing nodes, bad rings)


def parse_bbox(text: str | None) -> BBox | None:
    """Parse ``W,S,E,N`` in degrees; CityError with the fix when malformed."""
    if text is None:
        return None
    try:
        w, s, e, n = (float(v) for v in text.split(","))
    except ValueError:
        msg = f"--bbox {text!r}: give W,S,E,N in degrees, e.g. 24.93,60.16,24.96,60.18"
        raise CityError(msg) from None
    if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
        raise CityError(f"--bbox {text!r}: need -180 <= W < E <= 180 and -90 <= S < N <= 90")
    return (w, s, e, n)


def _tags(obj: Any) -> dict[str, str]:
    return {t.k: t.v for t in obj.tags}


def _poi_key(tags: Any) -> bool:
    return any(k in tags for k in POI_KEYS)


class _Collector:
    """Accumulates POIs and roads while the file streams past."""

    def __init__(self) -> None:
        import osmium

        self.wkb = osmium.geom.WKBFactory()
        self.bad_geometry = osmium.InvalidLocationError
        self.node_ids: list[str] = []
        self.node_xy: list[tuple[float, float]] = []
        self.node_tags: list[str] = []
        self.area_ids: list[str] = []
        self.area_wkb: list[str] = []
        self.area_tags: list[str] = []
        self.road_ids: list[str] = []
        self.road_wkb: list[str] = []
        self.road_tags: list[str] = []
        self.seen = 0
        self.skipped = 0

    def _line(self, way: Any) -> bytes | str:
        """A road's WKB; at the edge of an extract, the part whose nodes are present."""
        try:
            return self.wkb.create_linestring(way)
        except self.bad_geometry:
            xy = [(n.lon, n.lat) for n in way.nodes if n.location.valid()]
            if len(xy) < 2:
                raise
            return shapely.to_wkb(shapely.LineString(xy))

    def add(self, obj: Any) -> None:
        self.seen += 1
        tags = obj.tags
        try:
            if obj.is_node():
                if _poi_key(tags):
                    loc = obj.location
                    self.node_ids.append(f"n{obj.id}")
                    self.node_xy.append((loc.lon, loc.lat))
                    self.node_tags.append(json.dumps(_tags(obj), ensure_ascii=False))
            elif obj.is_way():
                if "highway" in tags and tags.get("area") != "yes":
                    self.road_wkb.append(self._line(obj))
                    self.road_ids.append(f"w{obj.id}")
                    self.road_tags.append(json.dumps(_tags(obj), ensure_ascii=False))
            elif obj.is_area() and _poi_key(tags):
                self.area_wkb.append(self.wkb.create_multipolygon(obj))
                self.area_ids.append(f"{'w' if obj.from_way() else 'r'}{obj.orig_id()}")
                self.area_tags.append(json.dumps(_tags(obj), ensure_ascii=False))
        except (self.bad_geometry, RuntimeError):  # nodes outside the extract, broken rings
            self.skipped += 1


def _check_input(path: Path) -> None:
    if not path.is_file():
        raise CityError(f"{path}: file not found; pass an OpenStreetMap extract (.osm.pbf)")
    if not path.name.lower().endswith(_SUFFIXES):
        raise CityError(
            f"{path}: not an OSM file name (expected .osm.pbf, .pbf or .osm); "
            "download a .osm.pbf extract (e.g. from Geofabrik)"
        )


def _unreadable(path: Path, exc: BaseException) -> CityError:
    msg = " ".join(str(exc).split())[:160]
    return CityError(
        f"{path}: not a readable OSM file ({msg}); it may be truncated or not a PBF: "
        "download the extract again"
    )


def read_osm(
    path: Path | str,
    bbox: BBox | None = None,
    progress: bool = False,
) -> OsmExtract:
    """Stream an OSM file and return its POIs and roads (see the module docstring).

    Raises:
        CityError: The file is missing, truncated or not an OSM file (one line).
    """
    import osmium

    path = Path(path)
    _check_input(path)
    keys = osmium.filter.KeyFilter(*POI_KEYS, "highway")
    proc = (
        osmium.FileProcessor(str(path))
        .with_locations()
        .with_areas(osmium.filter.KeyFilter(*POI_KEYS))
        .with_filter(keys)
    )
    sink = _Collector()
    try:
        with _Spinner(progress, path.name) as spin:
            for obj in proc:
                sink.add(obj)
                if sink.seen % _PROGRESS_EVERY == 0:
                    spin(sink)
    except (RuntimeError, ValueError, OSError) as exc:
        raise _unreadable(path, exc) from None
    return OsmExtract(_poi_frame(sink, bbox), _road_frame(sink, bbox), sink.seen, sink.skipped)


def _single(geoms: np.ndarray) -> np.ndarray:
    """MultiPolygons of one part as Polygons."""
    one = shapely.get_num_geometries(geoms) == 1
    geoms = geoms.copy()
    geoms[one] = shapely.get_geometry(geoms[one], 0)
    return geoms


def _in_bbox(geoms: np.ndarray, bbox: BBox | None) -> np.ndarray:
    if bbox is None:
        return np.ones(len(geoms), dtype=bool)
    return shapely.intersects(geoms, shapely.box(*bbox))


def _poi_frame(sink: _Collector, bbox: BBox | None) -> gpd.GeoDataFrame:
    points = shapely.points(np.asarray(sink.node_xy, dtype=np.float64).reshape(-1, 2))
    areas = _single(shapely.from_wkb(np.asarray(sink.area_wkb, dtype=object), on_invalid="ignore"))
    ok = ~shapely.is_empty(areas) & shapely.is_valid_input(areas)
    frame = gpd.GeoDataFrame(
        {
            POI_ID: np.array(sink.node_ids + list(np.asarray(sink.area_ids)[ok]), dtype=object),
            TAGS: np.array(sink.node_tags + list(np.asarray(sink.area_tags)[ok]), dtype=object),
            FOOTPRINT: gpd.GeoSeries(
                np.concatenate([np.full(len(points), None, dtype=object), areas[ok]]), crs=WGS84
            ),
        },
        geometry=np.concatenate([points, shapely.point_on_surface(areas[ok])]),
        crs=WGS84,
    )
    sink.skipped += int((~ok).sum())
    frame = frame[_in_bbox(frame.geometry.to_numpy(), bbox)]
    return frame.drop_duplicates(POI_ID).reset_index(drop=True)


def _road_frame(sink: _Collector, bbox: BBox | None) -> gpd.GeoDataFrame:
    lines = shapely.from_wkb(np.asarray(sink.road_wkb, dtype=object))
    frame = gpd.GeoDataFrame(
        {
            ROAD_ID: np.array(sink.road_ids, dtype=object),
            TAGS: np.array(sink.road_tags, dtype=object),
        },
        geometry=lines,
        crs=WGS84,
    )
    return frame[_in_bbox(lines, bbox)].reset_index(drop=True)


class _Spinner:
    """A transient rich status line with running counts, or nothing."""

    def __init__(self, enabled: bool, name: str) -> None:
        self.enabled, self.name, self._status = enabled, name, None

    def __enter__(self) -> _Spinner:
        if self.enabled:
            from rich.console import Console

            self._status = Console(stderr=True).status(f"reading {self.name}")
            self._status.__enter__()
        return self

    def __call__(self, sink: _Collector) -> None:
        if self._status is not None:
            pois = len(sink.node_ids) + len(sink.area_ids)
            self._status.update(
                f"reading {self.name}: {sink.seen:,} tagged objects, {pois:,} POIs, "
                f"{len(sink.road_ids):,} roads"
            )

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.__exit__(*exc)


def _bundle_name(path: Path) -> str:
    name = path.name
    for suffix in (".osm.pbf", ".pbf", ".osm.bz2", ".osm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def from_osm(
    pbf: Path | str,
    out: Path | str,
    *,
    regions: str = "roads",
    bbox: str | BBox | None = None,
    name: str | None = None,
    region_id_column: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Turn an OSM extract into a new City bundle at ``out`` (all or nothing).

    Args:
        pbf: The ``.osm.pbf`` file.
        out: Bundle directory to create (must not exist or be empty).
        regions: ``roads`` (road-network blocks), ``h3:RES`` or a boundary file path.
        bbox: Keep features intersecting ``W,S,E,N`` (degrees) only.
        name: Bundle name (default: the file name without ``.osm.pbf``).
        region_id_column: Id column of a boundary file.
        progress: Show a status line while reading.

    Returns:
        A JSON-ready summary: counts per layer, the CRS, regions spec, skipped objects.
    """
    pbf = Path(pbf)
    spec = parse_regions(regions)
    box = parse_bbox(bbox) if isinstance(bbox, str) or bbox is None else tuple(bbox)
    extract = read_osm(pbf, box, progress)  # type: ignore[arg-type]
    pois, roads = extract.pois, extract.roads
    if len(pois) == 0:
        where = " inside --bbox" if box else ""
        raise CityError(
            f"{pbf}: no POIs{where} (nodes or areas tagged {', '.join(POI_KEYS[:4])}, ...); "
            "a bundle needs POIs: use a larger extract or bbox"
        )
    points = np.append(pois.geometry.to_numpy(), shapely.centroid(roads.geometry.to_numpy()))
    crs = str(gpd.GeoSeries(points, crs=WGS84).estimate_utm_crs())
    roads["length_m"] = roads.geometry.to_crs(crs).length.round(2).to_numpy()
    if spec.kind == "roads":
        highway = roads[TAGS].map(lambda t: json.loads(t).get("highway"))
        extent = shapely.box(*box) if box else None
        region_frame = road_regions(roads, highway, crs, extent)
    elif spec.kind == "h3":
        region_frame = h3_regions(spec.resolution or 0, pois.geometry, roads.geometry, crs)
    else:
        region_frame = file_regions(spec.path, region_id_column)  # type: ignore[arg-type]
    with new_bundle(out, name or _bundle_name(pbf), crs) as staging:
        staging.add_layer("pois", pois)
        if len(roads):
            staging.add_layer("roads", roads)
        staging.add_layer("regions", region_frame)
    return {
        "bundle": str(out),
        "crs": crs,
        "pois": len(pois),
        "pois_with_footprint": int(pois[FOOTPRINT].notna().sum()),
        "roads": len(roads),
        "regions": len(region_frame),
        "regions_from": str(spec),
        "skipped_objects": extract.skipped,
        "region_ids": f"{region_frame[REGION_ID].iloc[0]}..." if len(region_frame) else "",
    }
