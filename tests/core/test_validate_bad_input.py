"""Validation rejects input that parses but is wrong (issue 13): swapped or far coordinates,
images that do not decode, degenerate layers; real bundles still pass."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
import shapely.affinity
from PIL import Image
from shapely.geometry import LineString, Point, Polygon

from mfm.core.bundle.city import City
from mfm.core.bundle.validate import validate_city
from mfm.core.errors import CityError
from tests.core.citydata import WGS84, BundleParts, lonlat, make_bundle
from tests.test_cli import assert_one_line_error, mfm

SWAPPED = "latitude and longitude look swapped"
BENCHMARKS = sorted(
    p.parent for p in (Path(__file__).parents[2] / "benchmarks" / "data").glob("*/city.toml")
)
Mutate = Callable[[BundleParts], None]


def _swap(frame: gpd.GeoDataFrame) -> None:
    """Swap x and y of every geometry in place."""
    frame["geometry"] = shapely.transform(frame.geometry.to_numpy(), lambda c: c[:, ::-1])


def _set_poi(row: int, geom: Point) -> Mutate:
    def mutate(parts: BundleParts) -> None:
        geoms = parts.layers["pois"].geometry.to_numpy().copy()
        geoms[row] = geom
        parts.layers["pois"]["geometry"] = geoms

    return mutate


def _problems(tmp_path: Path, mutate: Mutate | None, **kw) -> list[str]:
    return [str(p) for p in validate_city(make_bundle(tmp_path / "b", mutate=mutate, **kw))]


def _trajectories(rows: list[tuple[str, int, float, float]]) -> Mutate:
    """Replace the trajectories with (traj_id, t, x_m, y_m) rows."""

    def mutate(parts: BundleParts) -> None:
        parts.layers["trajectories"] = gpd.GeoDataFrame(
            {
                "traj_id": [r[0] for r in rows],
                "t": [r[1] for r in rows],
                "geometry": [Point(*lonlat(r[2], r[3])) for r in rows],
            },
            crs=WGS84,
        )

    return mutate


# --------------------------------------------------------------------------- coordinates


def test_swapped_layers_outside_crs_area(tmp_path: Path) -> None:
    def mutate(parts: BundleParts) -> None:
        parts.manifest["crs"] = "EPSG:32635"  # UTM 35N: 24..30 E, Helsinki's zone
        for frame in parts.layers.values():
            if "geometry" in frame:
                _swap(frame)

    root = make_bundle(tmp_path / "b", mutate=mutate)
    problems = [str(p) for p in validate_city(root)]
    assert problems[0].startswith("pois.parquet row 0 column geometry: ")
    assert "area of use of crs EPSG:32635" in problems[0] and SWAPPED in problems[0]
    assert all(SWAPPED in p for p in problems)
    with pytest.raises(CityError, match=SWAPPED) as info:
        City.load(root)
    assert "\n" not in str(info.value)
    assert_one_line_error(mfm("city", "info", root), "pois.parquet row 0", SWAPPED)
    result = mfm("city", "validate", root)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert SWAPPED in result.stderr.splitlines()[0]


def test_wrong_crs_named_without_swap_hint(tmp_path: Path) -> None:
    def mutate(parts: BundleParts) -> None:
        parts.manifest["crs"] = "EPSG:32633"  # UTM 33N (12..18 E) for a city at 24.9 E

    problems = _problems(tmp_path, mutate)
    assert "outside the area of use of crs EPSG:32633" in problems[0]
    assert SWAPPED not in problems[0] and "crs in city.toml" in problems[0]


def test_right_crs_passes(tmp_path: Path) -> None:
    def mutate(parts: BundleParts) -> None:
        parts.manifest["crs"] = "EPSG:32635"

    assert _problems(tmp_path, mutate) == []


def test_one_swapped_poi_without_crs(tmp_path: Path) -> None:
    lon, lat = lonlat(0, 200)
    problems = _problems(tmp_path, _set_poi(2, Point(lat, lon)))
    assert len(problems) == 1
    assert problems[0].startswith("pois.parquet row 2 column geometry: ")
    assert SWAPPED in problems[0]


def test_swapped_svi_layer(tmp_path: Path) -> None:
    problems = _problems(tmp_path, lambda parts: _swap(parts.layers["svi"]))
    assert problems == [
        "svi.parquet column geometry: layer svi lies 4754 km from the POIs of pois.parquet "
        f"(limit 50 km, median distance); {SWAPPED}: write geometry as (lon, lat)"
    ]


def test_swapped_pois_against_other_layers(tmp_path: Path) -> None:
    problems = _problems(tmp_path, lambda parts: _swap(parts.layers["pois"]))
    assert len(problems) == 1
    assert problems[0].startswith("pois.parquet column geometry: the POIs lie")
    assert "roads.parquet" in problems[0] and SWAPPED in problems[0]


@pytest.mark.parametrize(
    "where",
    [Point(0.0, 0.0), Point(-24.94, 60.17), Point(*lonlat(0, 120_000))],
    ids=["null-island", "sign-of-lon", "120km-north"],
)
def test_far_poi_rejected(tmp_path: Path, where: Point) -> None:
    problems = _problems(tmp_path, _set_poi(4, where))
    assert len(problems) == 1
    assert problems[0].startswith("pois.parquet row 4 column geometry: ")
    assert "km from the city's median point" in problems[0]
    assert "fix its coordinates or drop the row" in problems[0]
    assert SWAPPED not in problems[0]


def test_outlying_poi_within_limit_passes(tmp_path: Path) -> None:
    assert _problems(tmp_path, _set_poi(4, Point(*lonlat(30_000, 30_000)))) == []  # 42 km


def test_far_region_rejected(tmp_path: Path) -> None:
    def mutate(parts: BundleParts) -> None:
        geoms = parts.layers["regions"].geometry.to_numpy().copy()
        geoms[3] = shapely.affinity.translate(geoms[3], xoff=-20.0)  # 1100 km west
        parts.layers["regions"]["geometry"] = geoms

    problems = _problems(tmp_path, mutate)
    assert len(problems) == 1 and problems[0].startswith("regions.parquet row 3 column geometry")


def test_trajectory_glitch_rejected_trip_out_of_town_kept(tmp_path: Path) -> None:
    base = [("a", 0, 0, 0), ("a", 1, 100, 0), ("b", 0, 0, 100), ("b", 1, 100, 100)]
    trip = base + [("c", i, 10_000.0 * i, 0) for i in range(31)]  # 300 km, 10 km steps
    assert _problems(tmp_path / "trip", _trajectories(trip)) == []
    glitch = [*base, ("c", 0, 0, 0), ("c", 1, 2_000_000, 0), ("c", 2, 100, 0)]
    problems = _problems(tmp_path / "glitch", _trajectories(glitch))
    assert len(problems) == 1 and problems[0].startswith("trajectories.parquet row 5 ")
    elsewhere = [*base, ("c", 0, 900_000, 0), ("c", 1, 901_000, 0)]
    problems = _problems(tmp_path / "elsewhere", _trajectories(elsewhere))
    assert [p.split(" column")[0] for p in problems] == [
        "trajectories.parquet row 4",
        "trajectories.parquet row 5",
    ]


def test_antimeridian_city_passes(tmp_path: Path) -> None:
    """POIs on both sides of 180 degrees (Taveuni, Fiji) are not far from each other."""

    def mutate(parts: BundleParts) -> None:
        def shift(c: np.ndarray) -> np.ndarray:
            c = c + np.array([155.0595, -77.0])
            c[:, 0] = (c[:, 0] + 180.0) % 360.0 - 180.0
            return c

        pois = parts.layers["pois"] = parts.layers["pois"].drop(columns="footprint")
        pois["geometry"] = shapely.transform(pois.geometry.to_numpy(), shift)
        assert (pois.geometry.x < 0).any() and (pois.geometry.x > 0).any()

    assert _problems(tmp_path, mutate, with_layers=()) == []


# --------------------------------------------------------------------------- images


def _jpeg(size: int = 64) -> bytes:
    """A small valid JPEG."""
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (30, 90, 200)).save(buf, format="JPEG")
    return buf.getvalue()


def _image(col: str, row: int, rel: str, data: bytes) -> Mutate:
    def mutate(parts: BundleParts) -> None:
        parts.layers["svi"].loc[row, col] = rel
        parts.files[rel] = data

    return mutate


def test_corrupt_image_named(tmp_path: Path) -> None:
    rel = "images/svi/broken.jpg"
    root = make_bundle(tmp_path / "b", mutate=_image("west", 1, rel, os.urandom(2048)))
    problems = [str(p) for p in validate_city(root)]
    assert len(problems) == 1
    assert problems[0].startswith(f"svi.parquet row 1 column west: image file '{rel}' does not")
    assert str(root) not in problems[0]  # the bundle-relative path only
    with pytest.raises(CityError, match=r"broken\.jpg"):
        City.load(root)


@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_truncated_image_named(tmp_path: Path, kind: str) -> None:
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format=kind.upper())
    data = buf.getvalue()
    rel = f"images/svi/cut.{kind}"
    problems = _problems(tmp_path, _image("north", 2, rel, data[: len(data) * 2 // 3]))
    assert len(problems) == 1 and problems[0].startswith("svi.parquet row 2 column north: ")
    assert rel in problems[0]


def test_jpeg_with_trailing_data_passes(tmp_path: Path) -> None:
    """Data after the JPEG end marker (e.g. a motion photo) is decoded, not rejected."""
    rel = "images/svi/motion.jpg"
    assert _problems(tmp_path, _image("east", 0, rel, _jpeg() + os.urandom(4096))) == []


def test_satellite_garbage_named(tmp_path: Path) -> None:
    def mutate(parts: BundleParts) -> None:
        parts.files["images/sat/r2.png"] = b"\x89PNG\r\n\x1a\n" + os.urandom(300)

    problems = _problems(tmp_path, mutate)
    assert len(problems) == 1
    assert problems[0].startswith("satellite.parquet row 2 column image: ")


# --------------------------------------------------------------------------- degenerate layers


def test_single_point_trajectories_rejected(tmp_path: Path) -> None:
    def mutate(parts: BundleParts) -> None:
        frame = parts.layers["trajectories"]
        frame["traj_id"] = [f"t{i}" for i in range(len(frame))]

    root = make_bundle(tmp_path / "b", mutate=mutate)
    problems = [str(p) for p in validate_city(root)]
    assert problems == [
        "trajectories.parquet column traj_id: no trajectory has two points (all 7 points "
        "have distinct traj_id); give the points of one trip the same traj_id"
    ]
    assert_one_line_error(mfm("city", "info", root), "no trajectory has two points")


def test_some_single_point_trajectories_pass(tmp_path: Path) -> None:
    rows = [("a", 0, 0, 0), ("a", 1, 100, 0), ("b", 0, 0, 100)]
    assert _problems(tmp_path, _trajectories(rows)) == []


def test_zero_area_regions_rejected(tmp_path: Path) -> None:
    def mutate(parts: BundleParts) -> None:
        a, b = lonlat(0, 0), lonlat(100, 0)
        parts.layers["regions"]["geometry"] = [Polygon([a, b, a])] * 4

    problems = _problems(tmp_path, mutate)
    assert problems[0].startswith("regions.parquet column geometry: all 4 regions have zero area")


def test_zero_length_roads_rejected(tmp_path: Path) -> None:
    def mutate(parts: BundleParts) -> None:
        a = lonlat(0, 0)
        parts.layers["roads"]["geometry"] = [LineString([a, a])] * 2

    problems = _problems(tmp_path, mutate)
    assert problems == [
        "roads.parquet column geometry: all 2 roads have zero length; roads must be lines "
        "between distinct points"
    ]


def test_pois_all_at_one_point_rejected(tmp_path: Path) -> None:
    def mutate(parts: BundleParts) -> None:
        parts.layers["pois"]["geometry"] = [Point(*lonlat(0, 0))] * len(parts.layers["pois"])

    problems = _problems(tmp_path, mutate, with_layers=())
    assert len(problems) == 1 and "all 6 POIs are at the same point" in problems[0]
    assert _problems(tmp_path / "one", None, n_pois=1, with_layers=()) == []


# --------------------------------------------------------------------------- real bundles


@pytest.mark.parametrize("root", BENCHMARKS, ids=[p.name for p in BENCHMARKS])
def test_benchmark_bundles_validate(root: Path) -> None:
    assert validate_city(root) == []


def test_bundles_from_real_data_validate(
    helsinki_city: Path, real_data: Path, tiny_city: Path, tmp_path: Path
) -> None:
    from mfm.cities.from_osm import from_osm

    poa = tmp_path / "poa"
    from_osm(real_data / "porto_alegre" / "poa_osm.pbf", poa, regions="h3:9")
    for root in (helsinki_city, poa, tiny_city):
        assert validate_city(root) == [], root
