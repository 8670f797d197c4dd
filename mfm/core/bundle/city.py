"""The City bundle: reading and indexing a city directory (DESIGN §5).

A bundle is a directory with a ``city.toml`` manifest and GeoParquet layers in EPSG:4326.
:meth:`City.load` validates it first (:mod:`mfm.core.bundle.validate`) and raises a one-line
:class:`~mfm.core.errors.CityError` when anything is wrong.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mfm.core.bundle.problems import ProblemReport, one_line_error
from mfm.core.bundle.rules import LAYER_RULES, TIME, LabelSpec
from mfm.core.bundle.validate import check_bundle, label_frame, parse_crs
from mfm.core.constants import (
    CITY_MANIFEST,
    FOOTPRINT,
    GEOMETRY,
    LAYERS,
    LEVEL_ID,
    LEVEL_LAYER,
    POI_ID,
    TAGS,
    TRAJ_ID,
    WGS84,
)
from mfm.core.errors import CityError

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = ["City"]


@dataclass(eq=False, repr=False)
class City:
    """A validated City bundle with cached spatial helpers.

    Build one with :meth:`City.load`. Layers are in EPSG:4326 with string ids and a
    0..N-1 index; metric work (distances, areas) uses :attr:`crs`.

    Attributes:
        root: The bundle directory.
        name: ``name`` from city.toml (default: the directory name).
        crs: Metric CRS: ``crs`` from city.toml, else the UTM zone of the POIs.
        pois: ``poi_id``, ``geometry`` (Point), ``tags`` (JSON string), optional
            ``footprint`` (Polygon/MultiPolygon, None where missing), extra columns kept;
            no rows when the bundle has no pois layer (``has("pois")`` is then False).
        roads, regions, svi, satellite: The optional layers, None when absent.
        trajectories: Points sorted by ``traj_id`` then ``t``.
        od: Trips or flow counts between regions: ``origin``, ``destination`` (region ids),
            ``count``, optional ``slot``.
        labels: Labelled tasks by name.
        files: Layer name -> bundle-relative file path.
        label_files: Label name -> bundle-relative CSV path.
    """

    root: Path
    name: str
    crs: str
    pois: gpd.GeoDataFrame
    roads: gpd.GeoDataFrame | None = None
    regions: gpd.GeoDataFrame | None = None
    svi: gpd.GeoDataFrame | None = None
    satellite: pd.DataFrame | None = None
    trajectories: gpd.GeoDataFrame | None = None
    od: pd.DataFrame | None = None
    labels: dict[str, LabelSpec] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    label_files: dict[str, str] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict, init=False)

    @classmethod
    def load(cls, root: Path | str) -> City:
        """Validate and read a bundle.

        Raises:
            CityError: One line naming the first problem and how many more there are.
        """
        root = Path(root)
        problems, parsed = check_bundle(root)
        if problems:
            raise one_line_error(problems, root)
        frames = {k: _normalize(k, v) for k, v in parsed.frames.items()}
        frames.setdefault("pois", _no_pois())
        crs = parsed.crs or _guess_utm(frames["pois" if "pois" in parsed.frames else "regions"])
        city = cls(
            root=root,
            name=parsed.name,
            crs=crs,
            labels=parsed.labels,
            files=parsed.files,
            label_files=parsed.label_files,
            **frames,
        )
        city._cache["tags"] = parsed.tags
        return city

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(getattr(self, k))}" for k in LAYERS if self.has(k))
        return f"City({self.name!r}, {sizes}, crs={self.crs!r}, labels={sorted(self.labels)})"

    def has(self, layer: str) -> bool:
        """Whether the bundle has ``layer`` (one of LAYERS)."""
        if layer == "pois":
            return "pois" in self.files
        return layer in LAYERS and getattr(self, layer) is not None

    def layer(self, layer: str) -> pd.DataFrame:
        """Return a layer's frame; CityError when the bundle lacks it (pois: no rows)."""
        if not self.has(layer) and layer != "pois":
            raise CityError(
                f"city {self.name!r} ({self.root}) has no {layer} layer; add layers.{layer} "
                f"to {CITY_MANIFEST} or drop the plugin that needs it"
            )
        return getattr(self, layer)

    def path(self, rel: str | Path) -> Path:
        """Turn a bundle-relative path (e.g. an image path) into an absolute one."""
        return self.root / rel

    def poi_tags(self) -> list[dict[str, str]]:
        """Parsed POI tags, one dict per POI (cached)."""
        if self._cache.get("tags") is None:
            self._cache["tags"] = [json.loads(t) for t in self.pois[TAGS]]
        return self._cache["tags"]

    def _metric(self, layer: str) -> Any:
        key = f"metric:{layer}"
        if key not in self._cache:
            self._cache[key] = self.layer(layer).geometry.to_crs(self.crs)
        return self._cache[key]

    def xy(self, layer: str) -> np.ndarray:
        """Metric (x, y) in :attr:`crs`, float64 [N, 2] (regions/roads: centroids), cached."""
        key = f"xy:{layer}"
        if key not in self._cache:
            if layer == "satellite" or layer not in LAYERS:
                raise CityError(
                    f"layer {layer!r} has no coordinates; use pois, roads, "
                    "regions, svi or trajectories"
                )
            geoms = self._metric(layer)
            if layer in ("regions", "roads"):
                geoms = geoms.centroid
            xy = np.column_stack([geoms.x.to_numpy(), geoms.y.to_numpy()]).astype(np.float64)
            xy.flags.writeable = False
            self._cache[key] = xy
        return self._cache[key]

    def poi_region(self) -> np.ndarray:
        """Index into regions of the region holding each POI (nearest if none), -1 if none."""
        if "poi_region" not in self._cache:
            out = np.full(len(self.pois), -1, dtype=np.int64)
            if self.has("regions") and self.has("pois"):
                out = _assign_regions(
                    self._metric("pois").to_numpy(), self._metric("regions").to_numpy()
                )
            out.flags.writeable = False
            self._cache["poi_region"] = out
        return self._cache["poi_region"]

    def region_area_m2(self) -> np.ndarray:
        """Area of each region in square metres (in :attr:`crs`), float64 [N_regions]."""
        if "area" not in self._cache:
            area = self._metric("regions").area.to_numpy(dtype=np.float64)
            area.flags.writeable = False
            self._cache["area"] = area
        return self._cache["area"]

    def poi_counts(self) -> np.ndarray:
        """Number of POIs in each region, int64 [N_regions]."""
        owner = self.poi_region()
        return np.bincount(owner[owner >= 0], minlength=len(self.regions))

    def region_size(self) -> np.ndarray:
        """Each region's size ``[N_regions, 3]``: log(1 + POIs), log area in km², log(1 +
        POIs per km²): what a mean over the region's POIs cannot say."""
        n = self.poi_counts().astype(np.float64)
        km2 = np.maximum(self.region_area_m2() / 1e6, 1e-6)
        return np.column_stack([np.log1p(n), np.log(km2), np.log1p(n / km2)])

    def fingerprint(self, layer: str) -> str:
        """Short sha256 (16 hex chars) of a layer file's bytes; ``"labels:<name>"`` for labels."""
        key = f"fp:{layer}"
        if key not in self._cache:
            if layer.startswith("labels:"):
                name = layer.split(":", 1)[1]
                path = self._label(name).path
            elif self.has(layer):
                path = self.path(self.files[layer])
            else:
                raise CityError(f"no layer {layer!r} in city {self.name!r} to fingerprint")
            digest = hashlib.sha256()
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
            self._cache[key] = digest.hexdigest()[:16]
        return self._cache[key]

    def _label(self, name: str) -> LabelSpec:
        if name not in self.labels:
            have = ", ".join(sorted(self.labels)) or "none"
            raise CityError(f"unknown label {name!r} in {self.root / CITY_MANIFEST}; have: {have}")
        return self.labels[name]

    def read_labels(self, name: str) -> pd.DataFrame:
        """Read a labelled task: columns ``id`` (str) and ``value`` or ``label``.

        Raises:
            CityError: Unknown name, or a file/column problem (one line).
        """
        spec = self._label(name)
        layer = LEVEL_LAYER[spec.level]
        frame = self.layer(layer)
        rep = ProblemReport()
        df = label_frame(
            rep, self.label_files[name], spec, frame[LEVEL_ID[spec.level]], self.files[layer]
        )
        if df is None:
            raise one_line_error(rep.problems, self.root)
        return df


