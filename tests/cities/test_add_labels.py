"""Adding labels to a bundle: by id, by overlay, from a POI tag; errors leave it unchanged."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from mfm.cities.add_labels import add_labels, label_from_tag
from mfm.cities.bundle import Staging, new_bundle
from mfm.core.bundle.city import City
from mfm.core.constants import CITY_MANIFEST
from mfm.core.errors import CityError
from tests.bundles import assert_untouched, snapshot

METRIC = "EPSG:32632"
X0, Y0 = 465_000.0, 5_245_000.0  # near Zurich in UTM 32N


REAL = Path(__file__).parents[1] / "data"  # real samples (tests/data/README.md)


@pytest.fixture
def city(bundle: Path) -> Path:
    """A private copy of the tiny synthetic city."""
    return bundle


def _region_ids(root: Path) -> list[str]:
    return gpd.read_parquet(root / "regions.parquet")["region_id"].astype(str).tolist()


def _square_bundle(root: Path, boxes: list[tuple[float, float, float, float]]) -> Path:
    """A bundle whose regions are metric boxes (x0, y0, x1, y1) offset by (X0, Y0)."""
    geoms = [shapely.box(X0 + a, Y0 + b, X0 + c, Y0 + d) for a, b, c, d in boxes]
    regions = gpd.GeoDataFrame(
        {"region_id": [f"r{i}" for i in range(len(geoms))]}, geometry=geoms, crs=METRIC
    ).to_crs(4326)
    pois = gpd.GeoDataFrame(
        {
            "poi_id": [f"p{i}" for i in range(len(geoms))],
            "tags": ['{"amenity": "cafe"}'] * len(geoms),
        },
        geometry=gpd.GeoSeries(geoms, crs=METRIC).centroid,
        crs=METRIC,
    ).to_crs(4326)
    with new_bundle(root, "squares", crs=METRIC) as st:
        st.add_layer("regions", regions)
        st.add_layer("pois", pois)
    return root


def _write_boxes(path: Path, boxes: list[tuple[float, ...]], **columns: list) -> Path:
    geoms = [shapely.box(X0 + a, Y0 + b, X0 + c, Y0 + d) for a, b, c, d in boxes]
    gpd.GeoDataFrame(columns, geometry=geoms, crs=METRIC).to_file(path)
    return path


# --------------------------------------------------------------------------- by id


def test_by_id_csv_roundtrip(city: Path, tmp_path: Path) -> None:
    ids = _region_ids(city)
    values = np.arange(len(ids)) * 1.5
    csv = tmp_path / "density.csv"
    pd.DataFrame({"region_id": ids, "density": values}).to_csv(csv, index=False)
    s = add_labels(city, csv, name="density", column="density")
    assert (s["kind"], s["kind_inferred"], s["method"]) == ("regression", True, "id")
    assert s["labelled"] == len(ids) and s["coverage"] == 1.0 and not s["replaced"]
    json.dumps(s)
    got = City.load(city).read_labels("density")
    assert got["id"].tolist() == ids
    np.testing.assert_allclose(got["value"], values)


def test_by_id_parquet_classes_partial_coverage(city: Path, tmp_path: Path) -> None:
    ids = _region_ids(city)[:10]
    path = tmp_path / "zones.parquet"
    pd.DataFrame({"id": ids, "zone": ["a", "b"] * 5}).to_parquet(path)
    s = add_labels(city, path, name="zone", column="zone")  # default id column falls back to id
    assert (s["kind"], s["id_column"], s["labelled"]) == ("classification", "id", 10)
    assert s["coverage"] == pytest.approx(10 / 16) and s["classes"] == {"a": 5, "b": 5}
    assert City.load(city).read_labels("zone")["label"].tolist() == ["a", "b"] * 5


def test_replace_existing_label(city: Path, tmp_path: Path) -> None:
    ids = _region_ids(city)
    csv = tmp_path / "pop.csv"
    pd.DataFrame({"region_id": ids, "pop": 7.0}).to_csv(csv, index=False)
    s = add_labels(city, csv, name="population", column="pop")
    assert s["replaced"]
    manifest = tomllib.loads((city / CITY_MANIFEST).read_text())
    assert manifest["labels"]["population"]["path"] == "labels/population.csv"
    assert (City.load(city).read_labels("population")["value"] == 7.0).all()


def test_duplicates_error_aggregate_or_drop(city: Path, tmp_path: Path) -> None:
    ids = _region_ids(city)
    csv = tmp_path / "dup.csv"
    pd.DataFrame({"region_id": [ids[0], ids[1], ids[0]], "v": [1, 2, 3]}).to_csv(csv, index=False)
    before = snapshot(city)
    with pytest.raises(
        CityError, match=r"dup\.csv row 2: duplicate id 'r00000' \(first at row 0\)"
    ):
        add_labels(city, csv, name="v", column="v")
    assert_untouched(city, before)
    s = add_labels(city, csv, name="v", column="v", aggregate="sum")
    assert City.load(city).read_labels("v")["value"].tolist() == [4.0, 2.0]
    s = add_labels(city, csv, name="v", column="v", drop_invalid=True)
    assert s["dropped_by_reason"] == {"duplicate_id": 1} and s["replaced"]
    assert City.load(city).read_labels("v")["value"].tolist() == [1.0, 2.0]
    # a first row that is unusable anyway does not make the next one a duplicate
    csv.write_text(f"region_id,v\n{ids[0]},\n{ids[0]},5\n")
    s = add_labels(city, csv, name="v", column="v", drop_invalid=True)
    assert s["dropped_by_reason"] == {"missing_value": 1}
    assert City.load(city).read_labels("v")["value"].tolist() == [5.0]


def test_unknown_columns(city: Path, tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    pd.DataFrame({"zone_code": _region_ids(city), "v": 1.0}).to_csv(csv, index=False)
    before = snapshot(city)
    with pytest.raises(CityError, match=r"t\.csv: no id column.*zone_code, v.*--id-column"):
        add_labels(city, csv, name="v", column="v")
    with pytest.raises(CityError, match=r"t\.csv: no id column 'code'.*--id-column"):
        add_labels(city, csv, name="v", column="v", id_column="code")
    with pytest.raises(CityError, match=r"t\.csv: no value column 'w'.*zone_code, v"):
        add_labels(city, csv, name="v", column="w", id_column="zone_code")
    assert_untouched(city, before)
    assert add_labels(city, csv, name="v", column="v", id_column="zone_code")["labelled"] == 16


def test_unknown_ids_error_or_drop(city: Path, tmp_path: Path) -> None:
    ids = _region_ids(city)
    csv = tmp_path / "u.csv"
    frame = pd.DataFrame({"region_id": [*ids[:3], "nope", "nada"], "v": [1, 2, 3, 4, 5]})
    frame.to_csv(csv, index=False)
    before = snapshot(city)
    with pytest.raises(CityError) as err:
        add_labels(city, csv, name="v", column="v")
    msg = str(err.value)
    assert "u.csv row 3" in msg and "'nope'" in msg and "1 more" in msg
    assert "--drop-invalid" in msg and "\n" not in msg
    assert_untouched(city, before)
    s = add_labels(city, csv, name="v", column="v", drop_invalid=True)
    assert (s["rows"], s["used"], s["dropped"], s["labelled"]) == (5, 3, 2, 3)
    assert s["dropped_by_reason"] == {"unknown_id": 2}


def test_no_matching_ids_hints_at_id_column(city: Path, tmp_path: Path) -> None:
    csv = tmp_path / "x.csv"
    pd.DataFrame({"region_id": ["a", "b"], "v": [1, 2]}).to_csv(csv, index=False)
    with pytest.raises(CityError, match=r"none of the 2 ids.*--id-column"):
        add_labels(city, csv, name="v", column="v", drop_invalid=True)


def test_non_numeric_and_missing_values(city: Path, tmp_path: Path) -> None:
    ids = _region_ids(city)
    rows = f"{ids[0]},1\n{ids[2]},abc\n{ids[3]},inf\n{ids[4]},2.5\n"
    words, blank = tmp_path / "words.csv", tmp_path / "blank.csv"
    words.write_text("region_id,v\n" + rows)
    blank.write_text("region_id,v\n" + f"{ids[1]},\n" + rows)
    before = snapshot(city)
    with pytest.raises(CityError, match=r"words\.csv row 1: value 'abc'.*not a finite number"):
        add_labels(city, words, name="v", column="v", kind="regression")
    with pytest.raises(CityError, match=r"blank\.csv row 0: missing value in column 'v'"):
        add_labels(city, blank, name="v", column="v", kind="regression")
    assert_untouched(city, before)
    s = add_labels(city, blank, name="v", column="v", kind="regression", drop_invalid=True)
    assert s["dropped_by_reason"] == {"missing_value": 1, "non_numeric": 2}
    assert City.load(city).read_labels("v")["value"].tolist() == [1.0, 2.5]
    # without --kind, a column with words in it is a class label
    s = add_labels(city, words, name="w", column="v")
    assert (s["kind"], s["kind_inferred"], s["labelled"]) == ("classification", True, 4)


@pytest.mark.parametrize("name", ["bad name", "../x", "", "a.b"])
def test_label_name_must_be_safe(city: Path, tmp_path: Path, name: str) -> None:
    csv = tmp_path / "v.csv"
    pd.DataFrame({"region_id": _region_ids(city), "v": 1.0}).to_csv(csv, index=False)
    with pytest.raises(CityError, match="letters, digits"):
        add_labels(city, csv, name=name, column="v")


def test_failure_while_writing_leaves_bundle_unchanged(
    city: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    csv = tmp_path / "pop.csv"
    pd.DataFrame({"region_id": _region_ids(city), "pop": 1.0}).to_csv(csv, index=False)
    before = snapshot(city)
    original = Staging.add_label

    def add_then_fail(self: Staging, *args: object, **kwargs: object) -> str:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        raise RuntimeError("disk full")

    monkeypatch.setattr(Staging, "add_label", add_then_fail)
    with pytest.raises(RuntimeError):
        add_labels(city, csv, name="population", column="pop")
    with pytest.raises(RuntimeError):
        label_from_tag(city, "building", name="building")
    assert_untouched(city, before)


# --------------------------------------------------------------------------- overlay

# Regions A, B, C (100 m squares in a row, C far away); sources S1 = [0, 140] x [0, 100]
# (10, class a), S2 = [140, 200] x [0, 100] (40, class b), S3 above A (touching only).
BOXES = [(0, 0, 100, 100), (100, 0, 200, 100), (300, 0, 400, 100)]
SOURCES = [(0, 0, 140, 100), (140, 0, 200, 100), (0, 100, 100, 200)]


@pytest.fixture
def squares(tmp_path: Path) -> Path:
    return _square_bundle(tmp_path / "sq", BOXES)


def test_overlay_hand_computed(squares: Path, tmp_path: Path) -> None:
    src = _write_boxes(tmp_path / "src.gpkg", SOURCES, v=[10, 40, 99], cls=["a", "b", "c"])
    s = add_labels(squares, src, name="mean", column="v")
    assert (s["method"], s["aggregate"], s["geometry"]) == ("overlay", "mean", "polygons")
    assert (s["labelled"], s["total"]) == (2, 3)  # C is not covered: no label, not 0
    got = City.load(squares).read_labels("mean")
    assert got["id"].tolist() == ["r0", "r1"]
    np.testing.assert_allclose(got["value"], [10.0, (10 * 40 + 40 * 60) / 100], rtol=1e-6)

    s = add_labels(squares, src, name="total", column="v", aggregate="sum")
    got = City.load(squares).read_labels("total")["value"].to_numpy()
    np.testing.assert_allclose(got, [10 * 100 / 140, 10 * 40 / 140 + 40], rtol=1e-6)
    assert s["assigned_total"] == pytest.approx(50.0) and s["source_total"] == 149.0
    assert s["area_covered"] == pytest.approx(2 / 3, rel=1e-6)

    s = add_labels(squares, src, name="cls", column="cls")
    assert (s["kind"], s["aggregate"]) == ("classification", "majority")
    assert City.load(squares).read_labels("cls")["label"].tolist() == ["a", "b"]


def test_overlay_points_and_poi_level(squares: Path, tmp_path: Path) -> None:
    pts = gpd.GeoDataFrame(
        {"v": [1.0, 3.0, 5.0, 100.0]},
        geometry=gpd.points_from_xy(X0 + np.array([10, 20, 150, 250]), Y0 + np.array([50] * 4)),
        crs=METRIC,
    ).to_crs(4326)
    pts.to_file(tmp_path / "pts.geojson")
    s = add_labels(squares, tmp_path / "pts.geojson", name="pm", column="v")
    assert (s["geometry"], s["outside"], s["labelled"]) == ("points", 1, 2)
    assert City.load(squares).read_labels("pm")["value"].tolist() == [2.0, 5.0]
    add_labels(squares, tmp_path / "pts.geojson", name="ps", column="v", aggregate="sum")
    assert City.load(squares).read_labels("ps")["value"].tolist() == [4.0, 5.0]
    with pytest.raises(CityError, match="join them by id"):
        add_labels(squares, tmp_path / "pts.geojson", name="x", column="v", level="poi")

    src = _write_boxes(tmp_path / "src.gpkg", SOURCES, v=[10, 40, 99], cls=["a", "b", "c"])
    s = add_labels(squares, src, name="poicls", column="cls", level="poi")
    assert (s["level"], s["labelled"], s["total"]) == ("poi", 2, 3)
    got = City.load(squares).read_labels("poicls")
    assert dict(zip(got["id"], got["label"], strict=True)) == {"p0": "a", "p1": "b"}
    with pytest.raises(CityError, match="regions only"):
        add_labels(squares, src, name="x", column="v", level="poi", aggregate="sum")


def test_geometry_file_with_id_column_joins_by_id(squares: Path, tmp_path: Path) -> None:
    far = [(5000, 5000, 5100, 5100)] * 2  # geometries elsewhere: ignored when joining by id
    src = _write_boxes(tmp_path / "ids.gpkg", far, rid=["r2", "r0"], v=[7.0, 8.0])
    s = add_labels(squares, src, name="v", column="v", id_column="rid")
    assert (s["method"], s["labelled"]) == ("id", 2)
    assert City.load(squares).read_labels("v")["value"].tolist() == [8.0, 7.0]


def test_overlay_bad_rows(squares: Path, tmp_path: Path) -> None:
    geoms = [shapely.box(X0, Y0, X0 + 100, Y0 + 100), None, shapely.box(X0, Y0, X0 + 50, Y0 + 50)]
    path = tmp_path / "bad.gpkg"
    gpd.GeoDataFrame({"v": [1.0, 2.0, np.nan]}, geometry=geoms, crs=METRIC).to_file(path)
    before = snapshot(squares)
    with pytest.raises(CityError, match=r"bad\.gpkg row 1: missing or empty geometry"):
        add_labels(squares, path, name="v", column="v")
    assert_untouched(squares, before)
    s = add_labels(squares, path, name="v", column="v", drop_invalid=True)
    assert s["dropped_by_reason"] == {"missing_geometry": 1, "missing_value": 1}
    assert City.load(squares).read_labels("v")["value"].tolist() == [1.0]


def test_overlay_sum_conserved_on_synthetic_city(city: Path, tmp_path: Path) -> None:
    c = City.load(city)
    regions = c.regions.to_crs(c.crs)
    union = regions.union_all()
    x0, y0, x1, y1 = union.bounds
    xs, ys = np.arange(x0 - 60, x1 + 60, 75.0), np.arange(y0 - 60, y1 + 60, 75.0)
    cells = [shapely.box(a, b, a + 75, b + 75) for a in xs for b in ys]
    rng = np.random.default_rng(0)
    grid = gpd.GeoDataFrame({"pop": rng.integers(0, 500, len(cells))}, geometry=cells, crs=c.crs)
    inside = grid[grid.within(union)]
    inside.to_crs(4326).to_file(tmp_path / "inside.gpkg")
    s = add_labels(city, tmp_path / "inside.gpkg", name="pop", column="pop", aggregate="sum")
    total = City.load(city).read_labels("pop")["value"].sum()
    assert total == pytest.approx(inside["pop"].sum(), rel=1e-6)
    assert s["assigned_total"] == pytest.approx(s["source_total"], rel=1e-6)

    grid.to_file(tmp_path / "grid.gpkg")  # the whole grid, partly outside the city
    add_labels(city, tmp_path / "grid.gpkg", name="pop", column="pop", aggregate="sum")
    total = City.load(city).read_labels("pop")["value"].sum()
    share = grid.intersection(union).area / grid.area
    assert total == pytest.approx((grid["pop"] * share).sum(), rel=1e-6)
    assert inside["pop"].sum() <= total <= grid[grid.intersects(union)]["pop"].sum()


# --------------------------------------------------------------------------- from a tag


def test_label_from_tag_removes_the_tag(city: Path) -> None:
    tags = [json.loads(t) for t in gpd.read_parquet(city / "pois.parquet")["tags"]]
    values = pd.Series([t.get("building") for t in tags]).dropna().str.lower()
    counts = values[values != "yes"].value_counts()
    expected = counts[counts >= 10]
    only_building = sum(1 for t in tags if list(t) == ["building"])
    assert only_building > 0  # the tiny city has POIs tagged only building=yes

    s = label_from_tag(city, "building", name="building", min_count=10)
    assert s["classes"] == expected.to_dict() and s["labelled"] == expected.sum()
    assert s["tags_removed"] == len(values) and s["empty_tags"] == only_building
    assert s["ignored"] == int((values == "yes").sum())
    c = City.load(city)
    assert all("building" not in t for t in c.poi_tags())
    assert sum(t == {} for t in c.poi_tags()) == only_building
    got = c.read_labels("building")
    assert set(got["label"]) == set(expected.index)
    assert c.pois.footprint.notna().sum() == 82  # the rest of the layer is kept

    with pytest.raises(CityError, match=r"no POI .* 'building' tag.*most common"):
        label_from_tag(city, "building", name="again")


def test_label_from_tag_errors(city: Path) -> None:
    before = snapshot(city)
    with pytest.raises(CityError, match="lower --min-count"):
        label_from_tag(city, "building", name="b", min_count=1000)
    with pytest.raises(CityError, match="letters, digits"):
        label_from_tag(city, "building", name="b c")
    assert_untouched(city, before)


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def poa_h3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle whose regions are the 1227 H3 res-9 cells of poa_hexgrid.csv, one POI each."""
    import h3

    df = pd.read_csv(REAL / "porto_alegre" / "poa_hexgrid.csv", dtype={"id": str})
    polys = [shapely.Polygon([(lon, lat) for lat, lon in h3.cell_to_boundary(c)]) for c in df.id]
    regions = gpd.GeoDataFrame({"region_id": df.id}, geometry=polys, crs=4326)
    pois = gpd.GeoDataFrame(
        {"poi_id": [f"p{i}" for i in range(len(df))], "tags": ['{"amenity": "x"}'] * len(df)},
        geometry=gpd.points_from_xy(df.lon, df.lat),
        crs=4326,
    )
    root = tmp_path_factory.mktemp("poa") / "poa"
    with new_bundle(root, "poa") as st:
        st.add_layer("regions", regions)
        st.add_layer("pois", pois)
    return root


