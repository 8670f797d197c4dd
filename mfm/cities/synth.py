"""Synthetic city generator: a deterministic City bundle with planted multimodal structure.

The city lies around Zurich (47.37 N, 8.54 E) and is generated in metres (UTM 32N). Streets
form a jittered grid with arterials and diagonals; regions are the blocks obtained by
polygonizing the noded street network (the paper's road-network segmentation). Each region
has hidden variables (land-use mix, floors, footprint scale, greenery, water, built-up share,
job density) that are spatially smooth plus per-region noise. The evidence is split across
modalities so that each one carries something the others lack:

- OSM tags (text): land-use mix through POI categories; about 30% of POIs carry only
  uninformative tags ({"building": "yes"}, a name or an address), so tags alone cannot
  resolve building function.
- Polygon footprints (~60% of POIs): footprint area and shape (small houses, L-shapes,
  large rectangles for offices and industry, U-shapes for schools) follow the building
  function and the region's footprint scale; neither appears in the tags.
- Street view (four directions per sampling point): building height (facade size and
  number of window rows) and facade colour by function; a few trees at the bottom edge.
  Height is visible only here.
- Satellite tiles (one per region): greenery (green pixels), roof density (built-up share)
  and water. Greenery is visible only here (and weakly as trees in street view).
- Trajectories: morning commutes end in job-rich regions, so job density is visible only in
  trip destinations.

Labels are functions of the hidden truth plus noise: population density (residential share,
floors, built-up share, footprint scale), a price index (greenery, floors, access to jobs,
commercial share, waterfront) and the building function of each POI (8 classes).
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer
from scipy.spatial import cKDTree

from mfm.cities import synth_images as img
from mfm.cities.bundle import Staging, new_bundle
from mfm.core.constants import (
    FOOTPRINT,
    GEOMETRY,
    LAYERS,
    POI_ID,
    REGION_ID,
    ROAD_ID,
    SVI_DIRECTIONS,
    SVI_ID,
    TAGS,
    TRAJ_ID,
    WGS84,
)
from mfm.core.errors import ConfigError

MODALITY_EVIDENCE: dict[str, str] = {
    "tags": "land-use mix via POI categories; ~30% of POIs have uninformative tags",
    "footprint": "building footprint area and shape by function and region footprint scale",
    "svi": "building height (facade size, window rows) and facade colour by function",
    "satellite": "greenery, roof density (built-up share) and water of each region",
    "trajectories": "job density through the destinations of morning commutes",
}

Size = Literal["tiny", "small", "medium", "large"]
# fmt: off
CLASSES = (
    "residential", "commercial", "office", "industrial", "education", "healthcare", "civic",
    "leisure",
)
# fmt: on
METRIC_CRS = "EPSG:32632"
CENTRE_LONLAT = (8.54, 47.37)
UNINFORMATIVE_SHARE = 0.3
FOOTPRINT_SHARE = 0.6
PARALLEL_IMAGES = 20_000  # save images in worker processes above this many


@dataclass(frozen=True)
class SizeSpec:
    """Target scale of one city size."""

    grid: tuple[int, int]
    pois: int
    svi: int
    trajectories: int
    diagonals: int


SIZES: dict[str, SizeSpec] = {
    "tiny": SizeSpec((4, 4), 150, 40, 30, 0),
    "small": SizeSpec((8, 9), 1_500, 400, 300, 1),
    "medium": SizeSpec((17, 18), 8_000, 3_000, 2_000, 1),
    "large": SizeSpec((55, 56), 64_000, 34_000, 20_000, 3),
}

# fmt: off
_CLASS_TRAITS = np.array([
    # floors factor, footprint m2, aspect range, P(rectangle, L, U, octagon)
    [1.0, 170.0, 1.0, 1.6, 0.65, 0.35, 0.0, 0.0],  # residential: small houses, some L
    [0.9, 420.0, 1.0, 2.0, 0.8, 0.2, 0.0, 0.0],  # commercial
    [1.5, 1300.0, 1.0, 1.5, 0.85, 0.15, 0.0, 0.0],  # office: large, compact, tall
    [0.35, 3200.0, 1.6, 3.5, 1.0, 0.0, 0.0, 0.0],  # industrial: huge elongated sheds, low
    [0.6, 1600.0, 1.0, 1.8, 0.1, 0.4, 0.5, 0.0],  # education: L and U wings
    [0.9, 1400.0, 1.0, 1.6, 0.3, 0.4, 0.3, 0.0],  # healthcare
    [0.7, 650.0, 1.0, 1.3, 0.6, 0.2, 0.0, 0.2],  # civic
    [0.5, 1100.0, 1.4, 2.6, 0.6, 0.0, 0.0, 0.4],  # leisure: halls and round arenas
])
CLASS_HEIGHT, CLASS_AREA = _CLASS_TRAITS[:, 0], _CLASS_TRAITS[:, 1]
CLASS_ASPECT, CLASS_SHAPES = _CLASS_TRAITS[:, 2:4], _CLASS_TRAITS[:, 4:]

# Informative OSM tags per class: templates separated by spaces, "key=value" pairs by commas.
# A few templates are shared between classes ("building=commercial", "building=public").
_TAGS_BY_CLASS = {
    "residential": "building=apartments building=house building=residential building=detached"
                   " building=terrace",
    "commercial": "shop=supermarket amenity=restaurant,cuisine=pizza amenity=cafe shop=bakery"
                  " amenity=restaurant,cuisine=regional shop=clothes building=commercial",
    "office": "office=company office=it building=office office=insurance building=commercial",
    "industrial": "building=industrial man_made=works building=warehouse landuse=industrial"
                  " craft=metal_construction",
    "education": "amenity=school amenity=kindergarten amenity=university amenity=library"
                 " building=public",
    "healthcare": "amenity=pharmacy amenity=clinic amenity=doctors amenity=hospital"
                  " healthcare=dentist",
    "civic": "amenity=townhall amenity=police amenity=post_office amenity=fire_station"
             " office=government building=public",
    "leisure": "leisure=sports_centre leisure=fitness_centre amenity=cinema tourism=museum"
               " amenity=theatre amenity=restaurant,cuisine=regional",
}
# fmt: on
_TAG_TEMPLATES = {
    cls: [dict(kv.split("=") for kv in template.split(",")) for template in spec.split()]
    for cls, spec in _TAGS_BY_CLASS.items()
}
# fmt: off
_NAME_STEMS = (
    "Linden", "Birken", "Eichen", "Rosen", "Berg", "See", "Wald", "Muehle", "Kirch", "Garten",
    "Bahnhof", "Sonnen", "Hof", "Feld", "Tal", "Brunnen", "Burg", "Markt", "Wiesen", "Ahorn",
    "Tannen", "Reben", "Stein", "Bach", "Heu", "Quell", "Kreuz", "Platz",
)
# fmt: on
_STREET_SUFFIXES = ("strasse", "weg", "gasse", "ring", "rain")


@dataclass
class Network:
    """Street network in metres: noded road lines, their tags and the blocks (regions)."""

    roads: np.ndarray
    road_tags: list[dict[str, str]]
    regions: np.ndarray
    extent: tuple[float, float]


@dataclass
class Latents:
    """Hidden per-region truth (arrays of length R)."""

    shares: np.ndarray
    floors: np.ndarray
    fp_scale: np.ndarray
    greenery: np.ndarray
    water: np.ndarray
    built: np.ndarray
    jobs: np.ndarray
    population: np.ndarray
    price: np.ndarray


def generate_city(out: Path, size: Size = "small", seed: int = 0, progress: bool = False) -> Path:
    """Generate a synthetic City bundle into the directory ``out`` and return it.

    The bundle is written into a hidden sibling directory and renamed at the end, so an
    interrupted run never leaves a half-written bundle at ``out``.

    Args:
        out: target directory; must not exist or be empty.
        size: one of ``tiny``, ``small``, ``medium``, ``large``.
        seed: random seed; the same seed and size give the same bundle.
        progress: show a rich progress bar.
    """
    if size not in SIZES:
        raise ConfigError(f"unknown city size {size!r}; choose one of {', '.join(SIZES)}")
    name = f"synthetic-{size}-seed{seed}"
    with new_bundle(out, name, METRIC_CRS) as staging, _Progress(progress) as bar:
        _build(staging, SIZES[size], seed, bar)
    return Path(out)


class _Progress:
    """A rich progress bar, or nothing when disabled."""

    def __init__(self, enabled: bool) -> None:
        self._bar = None
        if enabled:
            from rich.progress import Progress

            self._bar = Progress(transient=False)

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def task(self, label: str, total: int) -> Callable[[int], None]:
        """Start a task; return a function that advances it."""
        if self._bar is None:
            return lambda n: None
        bar, task_id = self._bar, self._bar.add_task(label, total=total)
        return lambda n: bar.advance(task_id, n)


def _rng(seed: int, stage: int) -> np.random.Generator:
    """An independent generator per stage, so stages do not shift each other's draws."""
    return np.random.default_rng([seed, stage])


