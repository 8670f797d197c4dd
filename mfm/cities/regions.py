"""Regions for a City bundle: road-network blocks, H3 cells or a user's boundary file.

``--regions`` takes one of three specs (:func:`parse_regions`):

* ``roads`` (the paper's segmentation, §V-A): the faces of the noded network of the
  *segmenting* roads (:data:`SEGMENT_HIGHWAYS`, drivable streets; footways and service
  aisles would cut blocks into courtyards), closed by the outline of the data's extent.
  Faces smaller than ``min_area_m2`` or thinner than ``min_width_m`` (mean width
  2·area/perimeter: the strips between dual carriageways) are slivers: each is merged into
  the neighbour it shares the longest edge with, and dropped when it has none.
* ``h3:RES``: the H3 cells at resolution RES that hold a POI or that a road passes
  through; region ids are the H3 indexes, so tables keyed by H3 cell join by id.
* a path: polygons from a GeoPackage, GeoJSON, Shapefile or GeoParquet with an id column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from mfm.cities._input import read_vector
from mfm.core.constants import REGION_ID, WGS84
from mfm.core.errors import CityError

__all__ = [
    "MIN_AREA_M2",
    "MIN_WIDTH_M",
    "SEGMENT_HIGHWAYS",
    "RegionSpec",
    "file_regions",
    "h3_regions",
    "parse_regions",
    "road_regions",
]

SEGMENT_HIGHWAYS = frozenset(
    {
        "motorway", "trunk", "primary", "secondary", "tertiary", "unclassified",
        "residential", "living_street", "pedestrian", "road", "busway",
        "motorway_link", "trunk_link", "primary_link", "secondary_link", "tertiary_link",
    }
)  # fmt: skip
MIN_AREA_M2 = 2_500.0  # 50 m x 50 m: smaller faces are traffic islands and slivers
MIN_WIDTH_M = 12.0  # mean width below this: strips between parallel carriageways
_MERGE_ROUNDS = 4
_SNAP_M = 0.01  # node the network on a 1 cm grid: T-junctions a rounding error apart meet
_ID_COLUMNS = (REGION_ID, "id", "ID", "region", "name")


@dataclass(frozen=True)
class RegionSpec:
    """A parsed ``--regions`` value: ``kind`` is roads, h3 or file."""

    kind: str
    resolution: int | None = None
    path: Path | None = None

    def __str__(self) -> str:
        return {"roads": "roads", "h3": f"h3:{self.resolution}"}.get(self.kind, str(self.path))


def parse_regions(spec: str) -> RegionSpec:
    """Parse ``roads``, ``h3:RES`` (0-15) or a boundary file path."""
    if spec == "roads":
        return RegionSpec("roads")
    if match := re.fullmatch(r"h3:(\d+)", spec):
        res = int(match.group(1))
        if not 0 <= res <= 15:
            raise CityError(f"--regions {spec}: H3 resolution must be 0-15 (e.g. h3:9)")
        return RegionSpec("h3", resolution=res)
    path = Path(spec)
    if not path.is_file():
        raise CityError(
            f"--regions {spec}: use roads, h3:RES (e.g. h3:9) or the path of an existing "
            "boundary file (GeoPackage, GeoJSON, Shapefile, GeoParquet)"
        )
    return RegionSpec("file", path=path)


def _region_ids(n: int) -> np.ndarray:
    width = max(5, len(str(n)))
    return np.array([f"r{i:0{width}d}" for i in range(n)], dtype=object)


def road_regions(
    roads: gpd.GeoDataFrame,
    highway: pd.Series,
    crs: str,
    extent: shapely.Polygon | None = None,
    min_area_m2: float = MIN_AREA_M2,
    min_width_m: float = MIN_WIDTH_M,
) -> gpd.GeoDataFrame:
    """Polygonize the segmenting roads into blocks (EPSG:4326, ids ``r00000``...).

    Args:
        roads: Road lines in EPSG:4326.
        highway: The ``highway`` value of each road; :data:`SEGMENT_HIGHWAYS` are used.
        crs: Metric CRS to work in.
        extent: Outline (EPSG:4326) that closes the blocks at the edge of the data;
            default: the bounding box of the segmenting roads.
        min_area_m2, min_width_m: Sliver thresholds (see the module docstring).
    """
    lines = roads.geometry[highway.isin(SEGMENT_HIGHWAYS).to_numpy()].to_crs(crs)
    if len(lines) == 0:
        raise CityError(
            "--regions roads: the extract has no drivable roads "
            f"({', '.join(sorted(SEGMENT_HIGHWAYS)[:4])}, ...) to segment; "
            "use --regions h3:9 or a boundary file"
        )
    if extent is None:
        outline = shapely.box(*lines.total_bounds)
    else:
        outline = gpd.GeoSeries([extent], crs=WGS84).to_crs(crs).iloc[0]
    lines = shapely.clip_by_rect(lines.to_numpy(), *outline.bounds)
    edges = np.append(lines, shapely.boundary(outline))
    noded = shapely.union_all(edges[~shapely.is_empty(edges)], grid_size=_SNAP_M)
    faces = np.asarray(shapely.get_parts(shapely.polygonize(shapely.get_parts(noded))))
    if extent is not None:
        faces = shapely.intersection(faces, outline)
        faces = faces[~shapely.is_empty(faces) & (shapely.area(faces) > 0)]
    faces = merge_slivers(faces, min_area_m2, min_width_m)
    if len(faces) == 0:
        raise CityError(
            "--regions roads: the road network encloses no block larger than "
            f"{min_area_m2:g} m2; use --regions h3:9 or a boundary file"
        )
    centre = shapely.centroid(faces)
    order = np.lexsort((shapely.get_x(centre), -shapely.get_y(centre)))  # north-west first
    frame = gpd.GeoDataFrame({REGION_ID: _region_ids(len(faces))}, geometry=faces[order], crs=crs)
    return frame.to_crs(WGS84)


def _slivers(faces: np.ndarray, min_area: float, min_width: float) -> np.ndarray:
    area = shapely.area(faces)
    width = 2.0 * area / np.maximum(shapely.length(faces), 1e-9)
    return (area < min_area) | (width < min_width)


def merge_slivers(faces: np.ndarray, min_area: float, min_width: float) -> np.ndarray:
    """Merge each sliver face into the neighbour sharing its longest edge; drop the rest.

    Runs a few rounds so that chains of slivers (a split median strip) collapse too.
    """
    faces = np.asarray(faces, dtype=object)
    for _ in range(_MERGE_ROUNDS):
        small = _slivers(faces, min_area, min_width)
        if not small.any():
            break
        tree = shapely.STRtree(faces)
        src, dst = tree.query(faces[small], predicate="intersects")
        src = np.flatnonzero(small)[src]
        keep = (src != dst) & ~small[dst]
        src, dst = src[keep], dst[keep]
        shared = shapely.length(
            shapely.intersection(shapely.boundary(faces[src]), shapely.boundary(faces[dst]))
        )
        best = pd.DataFrame({"src": src, "dst": dst, "len": shared})
        best = best[best["len"] > 0].sort_values("len").drop_duplicates("src", keep="last")
        target = np.arange(len(faces))
        target[best["src"].to_numpy()] = best["dst"].to_numpy()
        merged = (
            pd.Series(list(faces))
            .groupby(target)
            .agg(lambda parts: parts.iloc[0] if len(parts) == 1 else shapely.union_all(list(parts)))
        )
        # slivers with no non-sliver neighbour stay for the next round
        faces = np.asarray(merged.to_numpy(), dtype=object)
    return faces[~_slivers(faces, min_area, min_width)]


def h3_regions(
    resolution: int,
    pois: gpd.GeoSeries,
    roads: gpd.GeoSeries,
    crs: str,
) -> gpd.GeoDataFrame:
    """H3 cells (ids = H3 indexes) holding a POI or crossed by a road (EPSG:4326)."""
    import h3

    step = h3.average_hexagon_edge_length(resolution, unit="m") / 2
    lines = shapely.segmentize(roads.to_crs(crs).to_numpy(), step) if len(roads) else []
    pts = shapely.get_coordinates(
        gpd.GeoSeries(lines, crs=crs).to_crs(WGS84).to_numpy() if len(lines) else []
    )
    pts = np.vstack([pts.reshape(-1, 2), shapely.get_coordinates(pois.to_numpy())])
    lonlat = np.unique(np.round(pts, 6), axis=0)
    cells = sorted({h3.latlng_to_cell(lat, lon, resolution) for lon, lat in lonlat})
    if not cells:
        raise CityError(f"--regions h3:{resolution}: the extract has no POIs or roads")
    rings = [shapely.Polygon([(lon, lat) for lat, lon in h3.cell_to_boundary(c)]) for c in cells]
    return gpd.GeoDataFrame({REGION_ID: cells}, geometry=rings, crs=WGS84)


def file_regions(path: Path, id_column: str | None = None) -> gpd.GeoDataFrame:
    """Polygons from a boundary file, reprojected to EPSG:4326, ids from ``id_column``."""
    frame = read_vector(path, "boundaries")
    if frame.crs is None:
        raise CityError(f"{path}: the file has no CRS; set one (e.g. in QGIS) and re-export it")
    column = id_column or next((c for c in _ID_COLUMNS if c in frame.columns), None)
    if column is None or column not in frame.columns:
        have = ", ".join(c for c in frame.columns if c != frame.geometry.name)
        what = f"no column {id_column!r}" if id_column else "no id column"
        raise CityError(f"{path}: {what} (have: {have}); pass --region-id-column NAME")
    kinds = frame.geom_type.fillna("None")
    bad = np.flatnonzero(~kinds.isin(["Polygon", "MultiPolygon"]).to_numpy())
    if len(bad):
        raise CityError(
            f"{path} row {bad[0]}: geometry is {kinds.iloc[bad[0]]}, not a polygon "
            f"({len(bad)} such rows); regions must be polygons"
        )
    ids = frame[column].astype(str)
    dup = ids.duplicated(keep=False).to_numpy()
    if dup.any():
        first = np.flatnonzero(dup)[0]
        raise CityError(
            f"{path} row {first} column {column}: id {ids.iloc[first]!r} is not unique; "
            "region ids must be unique"
        )
    geoms = frame.geometry.to_crs(WGS84).to_numpy()
    geoms = shapely.make_valid(geoms, method="structure", keep_collapsed=False)
    return gpd.GeoDataFrame({REGION_ID: ids.to_numpy()}, geometry=geoms, crs=WGS84)