def _normalize(layer: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Set EPSG:4326 on geometry columns and sort trajectories by (traj_id, t)."""
    import geopandas as gpd

    wgs84 = parse_crs(json.dumps(WGS84))
    if isinstance(frame, gpd.GeoDataFrame):
        for col in (GEOMETRY, FOOTPRINT):
            if col in frame.columns and isinstance(frame[col], gpd.GeoSeries):
                frame[col] = frame[col].set_crs(wgs84, allow_override=True)
        frame = frame.set_crs(wgs84, allow_override=True)
    rule = LAYER_RULES[layer]
    frame[rule.id] = frame[rule.id].astype(str)
    if layer == "od":
        frame["destination"] = frame["destination"].astype(str)
        frame["count"] = pd.to_numeric(frame["count"]).astype(np.float64)
    if layer == "trajectories":
        frame = frame.sort_values([TRAJ_ID, TIME], kind="stable").reset_index(drop=True)
    return frame


def _no_pois() -> gpd.GeoDataFrame:
    """The pois of a bundle without a pois layer: no rows, the usual columns."""
    import geopandas as gpd

    return gpd.GeoDataFrame({POI_ID: [], TAGS: []}, geometry=gpd.GeoSeries([]), crs=WGS84)


def _guess_utm(layer: gpd.GeoDataFrame) -> str:
    """The WGS84 UTM zone (EPSG:326xx north, 327xx south) of a layer's bounding-box centre."""
    minx, miny, maxx, maxy = layer.geometry.total_bounds
    lon, lat = (minx + maxx) / 2, (miny + maxy) / 2
    zone = int((lon + 180.0) // 6.0) % 60 + 1
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"


def _assign_regions(points: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Containing region per point (lowest index on ties), else the nearest one."""
    import shapely

    tree = shapely.STRtree(regions)
    out = np.full(len(points), -1, dtype=np.int64)
    pt, rg = tree.query(points, predicate="intersects")
    if len(pt):
        order = np.lexsort((rg, pt))
        pt, rg = pt[order], rg[order]
        first = np.r_[True, pt[1:] != pt[:-1]]
        out[pt[first]] = rg[first]
    rest = np.flatnonzero(out < 0)
    if len(rest):
        pt, rg = tree.query_nearest(points[rest], all_matches=False)
        out[rest[pt]] = rg
    return out