def _build(staging: Staging, spec: SizeSpec, seed: int, bar: _Progress) -> None:
    """Generate every layer into the staging bundle."""
    root = staging.root
    step = bar.task("synthesising city", 6)
    net = _street_network(_rng(seed, 1), spec)
    river = _river(_rng(seed, 2), net.extent)
    area = shapely.area(net.regions)
    water = shapely.area(shapely.intersection(net.regions, river.polygon)) / area
    lat = _latents(_rng(seed, 3), net, river, water)
    land = _land(net.regions, river)
    step(1)
    pois = _pois(_rng(seed, 4), spec, net, lat, land)
    step(1)
    svi = _svi(_rng(seed, 5), spec, net, lat, pois)
    trips = _trajectories(_rng(seed, 6), spec, net, lat, land)
    step(1)
    for sub in ("labels", "images/svi", "images/sat"):
        (root / sub).mkdir(parents=True)
    n_images = len(SVI_DIRECTIONS) * len(svi.xy) + len(net.regions)
    with _ImageSink(parallel=n_images > PARALLEL_IMAGES) as sink:
        _write_svi_images(_rng(seed, 7), root, svi, sink, bar)
        _write_satellite(_rng(seed, 8), root, net, lat, river, sink, bar)
    step(1)
    frame = _Frame(net.extent)
    _write_layers(root, frame, net, pois, svi, trips)
    _write_labels(root, net, lat, pois)
    _declare(staging.manifest)
    step(2)


