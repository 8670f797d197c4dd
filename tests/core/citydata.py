"""Tiny hand-made City bundles for tests (DESIGN §5).

``make_bundle(tmp_path)`` writes a valid bundle near Helsinki: POIs on a 100 m grid
(3 per row), four 200 m square regions, two roads, three street-view points, one
satellite tile per region, two trajectories and two labelled tasks. Pass ``mutate`` to
break it before it is written::

    def drop_tags(parts: BundleParts) -> None:
        parts.layers["pois"] = parts.layers["pois"].drop(columns="tags")

    root = make_bundle(tmp_path, mutate=drop_tags)
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
from PIL import Image
from pyproj import CRS
from shapely.geometry import LineString, Point, box

LON0, LAT0 = 24.94, 60.17
"""Origin of the bundle's local grid (central Helsinki)."""

ALL_LAYERS = ("roads", "regions", "svi", "satellite", "trajectories")
TAG_CYCLE = (
    {"amenity": "cafe", "name": "Kahvila"},
    {"shop": "bakery"},
    {"building": "apartments", "building:levels": "5"},
    {"leisure": "park"},
    {"amenity": "school"},
)


@dataclass
class BundleParts:
    """The in-memory bundle handed to ``mutate`` before anything is written.

    Attributes:
        root: The bundle directory.
        manifest: The city.toml content (name, optional crs, layers, labels).
        layers: Layer name -> frame; each is written to the path in ``manifest["layers"]``.
        labels: Label name -> CSV frame; written to ``manifest["labels"][name]["path"]``.
        toml_text: When set, written verbatim as city.toml instead of ``manifest``.
        files: Extra files to write, bundle-relative path -> bytes.
    """

    root: Path
    manifest: dict[str, Any]
    layers: dict[str, pd.DataFrame]
    labels: dict[str, pd.DataFrame]
    toml_text: str | None = None
    files: dict[str, bytes] = field(default_factory=dict)


def lonlat(x_m: float, y_m: float) -> tuple[float, float]:
    """(lon, lat) of a point x_m metres east and y_m metres north of the origin."""
    lat = LAT0 + y_m / 110_574.0
    lon = LON0 + x_m / (111_320.0 * math.cos(math.radians(LAT0)))
    return lon, lat


def point(x_m: float, y_m: float) -> Point:
    """Shapely Point at local metric offsets from the origin."""
    return Point(*lonlat(x_m, y_m))


def square(x0: float, y0: float, size: float) -> Any:
    """Axis-aligned lon/lat polygon of about ``size`` metres a side."""
    (lon0, lat0), (lon1, lat1) = lonlat(x0, y0), lonlat(x0 + size, y0 + size)
    return box(lon0, lat0, lon1, lat1)


