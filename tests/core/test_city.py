"""Tests for mfm.core.bundle.city: reading, validating and indexing City bundles."""

from __future__ import annotations

import json
import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from pyproj import Geod
from shapely.geometry import LineString, Point

from mfm.core.bundle import City, LabelSpec, Problem, check_image, validate_city
from mfm.core.errors import CityError, MfmError
from tests.core.citydata import BundleParts, make_bundle, png_bytes, point


def find(problems: list[Problem], file: str, column: str | None = None, **kw: object) -> Problem:
    """Return the first problem on file/column (and row/text if given); fail if none."""
    text = kw.pop("text", None)
    row = kw.pop("row", "any")
    for p in problems:
        same_row = row == "any" or p.row == row
        if p.file == file and p.column == column and same_row and str(text or "") in p.message:
            return p
    raise AssertionError(
        f"no problem on {file}/{column} row={row} text={text!r} in:\n"
        + "\n".join(map(str, problems))
    )


def load_fails(root: Path) -> str:
    """City.load must raise a one-line CityError; return its message."""
    with pytest.raises(CityError) as info:
        City.load(root)
    msg = str(info.value)
    assert "\n" not in msg and msg
    return msg


def set_layer(layer: str, column: str, row: int, value: object):
    def mutate(parts: BundleParts) -> None:
        parts.layers[layer].loc[row, column] = value

    return mutate


# --------------------------------------------------------------------------- good bundle


def test_good_bundle_loads(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "city")
    assert validate_city(root) == []
    city = City.load(root)
    assert city.name == "tinytown"
    assert city.crs == "EPSG:32635"  # UTM zone guessed for Helsinki
    assert list(city.pois.index) == list(range(6))
    assert list(city.pois["poi_id"]) == [f"p{i}" for i in range(6)]
    assert city.pois.crs.to_string() == "EPSG:4326"
    assert city.pois["footprint"].isna().tolist() == [False] * 5 + [True]
    assert all(city.has(k) for k in ("pois", "roads", "regions", "svi", "satellite"))
    assert not city.has("buildings")
    traj = city.trajectories
    keys = list(zip(traj["traj_id"], traj["t"], strict=True))
    assert keys == sorted(keys)
    assert city.poi_tags()[0] == {"amenity": "cafe", "name": "Kahvila"}
    assert city.labels["population"] == LabelSpec(
        "population", root / "labels/population.csv", "region", "regression"
    )
    assert city.path("images/sat/r0.png").is_file()


def test_pois_only_bundle(tmp_path: Path) -> None:
    city = City.load(make_bundle(tmp_path, with_layers=()))
    assert city.regions is None and not city.has("svi")
    assert (city.poi_region() == -1).all()
    with pytest.raises(CityError, match="no svi layer"):
        city.layer("svi")


def test_explicit_crs_is_used(tmp_path: Path) -> None:
    root = make_bundle(
        tmp_path, with_layers=(), mutate=lambda p: p.manifest.update(crs="EPSG:3067")
    )
    assert City.load(root).crs == "EPSG:3067"


def test_problem_str() -> None:
    p = Problem("pois.parquet", 3, "poi_id", "duplicate poi_id 'p1'; ids must be unique")
    assert str(p) == "pois.parquet row 3 column poi_id: duplicate poi_id 'p1'; ids must be unique"
    assert str(Problem("city.toml", None, None, "bad")) == "city.toml: bad"


# --------------------------------------------------------------------------- root & manifest