# --- street network and regions -----------------------------------------------------------


def _street_names(rng: np.random.Generator, n: int) -> list[str]:
    stems = rng.choice(len(_NAME_STEMS), n)
    suffix = rng.choice(len(_STREET_SUFFIXES), n)
    return [f"{_NAME_STEMS[a]}{_STREET_SUFFIXES[b]}" for a, b in zip(stems, suffix, strict=True)]


def _street_network(rng: np.random.Generator, spec: SizeSpec) -> Network:
    """Jittered street grid with arterials and diagonals, noded and polygonized into blocks."""
    nx, ny = spec.grid
    xs = np.concatenate([[0.0], np.cumsum(rng.uniform(150.0, 250.0, nx))])
    ys = np.concatenate([[0.0], np.cumsum(rng.uniform(150.0, 250.0, ny))])
    grid = np.stack(np.meshgrid(xs, ys, indexing="ij"), axis=-1)
    grid += np.clip(rng.normal(0.0, 18.0, grid.shape), -45.0, 45.0)

    # Edges of the grid, each tagged with the grid line it belongs to.
    i, j = (k.ravel() for k in np.meshgrid(np.arange(nx + 1), np.arange(ny + 1), indexing="ij"))
    h, v = i < nx, j < ny  # start of an eastward / northward edge
    a = np.concatenate([grid[i[h], j[h]], grid[i[v], j[v]]])
    b = np.concatenate([grid[i[h] + 1, j[h]], grid[i[v], j[v] + 1]])
    pos = np.concatenate([j[h], i[v]])  # index of the street line among its direction
    line = np.concatenate([j[h], ny + 1 + i[v]])  # street line id
    border = np.concatenate([j[h] % ny == 0, i[v] % nx == 0])
    kind = np.where(border, "secondary", np.where(pos % 4 == 2, "primary", "residential"))
    kind = np.where((kind == "residential") & (pos % 4 == 0), "tertiary", kind)
    keep = ~((kind == "residential") & (rng.uniform(0.0, 1.0, len(a)) < 0.07))
    a, b, line, kind = a[keep], b[keep], line[keep], kind[keep]
    d = b - a
    bend = (a + b) / 2 + rng.normal(0.0, 5.0, (len(a), 1)) * d[:, ::-1] * [1, -1] / 200.0
    lines = list(shapely.linestrings(np.stack([a, bend, b], axis=1)))
    n_lines = nx + ny + 2
    names = _street_names(rng, n_lines + spec.diagonals)
    tags = [{"highway": str(k), "name": names[ln]} for k, ln in zip(kind, line, strict=True)]

    extent = (float(grid[..., 0].max()), float(grid[..., 1].max()))
    for k in range(spec.diagonals):
        centre = np.array(extent) * rng.uniform(0.3, 0.7, 2)
        angle = rng.uniform(0.35, 1.2) + k * np.pi / 2
        reach = np.hypot(*extent) * np.array([np.cos(angle), np.sin(angle)])
        lines.append(shapely.LineString([centre - reach, centre + reach]))
        tags.append({"highway": "primary", "name": names[n_lines + k]})

    originals = np.array(lines, dtype=object)
    noded = shapely.get_parts(shapely.union_all(originals))
    blocks = shapely.get_parts(shapely.polygonize(noded))
    blocks = blocks[shapely.area(blocks) > 500.0]
    centre = shapely.centroid(blocks)
    order = np.lexsort((shapely.get_x(centre), np.round(shapely.get_y(centre), -1)))
    blocks = blocks[order]

    # Keep only the noded pieces inside the city (drops the diagonals' outer stubs).
    city = shapely.buffer(shapely.union_all(blocks), 1.0)
    mid = shapely.line_interpolate_point(noded, 0.5, normalized=True)
    inside = shapely.contains_xy(city, shapely.get_x(mid), shapely.get_y(mid))
    noded, mid = noded[inside], mid[inside]
    source = shapely.STRtree(originals).query_nearest(mid, all_matches=False)[1]
    return Network(noded, [tags[s] for s in source], blocks, extent)


def _river_y(x: np.ndarray, params: tuple[float, float, float, float]) -> np.ndarray:
    """Centre line of the river: a sinusoid across the city."""
    y0, amp, wavelength, phase = params
    return y0 + amp * np.sin(2 * np.pi * x / wavelength + phase)