def png_bytes(color: tuple[int, int, int] = (90, 140, 60), size: int = 8) -> bytes:
    """A tiny valid PNG."""
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def poi_xy(n: int) -> list[tuple[float, float]]:
    """Metric offsets of the n POIs: a 100 m grid, 3 per row."""
    return [(100.0 * (i % 3), 100.0 * (i // 3)) for i in range(n)]


WGS84 = CRS.from_user_input("EPSG:4326")


def _gdf(data: dict[str, Any]) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(data, geometry="geometry", crs=WGS84)


def default_parts(root: Path, n_pois: int, with_layers: Iterable[str]) -> BundleParts:
    """Build the valid in-memory bundle that ``make_bundle`` writes."""
    with_layers = tuple(with_layers)
    unknown = set(with_layers) - set(ALL_LAYERS)
    if unknown:
        raise ValueError(f"unknown layers {sorted(unknown)}; choose from {ALL_LAYERS}")
    xy = poi_xy(n_pois)
    pois = _gdf(
        {
            "poi_id": [f"p{i}" for i in range(n_pois)],
            "tags": [json.dumps(TAG_CYCLE[i % len(TAG_CYCLE)]) for i in range(n_pois)],
            "geometry": [point(x, y) for x, y in xy],
        }
    )
    footprints = [square(x - 5, y - 5, 10) for x, y in xy]
    if n_pois > 1:
        footprints[-1] = None  # footprints are optional per POI
    pois["footprint"] = gpd.GeoSeries(footprints, crs=WGS84)
    layers: dict[str, pd.DataFrame] = {"pois": pois}
    if "regions" in with_layers:
        corners = [(-50, -50), (150, -50), (-50, 150), (150, 150)]
        layers["regions"] = _gdf(
            {
                "region_id": [f"r{i}" for i in range(4)],
                "geometry": [square(x, y, 200) for x, y in corners],
            }
        )
    if "roads" in with_layers:
        layers["roads"] = _gdf(
            {
                "road_id": ["w1", "w2"],
                "tags": [json.dumps({"highway": "primary"}), json.dumps({"highway": "footway"})],
                "geometry": [
                    LineString([lonlat(-50, 50), lonlat(350, 50)]),
                    LineString([lonlat(50, -50), lonlat(50, 350)]),
                ],
            }
        )
    if "svi" in with_layers:
        ids = ["s0", "s1", "s2"]
        svi = {"svi_id": ids, "geometry": [point(50, 0), point(150, 100), point(250, 50)]}
        for d in ("east", "south", "west", "north"):
            svi[d] = [f"images/svi/{i}_{d}.png" for i in ids]
        layers["svi"] = _gdf(svi)
    if "satellite" in with_layers:
        rids = [f"r{i}" for i in range(4)]
        layers["satellite"] = pd.DataFrame(
            {"region_id": rids, "image": [f"images/sat/{r}.png" for r in rids]}
        )
    if "trajectories" in with_layers:
        # written out of order on purpose: City sorts by (traj_id, t)
        rows = [
            ("t1", 2, 200, 0),
            ("t0", 0, 0, 0),
            ("t0", 1, 100, 0),
            ("t1", 0, 0, 100),
            ("t0", 2, 100, 100),
            ("t1", 1, 100, 100),
            ("t0", 3, 200, 100),
        ]
        layers["trajectories"] = _gdf(
            {
                "traj_id": [r[0] for r in rows],
                "t": [r[1] for r in rows],
                "geometry": [point(r[2], r[3]) for r in rows],
            }
        )
    manifest: dict[str, Any] = {
        "name": "tinytown",
        "layers": {name: f"{name}.parquet" for name in layers},
        "labels": {},
    }
    labels: dict[str, pd.DataFrame] = {}
    manifest["labels"]["function"] = {
        "path": "labels/function.csv",
        "level": "poi",
        "kind": "classification",
    }
    labels["function"] = pd.DataFrame(
        {"poi_id": pois["poi_id"], "label": [i % 2 for i in range(n_pois)]}
    )
    if "regions" in layers:
        manifest["labels"]["population"] = {
            "path": "labels/population.csv",
            "level": "region",
            "kind": "regression",
        }
        labels["population"] = pd.DataFrame(
            {"region_id": layers["regions"]["region_id"], "value": [10.5, 3.0, 0.0, 7.25]}
        )
    return BundleParts(root=root, manifest=manifest, layers=layers, labels=labels)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def to_toml(manifest: dict[str, Any]) -> str:
    """Write a manifest (scalars, one level of tables, and [labels.<name>]) as TOML."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in manifest.items() if not isinstance(v, dict)]
    for key, table in manifest.items():
        if not isinstance(table, dict):
            continue
        plain = {k: v for k, v in table.items() if not isinstance(v, dict)}
        if plain or not table:
            lines += ["", f"[{key}]"] + [
                f"{json.dumps(k)} = {_toml_value(v)}" for k, v in plain.items()
            ]
        for sub, subtable in table.items():
            if isinstance(subtable, dict):
                lines += ["", f"[{key}.{json.dumps(sub)}]"]
                lines += [f"{k} = {_toml_value(v)}" for k, v in subtable.items()]
    return "\n".join(lines) + "\n"


def write_parts(parts: BundleParts) -> Path:
    """Write a BundleParts to disk (layers, labels, extra files, city.toml)."""
    root = parts.root
    root.mkdir(parents=True, exist_ok=True)
    paths = parts.manifest.get("layers", {})
    for name, frame in parts.layers.items():
        rel = paths.get(name, f"{name}.parquet") if isinstance(paths, dict) else f"{name}.parquet"
        out = root / str(rel)
        out.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(frame, gpd.GeoDataFrame):
            frame.to_parquet(out)
        else:
            frame.to_parquet(out, index=False)
    specs = parts.manifest.get("labels", {})
    for name, frame in parts.labels.items():
        out = root / str(specs.get(name, {}).get("path", f"labels/{name}.csv"))
        out.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(out, index=False)
    for rel, data in parts.files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    text = parts.toml_text if parts.toml_text is not None else to_toml(parts.manifest)
    (root / "city.toml").write_text(text, encoding="utf-8")
    return root


def make_bundle(
    root: Path,
    *,
    n_pois: int = 6,
    with_layers: Iterable[str] = ALL_LAYERS,
    mutate: Callable[[BundleParts], None] | None = None,
) -> Path:
    """Write a tiny valid bundle (optionally broken by ``mutate``) and return its root.

    Args:
        root: Directory to write (created; may already exist).
        n_pois: Number of POIs, on a 100 m grid with 3 per row.
        with_layers: Optional layers to include besides pois.
        mutate: Called with the BundleParts before writing, to change or break them.
            Image files are written for the unmutated svi/satellite paths.

    Returns:
        ``root``.
    """
    root = Path(root)
    parts = default_parts(root, n_pois, with_layers)
    png = png_bytes()
    for name, cols in (("svi", ("east", "south", "west", "north")), ("satellite", ("image",))):
        if name in parts.layers:
            for col in cols:
                for rel in parts.layers[name][col]:
                    parts.files[rel] = png
    if mutate is not None:
        mutate(parts)
    return write_parts(parts)