def test_missing_root(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    [p] = validate_city(root)
    assert p.file == str(root) and "does not exist" in p.message
    assert str(root) in load_fails(root)


def test_root_is_a_file(tmp_path: Path) -> None:
    root = tmp_path / "f"
    root.write_text("x")
    assert "not a directory" in load_fails(root)


def test_missing_manifest(tmp_path: Path) -> None:
    root = make_bundle(tmp_path, with_layers=())
    (root / "city.toml").unlink()
    find(validate_city(root), "city.toml", text="not found")
    msg = load_fails(root)
    assert msg.startswith("city.toml:") and str(root) in msg


def test_invalid_toml(tmp_path: Path) -> None:
    def mutate(parts: BundleParts) -> None:
        parts.toml_text = "name = 'x\n[layers\n"

    find(
        validate_city(make_bundle(tmp_path, with_layers=(), mutate=mutate)),
        "city.toml",
        text="not valid TOML",
    )


def test_unknown_top_level_key(tmp_path: Path) -> None:
    root = make_bundle(tmp_path, with_layers=(), mutate=lambda p: p.manifest.update(colour="red"))
    find(validate_city(root), "city.toml", "colour", text="unknown key")
    load_fails(root)


def test_layers_without_pois(tmp_path: Path) -> None:
    root = make_bundle(tmp_path, with_layers=(), mutate=lambda p: p.manifest["layers"].pop("pois"))
    find(validate_city(root), "city.toml", "layers", text="neither pois nor regions")


def test_listed_layer_file_missing(tmp_path: Path) -> None:
    root = make_bundle(tmp_path)
    (root / "roads.parquet").unlink()
    find(validate_city(root), "roads.parquet", None, row=None, text="file not found")
    assert load_fails(root).startswith("roads.parquet: file not found")


def test_unknown_layer_name(tmp_path: Path) -> None:
    root = make_bundle(
        tmp_path, with_layers=(), mutate=lambda p: p.manifest["layers"].update(bldg="b.parquet")
    )
    find(validate_city(root), "city.toml", "layers.bldg", text="unknown layer")


def test_non_metric_crs(tmp_path: Path) -> None:
    root = make_bundle(
        tmp_path, with_layers=(), mutate=lambda p: p.manifest.update(crs="EPSG:4326")
    )
    find(validate_city(root), "city.toml", "crs", text="not a metric")


def test_crs_must_be_a_string(tmp_path: Path) -> None:
    root = make_bundle(tmp_path, with_layers=(), mutate=lambda p: p.manifest.update(crs=3067))
    find(validate_city(root), "city.toml", "crs", text="must be a string")


# --------------------------------------------------------------------------- layer rules


def test_unreadable_parquet(tmp_path: Path) -> None:
    root = make_bundle(tmp_path)
    (root / "regions.parquet").write_bytes(b"not parquet at all")
    find(validate_city(root), "regions.parquet", text="cannot read")
    load_fails(root)


def test_plain_parquet_is_not_geoparquet(tmp_path: Path) -> None:
    root = make_bundle(tmp_path)
    pd.DataFrame({"svi_id": ["s0"], "geometry": [Point(24.9, 60.1).wkb]}).to_parquet(
        root / "svi.parquet"
    )
    find(validate_city(root), "svi.parquet", None, row=None, text="not GeoParquet")


@pytest.mark.parametrize(
    ("layer", "column"),
    [
        ("pois", "tags"),
        ("regions", "region_id"),
        ("svi", "north"),
        ("trajectories", "t"),
        ("satellite", "image"),
        ("roads", "road_id"),
    ],
)
def test_missing_required_column(tmp_path: Path, layer: str, column: str) -> None:
    def mutate(parts: BundleParts) -> None:
        parts.layers[layer] = parts.layers[layer].drop(columns=column)

    root = make_bundle(tmp_path, mutate=mutate)
    p = find(validate_city(root), f"{layer}.parquet", column, text="missing column")
    assert column in p.message and layer in p.message
    load_fails(root)


def test_null_id(tmp_path: Path) -> None:
    root = make_bundle(tmp_path, with_layers=(), mutate=set_layer("pois", "poi_id", 2, None))
    find(validate_city(root), "pois.parquet", "poi_id", row=2, text="missing poi_id")


def test_duplicate_id(tmp_path: Path) -> None:
    root = make_bundle(tmp_path, with_layers=(), mutate=set_layer("pois", "poi_id", 3, "p1"))
    p = find(validate_city(root), "pois.parquet", "poi_id", row=3)
    assert p.message == "duplicate poi_id 'p1' (first at row 1); ids must be unique"
    assert load_fails(root).startswith("pois.parquet row 3 column poi_id: duplicate")


def test_integer_ids_become_strings(tmp_path: Path) -> None:
    def mutate(parts: BundleParts) -> None:
        parts.layers["regions"]["region_id"] = [0, 1, 2, 3]
        parts.labels["population"]["region_id"] = [0, 1, 2, 3]
        parts.layers["satellite"]["region_id"] = [0, 1, 2, 3]

    city = City.load(make_bundle(tmp_path, mutate=mutate))
    assert list(city.regions["region_id"]) == ["0", "1", "2", "3"]
    assert list(city.read_labels("population")["id"]) == ["0", "1", "2", "3"]


def test_non_integral_float_ids(tmp_path: Path) -> None:
    def mutate(parts: BundleParts) -> None:
        parts.layers["roads"]["road_id"] = [1.0, 2.5]

    root = make_bundle(tmp_path, mutate=mutate)
    find(validate_city(root), "roads.parquet", "road_id", row=1, text="not a string")


def test_trajectory_ids_repeat_but_points_are_unique(tmp_path: Path) -> None:
    root = make_bundle(tmp_path, mutate=set_layer("trajectories", "t", 2, 0))  # ("t0", 0) twice
    problems = validate_city(root)
    assert [p.column for p in problems] == ["t"]
    find(problems, "trajectories.parquet", "t", row=2, text="duplicate (traj_id, t)")


def test_trajectory_time_type(tmp_path: Path) -> None:
    def mutate(parts: BundleParts) -> None:
        parts.layers["trajectories"]["t"] = parts.layers["trajectories"]["t"] + 0.5

    root = make_bundle(tmp_path, mutate=mutate)
    find(validate_city(root), "trajectories.parquet", "t", row=None, text="timestamp")


def test_trajectory_timestamps_ok(tmp_path: Path) -> None:
    def mutate(parts: BundleParts) -> None:
        t = parts.layers["trajectories"]["t"]
        parts.layers["trajectories"]["t"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(t, "s")

    traj = City.load(make_bundle(tmp_path, mutate=mutate)).trajectories
    assert traj["t"].dtype.kind == "M"
    assert traj.groupby("traj_id")["t"].is_monotonic_increasing.all()


def test_wrong_geometry_type(tmp_path: Path) -> None:
    def mutate(parts: BundleParts) -> None:
        parts.layers["pois"].loc[2, "geometry"] = LineString([(24.9, 60.1), (24.91, 60.1)])
        parts.layers["regions"].loc[1, "geometry"] = Point(24.9, 60.1)

    problems = validate_city(make_bundle(tmp_path, mutate=mutate))
    find(
        problems, "pois.parquet", "geometry", row=2, text="LineString; pois geometry must be Point"
    )
    find(problems, "regions.parquet", "geometry", row=1, text="Polygon or MultiPolygon")


def test_wrong_crs(tmp_path: Path) -> None:
    def mutate(parts: BundleParts) -> None:
        parts.layers["svi"] = parts.layers["svi"].to_crs("EPSG:3857")

    root = make_bundle(tmp_path, mutate=mutate)
    p = find(validate_city(root), "svi.parquet", "geometry", row=None, text="EPSG:3857")
    assert "to_crs('EPSG:4326')" in p.message


def test_missing_crs_is_assumed_wgs84(tmp_path: Path) -> None:
    def mutate(parts: BundleParts) -> None:
        parts.layers["roads"] = parts.layers["roads"].set_crs(None, allow_override=True)

    city = City.load(make_bundle(tmp_path, mutate=mutate))
    assert city.roads.crs.to_string() == "EPSG:4326"


def test_coordinates_out_of_range_and_swapped(tmp_path: Path) -> None:
    def mutate(parts: BundleParts) -> None:
        parts.layers["pois"].loc[1, "geometry"] = Point(30.0, 120.0)  # (lat, lon) order
        parts.layers["pois"].loc[4, "geometry"] = Point(2.7e6, 8.4e6)  # projected metres

    problems = validate_city(make_bundle(tmp_path, with_layers=(), mutate=mutate))
    swapped = find(problems, "pois.parquet", "geometry", row=1)
    assert "lat/lon look swapped: write geometry as (lon, lat)" in swapped.message
    other = find(problems, "pois.parquet", "geometry", row=4, text="out of range")
    assert "swapped" not in other.message


def test_empty_pois(tmp_path: Path) -> None:
    def mutate(parts: BundleParts) -> None:
        parts.layers["pois"] = parts.layers["pois"].iloc[:0]
        parts.labels["function"] = parts.labels["function"].iloc[:0]

    root = make_bundle(tmp_path, with_layers=(), mutate=mutate)
    find(validate_city(root), "pois.parquet", None, row=None, text="pois.parquet has no rows")
    assert "has no rows" in load_fails(root)


def test_bad_tags_rows(tmp_path: Path) -> None:
    def mutate(parts: BundleParts) -> None:
        parts.layers["pois"]["tags"] = parts.layers["pois"]["tags"].astype(object)
        parts.layers["pois"].loc[1, "tags"] = "{not json"
        parts.layers["pois"].loc[4, "tags"] = '["a list"]'

    problems = validate_city(make_bundle(tmp_path, with_layers=(), mutate=mutate))
    assert [(p.row, p.column) for p in problems] == [(1, "tags"), (4, "tags")]
    assert "JSON object" in problems[0].message


def test_row_reports_are_capped(tmp_path: Path) -> None:
    def mutate(parts: BundleParts) -> None:
        parts.layers["pois"]["tags"] = "oops"

    root = make_bundle(tmp_path, with_layers=(), n_pois=30, mutate=mutate)
    problems = validate_city(root)
    assert len(problems) == 21
    assert [p.row for p in problems[:20]] == list(range(20))
    assert problems[-1].row is None and problems[-1].message.startswith("... and 10 more rows")
    assert "(20 more problems: run `mfm city validate" in load_fails(root)


def test_footprint_type(tmp_path: Path) -> None:
    def mutate(parts: BundleParts) -> None:
        fp = parts.layers["pois"]["footprint"].copy()
        fp.iloc[0] = LineString([(24.9, 60.1), (24.91, 60.1)])
        parts.layers["pois"]["footprint"] = fp

    find(
        validate_city(make_bundle(tmp_path, with_layers=(), mutate=mutate)),
        "pois.parquet",
        "footprint",
        row=0,
    )


def test_svi_image_missing(tmp_path: Path) -> None:
    root = make_bundle(tmp_path)
    (root / "images/svi/s1_west.png").unlink()
    problems = validate_city(root)
    assert len(problems) == 1
    find(problems, "svi.parquet", "west", row=1, text="'images/svi/s1_west.png' not found")


def test_check_image(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    good.write_bytes(png_bytes())
    bad.write_bytes(b"\x89PNG broken")
    check_image(good)
    with pytest.raises(CityError, match=r"cannot read image .*bad.png: .*re-export it as PNG/JPEG"):
        check_image(bad)


def test_satellite_unknown_region_and_missing_image(tmp_path: Path) -> None:
    def mutate(parts: BundleParts) -> None:
        parts.layers["satellite"].loc[2, "region_id"] = "r99"
        parts.layers["satellite"].loc[3, "image"] = "images/sat/gone.png"

    problems = validate_city(make_bundle(tmp_path, mutate=mutate))
    find(problems, "satellite.parquet", "region_id", row=2, text="'r99' is not in regions.parquet")
    find(problems, "satellite.parquet", "image", row=3, text="not found")


# --------------------------------------------------------------------------- labels


def label_spec(name: str, **changes: object):
    def mutate(parts: BundleParts) -> None:
        for key, value in changes.items():
            if value is None:
                parts.manifest["labels"][name].pop(key)
            else:
                parts.manifest["labels"][name][key] = value

    return mutate


def test_label_path_missing(tmp_path: Path) -> None:
    root = make_bundle(tmp_path, mutate=label_spec("population", path="labels/nope.csv"))
    (root / "labels/nope.csv").unlink()
    find(validate_city(root), "labels/nope.csv", None, text="label file not found")


@pytest.mark.parametrize(("key", "value"), [("level", "city"), ("kind", "ranking"), ("kind", None)])
def test_label_level_and_kind(tmp_path: Path, key: str, value: str | None) -> None:
    root = make_bundle(tmp_path, with_layers=(), mutate=label_spec("function", **{key: value}))
    find(validate_city(root), "city.toml", f"labels.function.{key}")
    load_fails(root)


def test_region_label_needs_regions_layer(tmp_path: Path) -> None:
    def mutate(parts: BundleParts) -> None:
        parts.manifest["layers"].pop("regions")
        parts.manifest["layers"].pop("satellite")

    root = make_bundle(tmp_path, mutate=mutate)
    find(validate_city(root), "labels/population.csv", None, text="lists no regions")


def test_label_missing_target_column(tmp_path: Path) -> None:
    def mutate(parts: BundleParts) -> None:
        parts.labels["population"] = parts.labels["population"].rename(columns={"value": "pop"})

    root = make_bundle(tmp_path, mutate=mutate)
    find(validate_city(root), "labels/population.csv", "value", text="missing column 'value'")


def test_label_kind_mismatch(tmp_path: Path) -> None:
    root = make_bundle(tmp_path, with_layers=(), mutate=label_spec("function", kind="regression"))
    find(validate_city(root), "labels/function.csv", "value", text="missing column")


def test_label_non_numeric_value(tmp_path: Path) -> None:
    def mutate(parts: BundleParts) -> None:
        parts.labels["population"]["value"] = ["1", "2", "many", "4"]

    root = make_bundle(tmp_path, mutate=mutate)
    find(validate_city(root), "labels/population.csv", "value", row=2, text="'many'")


def test_label_unknown_ids(tmp_path: Path) -> None:
    def mutate(parts: BundleParts) -> None:
        parts.labels["function"]["poi_id"] = ["p0", "p1", "x1", "x2", "p4", "x3"]

    root = make_bundle(tmp_path, with_layers=(), mutate=mutate)
    p = find(validate_city(root), "labels/function.csv", "poi_id", row=None)
    assert p.message.startswith("3 of 6 poi_id values are not in pois.parquet")


def test_read_labels(tmp_path: Path) -> None:
    city = City.load(make_bundle(tmp_path))
    pop = city.read_labels("population")
    assert list(pop.columns) == ["id", "value"] and pop["value"].tolist() == [10.5, 3, 0, 7.25]
    fn = city.read_labels("function")
    assert list(fn.columns) == ["id", "label"] and fn["id"].tolist()[:2] == ["p0", "p1"]
    with pytest.raises(CityError, match="unknown label 'nope'"):
        city.read_labels("nope")
    (city.root / "labels/population.csv").write_text("region_id,value\nr0,abc\n")
    with pytest.raises(CityError, match="not a finite number"):
        city.read_labels("population")


# --------------------------------------------------------------------------- all problems


def test_three_problems_all_reported(tmp_path: Path) -> None:
    def mutate(parts: BundleParts) -> None:
        parts.manifest["colour"] = "red"
        parts.layers["regions"] = parts.layers["regions"].drop(columns="region_id")
        parts.layers["pois"].loc[5, "poi_id"] = "p0"

    root = make_bundle(tmp_path, mutate=mutate)
    problems = validate_city(root)
    find(problems, "city.toml", "colour")
    find(problems, "regions.parquet", "region_id")
    find(problems, "pois.parquet", "poi_id", row=5)
    n = len(problems)
    assert n >= 3
    msg = load_fails(root)
    assert msg.startswith(str(problems[0]))
    assert msg.endswith(f"; ({n - 1} more problems: run `mfm city validate {root}`)")


def test_city_error_is_mfm_error() -> None:
    assert issubclass(CityError, MfmError)


# --------------------------------------------------------------------------- spatial helpers


def test_xy_is_metric(tmp_path: Path) -> None:
    geod = Geod(ellps="WGS84")
    lon, lat, _ = geod.fwd(24.94, 60.17, 37.0, 100.0)  # 100 m on a bearing of 37 degrees

    def mutate(parts: BundleParts) -> None:
        parts.layers["pois"].loc[0, "geometry"] = Point(24.94, 60.17)
        parts.layers["pois"].loc[1, "geometry"] = Point(lon, lat)

    city = City.load(make_bundle(tmp_path, mutate=mutate))
    xy = city.xy("pois")
    assert xy.shape == (6, 2) and xy.dtype == np.float64
    assert np.linalg.norm(xy[1] - xy[0]) == pytest.approx(100.0, abs=0.5)
    assert city.xy("pois") is xy  # cached
    assert city.xy("regions").shape == (4, 2)
    assert city.xy("trajectories").shape == (7, 2)
    with pytest.raises(CityError):
        city.xy("satellite")


def test_poi_region_contains_and_nearest(tmp_path: Path) -> None:
    def mutate(parts: BundleParts) -> None:
        parts.layers["pois"].loc[6, "geometry"] = point(1000.0, 300.0)  # outside, east of r3

    city = City.load(make_bundle(tmp_path, n_pois=9, mutate=mutate))
    # grid (x, y): (0|100|200, 0|100|200); regions r0..r3 are 200 m squares from (-50, -50)
    expected = [0, 0, 1, 0, 0, 1, 3, 2, 3]
    got = city.poi_region()
    assert got.dtype == np.int64 and got.tolist() == expected


def test_region_area(tmp_path: Path) -> None:
    area = City.load(make_bundle(tmp_path)).region_area_m2()
    assert area.dtype == np.float64 and area.shape == (4,)
    np.testing.assert_allclose(area, 40_000, rtol=0.02)


def test_fingerprint(tmp_path: Path) -> None:
    root = make_bundle(tmp_path)
    a, b = City.load(root), City.load(root)
    fp = a.fingerprint("pois")
    assert re.fullmatch(r"[0-9a-f]{16}", fp)
    assert fp == b.fingerprint("pois") and fp != a.fingerprint("regions")
    assert re.fullmatch(r"[0-9a-f]{16}", a.fingerprint("labels:population"))
    pois = gpd.read_parquet(root / "pois.parquet")
    pois.loc[0, "tags"] = json.dumps({"amenity": "bar"})
    pois.to_parquet(root / "pois.parquet")
    assert City.load(root).fingerprint("pois") != fp
    with pytest.raises(CityError):
        a.fingerprint("labels:nope")