@dataclass
class River:
    """A river crossing the city west to east: its centre-line parameters and polygon."""

    params: tuple[float, float, float, float]
    polygon: shapely.Polygon
    half_width: float = 18.0

    def covers(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Whether points lie on the water (vertical distance to the centre line)."""
        return np.abs(y - _river_y(x, self.params)) < self.half_width


def _river(rng: np.random.Generator, extent: tuple[float, float]) -> River:
    """A sinusoidal river across the city, 36 m wide."""
    w, h = extent
    params = (h * rng.uniform(0.25, 0.75), 0.08 * h, w * rng.uniform(0.8, 1.4), rng.uniform(0, 6))
    x = np.linspace(-100.0, w + 100.0, 200)
    line = shapely.LineString(np.column_stack([x, _river_y(x, params)]))
    return River(params, shapely.buffer(line, River.half_width))


def _land(regions: np.ndarray, river: River) -> np.ndarray:
    """Buildable land per region: the block minus the river, set back from the street."""
    land = shapely.buffer(shapely.difference(regions, river.polygon), -6.0)
    empty = shapely.is_empty(land) | (shapely.area(land) < 50.0)
    land[empty] = regions[empty]
    shapely.prepare(land)
    return land


# --- hidden truth ---------------------------------------------------------------------------


def _field(rng: np.random.Generator, xy: np.ndarray, extent: tuple, scale: float) -> np.ndarray:
    """A smooth random field at ``xy``: a sum of Gaussian bumps, standardized."""
    n = max(8, int(2 * extent[0] * extent[1] / scale**2))
    centres = rng.uniform(0.0, 1.0, (n, 2)) * extent
    d2 = ((xy[:, None, :] - centres[None]) ** 2).sum(-1)
    f = (np.exp(-d2 / (2 * scale**2)) * rng.normal(0.0, 1.0, n)).sum(1)
    return (f - f.mean()) / (f.std() + 1e-9)


def _bumps(
    rng: np.random.Generator, xy: np.ndarray, centres: np.ndarray, sigma: float
) -> np.ndarray:
    """Max over Gaussian bumps with random amplitudes in [0.6, 1]."""
    amp = rng.uniform(0.6, 1.0, len(centres))
    d2 = ((xy[:, None, :] - centres[None]) ** 2).sum(-1)
    return (amp * np.exp(-d2 / (2 * sigma**2))).max(1)


def _centres(rng: np.random.Generator, xy: np.ndarray, extent: tuple) -> dict[str, np.ndarray]:
    """Smooth urban structure at ``xy`` in [0, 1]: downtown, industrial zones and parks."""
    ext = np.array(extent)
    side, km2, mid = ext.min(), ext.prod() / 1e6, ext / 2
    main = mid + ext * rng.uniform(-0.1, 0.1, 2)
    subs = rng.uniform(0, 1, (int(km2 // 12), 2)) * ext
    cbd = np.exp(-((xy - main) ** 2).sum(1) / (2 * (0.25 * side) ** 2))
    if len(subs):
        cbd = np.maximum(cbd, 0.8 * _bumps(rng, xy, subs, float(np.clip(0.1 * side, 350, 900))))
    ang = rng.uniform(0, 2 * np.pi, 1 + int(km2 // 8))
    ring = 0.4 * side * rng.uniform(0.8, 1.2, (len(ang), 1))
    ind_c = mid + ring * np.column_stack([np.cos(ang), np.sin(ang)])
    ind = _bumps(rng, xy, ind_c, float(np.clip(0.12 * side, 200, 700)))
    # Parks and woods mostly away from downtown.
    spots = rng.uniform(0, 1, (8 * (1 + int(km2 / 1.2)), 2)) * ext
    far = np.argsort(np.linalg.norm(spots - main, axis=1) < 0.3 * side, kind="stable")
    park = _bumps(rng, xy, spots[far[: 1 + int(km2 / 1.2)]], 250.0)
    return {"cbd": cbd, "ind": ind, "park": park}


def _latents(rng: np.random.Generator, net: Network, river: River, water: np.ndarray) -> Latents:
    """Draw the hidden per-region variables and the labels that depend on them."""
    centre = shapely.centroid(net.regions)
    xy = shapely.get_coordinates(centre)
    r = len(xy)
    c = _centres(rng, xy, net.extent)
    cbd, ind, park = c["cbd"], c["ind"], c["park"]
    keys = ("res", "com", "hgt", "grn", "fp", "job", "blt")
    noise = {k: _field(rng, xy, net.extent, 500.0) for k in keys}

    logits = np.column_stack(
        [
            1.3 + 0.5 * noise["res"] - 0.3 * cbd,
            -0.6 + 1.2 * cbd + 0.4 * noise["com"],
            -1.8 + 2.0 * cbd,
            -2.4 + 4.0 * ind,
            np.full(r, -1.9),
            np.full(r, -2.2),
            -2.4 + 1.0 * cbd,
            -1.9 + 1.6 * park,
        ]
    ) + rng.normal(0.0, 0.35, (r, len(CLASSES)))
    shares = np.exp(logits - logits.max(1, keepdims=True))
    shares /= shares.sum(1, keepdims=True)

    floors = (2.5 + 9.0 * cbd) * np.exp(0.35 * noise["hgt"]) + rng.normal(0, 0.5, r)
    floors = np.clip(floors, 1.0, 40.0)
    greenery = 0.06 + 0.6 * park + 0.1 * noise["grn"] - 0.1 * cbd + rng.normal(0, 0.03, r)
    greenery = np.clip(greenery, 0.02, 0.85) * (1 - water)
    built = (0.92 - greenery - water) * (0.45 + 0.25 * cbd + 0.12 * noise["blt"])
    built = np.clip(built + rng.normal(0, 0.02, r), 0.03, 0.9)
    fp_scale = np.exp(0.35 * noise["fp"] + 0.5 * ind + 0.25 * cbd)
    job_mix = shares @ np.array([0.0, 1.6, 3.0, 1.2, 0.8, 0.8, 0.8, 0.5])
    jobs = 8000 * job_mix * floors * built * np.exp(0.45 * noise["job"] + rng.normal(0, 0.15, r))
    population = 12000 * shares[:, 0] * floors * built / fp_scale**0.3
    population *= rng.lognormal(0.0, 0.15, r)

    access = _job_access(xy, jobs * shapely.area(net.regions))
    waterfront = np.exp(-shapely.distance(centre, river.polygon) / 300.0)
    log_price = (
        3.0 * greenery
        + 0.25 * np.log(floors)
        + 0.35 * access
        + 0.8 * shares[:, 1]
        + 0.25 * waterfront
    )
    price = 100 * np.exp(log_price + rng.normal(0.0, 0.12, r))
    return Latents(shares, floors, fp_scale, greenery, water, built, jobs, population, price)


def _job_access(xy: np.ndarray, jobs: np.ndarray) -> np.ndarray:
    """Standardized log of the jobs reachable from each region (800 m decay, 2.5 km cut)."""
    tree = cKDTree(xy)
    pairs = tree.sparse_distance_matrix(tree, 2500.0, output_type="coo_matrix")
    near = np.exp(-pairs.data / 800.0) * jobs[pairs.col]
    log_access = np.log(np.bincount(pairs.row, weights=near, minlength=len(xy)) + jobs)
    return (log_access - log_access.mean()) / (log_access.std() + 1e-9)


# --- POIs -----------------------------------------------------------------------------------


@dataclass
class Pois:
    """POIs in metres with their hidden truth."""

    xy: np.ndarray
    region: np.ndarray
    cls: np.ndarray
    floors: np.ndarray
    area: np.ndarray
    footprint: np.ndarray
    tags: list[str]


def _sample_points(rng: np.random.Generator, polys: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """Uniform points inside ``polys[owner]`` by vectorized rejection sampling."""
    bounds = shapely.bounds(polys)
    xy = np.empty((len(owner), 2))
    todo = np.arange(len(owner))
    for _ in range(100):
        b = bounds[owner[todo]]
        x, y = rng.uniform(b[:, 0], b[:, 2]), rng.uniform(b[:, 1], b[:, 3])
        ok = shapely.contains_xy(polys[owner[todo]], x, y)
        xy[todo[ok]] = np.column_stack([x[ok], y[ok]])
        todo = todo[~ok]
        if not len(todo):
            return xy
    rest = shapely.point_on_surface(polys[owner[todo]])
    xy[todo] = np.column_stack([shapely.get_x(rest), shapely.get_y(rest)])
    return xy


def _unit_shapes() -> list[np.ndarray]:
    """Footprint templates (rectangle, L, U, octagon), centred, with unit area."""
    a = np.pi / 8 + np.arange(8) * np.pi / 4
    raw = [
        np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float),
        np.array([[0, 0], [1, 0], [1, 0.5], [0.5, 0.5], [0.5, 1], [0, 1]], float),
        np.array([[0, 0], [1, 0], [1, 1], [0.7, 1], [0.7, 0.4], [0.3, 0.4], [0.3, 1], [0, 1]]),
        np.column_stack([np.cos(a), np.sin(a)]),
    ]
    out = []
    for ring in raw:
        poly = shapely.Polygon(ring)
        c = shapely.get_coordinates(shapely.centroid(poly))[0]
        out.append((ring - c) / np.sqrt(poly.area))
    return out


_SHAPES = _unit_shapes()


def _footprints(
    rng: np.random.Generator, xy: np.ndarray, cls: np.ndarray, area: np.ndarray
) -> np.ndarray:
    """Building polygons centred on the POIs; shape and size follow the function."""
    n = len(xy)
    kind = np.minimum((rng.uniform(0, 1, n)[:, None] > CLASS_SHAPES[cls].cumsum(1)).sum(1), 3)
    aspect = np.sqrt(rng.uniform(CLASS_ASPECT[cls, 0], CLASS_ASPECT[cls, 1]))
    theta = rng.normal(0.0, 0.08, n) + np.pi / 2 * rng.integers(0, 2, n)
    stretch = np.sqrt(area)[:, None] * np.column_stack([aspect, 1 / aspect])
    cos, sin = np.cos(theta)[:, None], np.sin(theta)[:, None]
    out = np.empty(n, dtype=object)
    for k, shape in enumerate(_SHAPES):
        m = kind == k
        p = shape[None] * stretch[m][:, None, :]
        x = p[..., 0] * cos[m] - p[..., 1] * sin[m] + xy[m, :1]
        y = p[..., 0] * sin[m] + p[..., 1] * cos[m] + xy[m, 1:]
        if m.any():
            out[m] = shapely.polygons(np.stack([x, y], axis=-1))
    return out


def _tags(
    rng: np.random.Generator, cls: np.ndarray, informative: np.ndarray, street: list[str]
) -> list[str]:
    """OSM tags as JSON: class-specific when informative, else building=yes/name/address."""
    n = len(cls)
    pick = rng.uniform(0, 1, n)
    mode = rng.integers(0, 4, n)
    extra = rng.uniform(0, 1, (n, 2)) < [0.35, 0.3]
    number = rng.integers(1, 150, n)
    stem = rng.integers(0, len(_NAME_STEMS), n)
    suffix = rng.integers(0, 5, n)
    out = []
    for i in range(n):
        name = f"{_NAME_STEMS[stem[i]]}{('hof', 'haus', 'blick', 'egg', 'matt')[suffix[i]]}"
        addr = {"addr:street": street[i], "addr:housenumber": str(number[i])}
        if informative[i]:
            options = _TAG_TEMPLATES[CLASSES[cls[i]]]
            tags = dict(options[int(pick[i] * len(options))])
            tags.update({"name": name} if extra[i, 0] else {})
            tags.update(addr if extra[i, 1] else {})
        else:
            tags = [{"building": "yes"}, {"name": name}, addr, {"building": "yes", **addr}][mode[i]]
        out.append(json.dumps(tags))
    return out


def _pois(
    rng: np.random.Generator, spec: SizeSpec, net: Network, lat: Latents, land: np.ndarray
) -> Pois:
    """POIs per region (denser where built up), with class, height and footprint."""
    weight = shapely.area(net.regions) * (0.2 + lat.built)
    region = np.repeat(np.arange(len(weight)), rng.multinomial(spec.pois, weight / weight.sum()))
    n = len(region)
    cls = np.argmax(np.log(lat.shares[region]) + rng.gumbel(size=(n, len(CLASSES))), axis=1)
    xy = _sample_points(rng, land, region)
    floors = np.clip(lat.floors[region] * CLASS_HEIGHT[cls] * rng.lognormal(0, 0.2, n), 1, 60)
    area = CLASS_AREA[cls] * lat.fp_scale[region] * rng.lognormal(0.0, 0.3, n)
    has_fp = rng.uniform(0, 1, n) < FOOTPRINT_SHARE
    footprint = np.full(n, None, dtype=object)
    footprint[has_fp] = _footprints(rng, xy[has_fp], cls[has_fp], area[has_fp])
    nearest = shapely.STRtree(net.roads).query_nearest(shapely.points(xy), all_matches=False)[1]
    street = [net.road_tags[k]["name"] for k in nearest]
    informative = rng.uniform(0, 1, n) >= UNINFORMATIVE_SHARE
    return Pois(xy, region, cls, floors, area, footprint, _tags(rng, cls, informative, street))


# --- street view, trajectories ------------------------------------------------------------


@dataclass
class Svi:
    """Street-view sampling points and, per direction, the scene each image shows."""

    xy: np.ndarray
    scenes: list[img.SviScene]


def _svi(rng: np.random.Generator, spec: SizeSpec, net: Network, lat: Latents, pois: Pois) -> Svi:
    """Sampling points along roads; per direction, the nearest building in that quadrant."""
    n = spec.svi
    length = shapely.length(net.roads)
    road = rng.choice(len(length), n, p=length / length.sum())
    pts = shapely.line_interpolate_point(
        net.roads[road], rng.uniform(0.05, 0.95, n), normalized=True
    )
    xy = shapely.get_coordinates(pts)
    k = min(24, len(pois.xy))
    dist, idx = cKDTree(pois.xy).query(xy, k=k, distance_upper_bound=150.0)
    dist, idx = dist.reshape(n, k), idx.reshape(n, k)
    idx = np.where(np.isfinite(dist), idx, 0)
    delta = pois.xy[idx] - xy[:, None, :]
    sector = np.floor((np.arctan2(delta[..., 1], delta[..., 0]) + np.pi / 4) / (np.pi / 2))
    direction = np.array([0, 3, 2, 1])[sector.astype(int) % 4]  # E,N,W,S -> SVI_DIRECTIONS
    centres = shapely.get_coordinates(shapely.centroid(net.regions))
    greenery = lat.greenery[cKDTree(centres).query(xy)[1]]
    rows = np.arange(n)
    scenes = []
    for d in range(len(SVI_DIRECTIONS)):
        masked = np.where(direction == d, dist, np.inf)
        best = masked.argmin(axis=1)
        p, far = idx[rows, best], masked[rows, best]
        scenes.append(
            img.SviScene(
                has_building=np.isfinite(far),
                cls=pois.cls[p],
                floors=pois.floors[p],
                distance=np.where(np.isfinite(far), far, 150.0),
                width_m=np.sqrt(pois.area[p]),
                greenery=greenery,
            )
        )
    return Svi(xy, scenes)


@dataclass
class Trips:
    """GPS points of all trips, flattened: trip index, time (s) and position (m)."""

    trip: np.ndarray
    t: np.ndarray
    xy: np.ndarray


_TRIP_HOURS = np.array([[8.0, 0.6], [12.5, 0.7], [19.5, 1.1]])  # morning, midday, evening


def _trajectories(
    rng: np.random.Generator, spec: SizeSpec, net: Network, lat: Latents, land: np.ndarray
) -> Trips:
    """Trips along an L-shaped street path: home->work, work->shops, home->leisure."""
    n, area = spec.trajectories, shapely.area(net.regions)
    home, work = lat.population * area, lat.jobs * area
    fun = (lat.shares[:, 1] + 2 * lat.shares[:, 7]) * area * (lat.built + 0.2)
    shops = lat.shares[:, 1] * area * (lat.built + 0.2)
    kind = rng.choice(3, n, p=[0.5, 0.2, 0.3])
    origin, dest = np.empty(n, int), np.empty(n, int)
    for k, (o_w, d_w) in enumerate([(home, work), (work, shops), (home, fun)]):
        m = kind == k
        origin[m] = rng.choice(len(area), m.sum(), p=o_w / o_w.sum())
        dest[m] = rng.choice(len(area), m.sum(), p=d_w / d_w.sum())
    a, b = _sample_points(rng, land, origin), _sample_points(rng, land, dest)
    hours = np.clip(rng.normal(_TRIP_HOURS[kind, 0], _TRIP_HOURS[kind, 1]), 4.0, 23.5)
    start = rng.integers(0, 7, n) * 86400 + np.round(hours * 3600).astype(np.int64)
    count = rng.integers(5, 21, n)
    speed = rng.uniform(4.0, 12.0, n)
    x_first = rng.uniform(0, 1, n) < 0.5

    trip = np.repeat(np.arange(n), count)
    j = np.arange(len(trip)) - np.repeat(np.cumsum(count) - count, count)
    delta = (b - a)[trip]
    leg1 = np.where(x_first[trip], np.abs(delta[:, 0]), np.abs(delta[:, 1]))
    leg2 = np.where(x_first[trip], np.abs(delta[:, 1]), np.abs(delta[:, 0]))
    along = j / (count[trip] - 1) * (leg1 + leg2)
    d1, d2 = np.minimum(along, leg1), np.clip(along - leg1, 0.0, None)
    step = np.sign(delta)
    dx = np.where(x_first[trip], d1, d2) * step[:, 0]
    dy = np.where(x_first[trip], d2, d1) * step[:, 1]
    xy = a[trip] + np.column_stack([dx, dy]) + rng.normal(0.0, 6.0, (len(trip), 2))
    t = start[trip] + np.round(along / speed[trip]).astype(np.int64) + j
    return Trips(trip, t.astype(np.int64), xy)


# --- writing --------------------------------------------------------------------------------


def _ids(prefix: str, n: int, width: int) -> np.ndarray:
    width = max(width, len(str(max(n - 1, 0))))
    return np.array([f"{prefix}{i:0{width}d}" for i in range(n)], dtype=object)


def _svi_path(svi_id: str, direction: str) -> str:
    return f"images/svi/{svi_id}_{direction[0]}.png"


def _sat_path(region_id: str) -> str:
    return f"images/sat/{region_id}.png"


class _ImageSink:
    """Saves batches of images, in worker processes when there are many."""

    def __init__(self, parallel: bool) -> None:
        workers = min(8, os.cpu_count() or 1)
        self._window = 4 * workers
        self._pool = None
        self._pending: list[Future] = []
        if parallel and workers > 1:
            ctx = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(workers, mp_context=ctx)

    def __enter__(self) -> _ImageSink:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self._pool is None:
            return
        try:
            if exc_type is None:
                for future in self._pending:
                    future.result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=exc_type is not None)

    def save(self, paths: list[Path], arrays: np.ndarray) -> None:
        """Save ``arrays[i]`` as a PNG at ``paths[i]``."""
        if self._pool is None:
            for path, pixels in zip(paths, arrays, strict=True):
                img.save_png(path, pixels)
            return
        self._pending.append(self._pool.submit(img.save_pngs, paths, arrays))
        while len(self._pending) > self._window:
            self._pending.pop(0).result()


def _write_svi_images(
    rng: np.random.Generator, root: Path, svi: Svi, sink: _ImageSink, bar: _Progress
) -> None:
    """Draw and save the four images of every sampling point, in batches."""
    n = len(svi.xy)
    ids = _ids("s", n, 6)
    advance = bar.task("street view images", n)
    for start in range(0, n, 1024):
        rows = slice(start, min(n, start + 1024))
        for scene, direction in zip(svi.scenes, SVI_DIRECTIONS, strict=True):
            part = img.SviScene(
                *(getattr(scene, f)[rows] for f in img.SviScene.__dataclass_fields__)
            )
            paths = [root / _svi_path(svi_id, direction) for svi_id in ids[rows]]
            sink.save(paths, img.draw_svi(rng, part))
        advance(rows.stop - rows.start)


def _write_satellite(
    rng: np.random.Generator,
    root: Path,
    net: Network,
    lat: Latents,
    river: River,
    sink: _ImageSink,
    bar: _Progress,
) -> None:
    """Draw one tile per region, framed on its bounding square with a margin."""
    s, n = img.SAT_SIZE, len(net.regions)
    ids = _ids("r", n, 5)
    bounds = shapely.bounds(net.regions)
    side = np.maximum(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1]) * 1.15 + 20.0
    x0 = (bounds[:, 0] + bounds[:, 2] - side) / 2
    y1 = (bounds[:, 1] + bounds[:, 3] + side) / 2
    px = side / s
    centre = np.arange(s) + 0.5
    advance = bar.task("satellite tiles", n)
    for start in range(0, n, 256):
        r = np.arange(start, min(n, start + 256))
        rings = [
            [
                (shapely.get_coordinates(ring) - [x0[i], y1[i]]) * [1, -1] / px[i]
                for ring in [net.regions[i].exterior, *net.regions[i].interiors]
            ]
            for i in r
        ]
        xs = x0[r, None, None] + centre[None, None, :] * px[r, None, None]
        ys = y1[r, None, None] - centre[None, :, None] * px[r, None, None]
        free = np.clip(1 - lat.water[r], 0.05, None)
        tiles = img.draw_satellite(
            rng,
            img.rasterize_polygons(rings),
            river.covers(xs, ys),
            lat.greenery[r] / free,
            lat.built[r] / free,
        )
        sink.save([root / _sat_path(ids[i]) for i in r], tiles)
        advance(len(r))


class _Frame:
    """Metric city frame placed so that its centre is at ``CENTRE_LONLAT``."""

    def __init__(self, extent: tuple[float, float]) -> None:
        to_utm = Transformer.from_crs(WGS84, METRIC_CRS, always_xy=True)
        e, n = to_utm.transform(*CENTRE_LONLAT)
        self.offset = np.round([e - extent[0] / 2, n - extent[1] / 2])

    def wgs84(self, geoms: np.ndarray) -> gpd.GeoSeries:
        """Geometries (metres, local frame) as a WGS84 GeoSeries."""
        moved = shapely.transform(np.asarray(geoms, dtype=object), lambda c: c + self.offset)
        return gpd.GeoSeries(moved, crs=METRIC_CRS).to_crs(WGS84)


def _geo(frame: _Frame, columns: dict[str, object], geometry: np.ndarray) -> gpd.GeoDataFrame:
    data = {k: frame.wgs84(v) if k == FOOTPRINT else v for k, v in columns.items()}
    return gpd.GeoDataFrame(data, geometry=frame.wgs84(geometry), crs=WGS84)


def _write_layers(
    root: Path, frame: _Frame, net: Network, pois: Pois, svi: Svi, trips: Trips
) -> None:
    """Write the six GeoParquet/Parquet layers (EPSG:4326)."""
    pois_df = _geo(
        frame,
        {POI_ID: _ids("p", len(pois.xy), 6), TAGS: pois.tags, FOOTPRINT: pois.footprint},
        shapely.points(pois.xy),
    )
    roads = _geo(
        frame,
        {ROAD_ID: _ids("w", len(net.roads), 5), TAGS: [json.dumps(t) for t in net.road_tags]},
        net.roads,
    )
    region_ids = _ids("r", len(net.regions), 5)
    regions = _geo(frame, {REGION_ID: region_ids}, net.regions)
    svi_ids = _ids("s", len(svi.xy), 6)
    paths = {d: [_svi_path(i, d) for i in svi_ids] for d in SVI_DIRECTIONS}
    svi_df = _geo(frame, {SVI_ID: svi_ids, **paths}, shapely.points(svi.xy))
    sat = pd.DataFrame({REGION_ID: region_ids, "image": [_sat_path(i) for i in region_ids]})
    traj = _geo(
        frame,
        {TRAJ_ID: _ids("t", int(trips.trip.max()) + 1, 5)[trips.trip], "t": trips.t},
        shapely.points(trips.xy),
    )
    for name, df in [("pois", pois_df), ("roads", roads), ("regions", regions), ("svi", svi_df)]:
        df[[c for c in df.columns if c != GEOMETRY] + [GEOMETRY]].to_parquet(
            root / f"{name}.parquet", index=False
        )
    sat.to_parquet(root / "satellite.parquet", index=False)
    traj.to_parquet(root / "trajectories.parquet", index=False)


def _write_labels(root: Path, net: Network, lat: Latents, pois: Pois) -> None:
    """Write the population, price and building-function label CSVs."""
    region_ids = _ids("r", len(net.regions), 5)
    for name, values in [("population", lat.population), ("price", lat.price)]:
        df = pd.DataFrame({REGION_ID: region_ids, "value": np.round(values, 4)})
        df.to_csv(root / "labels" / f"{name}.csv", index=False)
    labels = np.array(CLASSES, dtype=object)[pois.cls]
    df = pd.DataFrame({POI_ID: _ids("p", len(pois.xy), 6), "label": labels})
    df.to_csv(root / "labels" / "function.csv", index=False)


def _declare(manifest: dict) -> None:
    """List the six layers and three labelled tasks in the manifest."""
    manifest["layers"] = {layer: f"{layer}.parquet" for layer in LAYERS if layer != "od"}
    manifest["labels"] = {
        task: {"path": f"labels/{task}.csv", "level": level, "kind": kind}
        for task, level, kind in [
            ("population", "region", "regression"),
            ("price", "region", "regression"),
            ("function", "poi", "classification"),
        ]
    }
