"""``mfm city from-osm``: an OpenStreetMap extract (.osm.pbf) to a City bundle.

What becomes what (reading: :mod:`mfm.cities.osm_reader`):

* POIs: nodes and areas (closed ways, multipolygon relations) with any key in
  :data:`POI_KEYS`. All tags are kept. Areas keep their polygon as ``footprint`` and a
  point inside it (``shapely.point_on_surface``) as ``geometry``. Ids: ``n<id>``,
  ``w<id>`` (area from a way), ``r<id>`` (from a relation).
* Roads: ways with a ``highway`` tag (not ``area=yes``), with tags and ``length_m``.
* Regions: see :mod:`mfm.cities.regions`.
* CRS: the UTM zone of the data, written to ``city.toml``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely

from mfm.cities.bundle import new_bundle
from mfm.cities.osm_reader import POI_KEYS, BBox, read_osm
from mfm.cities.regions import file_regions, h3_regions, parse_regions, road_regions
from mfm.core.constants import FOOTPRINT, REGION_ID, TAGS, WGS84
from mfm.core.errors import CityError

__all__ = ["POI_KEYS", "from_osm", "parse_bbox"]


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
        "osm_features_read": extract.features,
        "broken_geometries_skipped": extract.broken,
        "region_ids": f"{region_frame[REGION_ID].iloc[0]}..." if len(region_frame) else "",
    }