def test_real_porto_alegre_h3_by_id(poa_h3: Path) -> None:
    csv = REAL / "porto_alegre" / "poa_hexgrid.csv"
    s = add_labels(poa_h3, csv, name="population", column="population", id_column="id")
    assert s["labelled"] == 1227 and s["coverage"] == 1.0
    # jobs is empty in 5 cells: an error naming the first row, or dropped with a count
    with pytest.raises(CityError, match=r"poa_hexgrid\.csv row 69: missing value.*4 more"):
        add_labels(poa_h3, csv, name="jobs", column="jobs", id_column="id")
    s = add_labels(poa_h3, csv, name="jobs", column="jobs", id_column="id", drop_invalid=True)
    assert (s["labelled"], s["dropped"]) == (1222, 5)
    labels = City.load(poa_h3).read_labels("population")
    assert labels["value"].sum() == pd.read_csv(csv)["population"].sum()


def test_real_helsinki_grid_sum_conserved(tmp_path: Path) -> None:
    path = REAL / "helsinki" / "helsinki_population_grid_2020.gpkg"
    xs, ys = np.linspace(24.915, 24.95, 4), np.linspace(60.158, 60.172, 3)
    boxes = [shapely.box(xs[i], ys[j], xs[i + 1], ys[j + 1]) for i in range(3) for j in range(2)]
    regions = gpd.GeoDataFrame({"region_id": [f"r{i}" for i in range(6)]}, geometry=boxes, crs=4326)
    pois = gpd.GeoDataFrame(
        {"poi_id": [f"p{i}" for i in range(6)], "tags": ["{}"] * 6},
        geometry=regions.to_crs(3067).centroid.to_crs(4326),
    )
    with new_bundle(tmp_path / "hel", "helsinki-part", crs="EPSG:3067") as st:
        st.add_layer("regions", regions)
        st.add_layer("pois", pois)
    s = add_labels(tmp_path / "hel", path, name="population", column="population", aggregate="sum")
    assert (s["method"], s["labelled"], s["rows"]) == ("overlay", 6, 92)
    total = City.load(tmp_path / "hel").read_labels("population")["value"].sum()
    grid = gpd.read_file(path).to_crs(3067)
    union = regions.to_crs(3067).union_all()
    expected = (grid["population"] * grid.intersection(union).area / grid.area).sum()
    assert total == pytest.approx(expected, rel=1e-6)
    fully, touching = grid[grid.within(union)], grid[grid.intersects(union)]
    assert fully["population"].sum() <= total <= touching["population"].sum()
    assert s["source_total"] == grid["population"].sum()
