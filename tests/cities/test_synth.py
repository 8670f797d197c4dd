"""The synthetic city: bundle contract, determinism, atomic writing and planted structure."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.spatial import cKDTree
from scipy.stats import spearmanr

from mfm.cities import synth_images
from mfm.cities.synth import CLASSES, MODALITY_EVIDENCE, generate_city
from mfm.core.constants import CITY_MANIFEST, FOOTPRINT, SVI_DIRECTIONS
from mfm.core.errors import CityError, ConfigError

METRIC = "EPSG:32632"
COLUMNS = {
    "pois": {"poi_id", "geometry", "tags", "footprint"},
    "roads": {"road_id", "geometry", "tags"},
    "regions": {"region_id", "geometry"},
    "svi": {"svi_id", "geometry", *SVI_DIRECTIONS},
    "trajectories": {"traj_id", "t", "geometry"},
}
CATEGORY_KEYS = ("shop", "amenity", "office", "man_made", "craft", "landuse", "leisure")


@pytest.fixture(scope="module")
def small_city(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_city(tmp_path_factory.mktemp("synth") / "small", size="small", seed=0)


def _read(root: Path, layer: str) -> gpd.GeoDataFrame:
    return gpd.read_parquet(root / f"{layer}.parquet")


def test_tiny_bundle_matches_the_contract(tiny_city: Path) -> None:
    manifest = tomllib.loads((tiny_city / CITY_MANIFEST).read_text())
    assert manifest["name"] == "synthetic-tiny-seed0"
    assert manifest["crs"] == METRIC
    assert set(manifest["layers"]) == {*COLUMNS, "satellite"}
    for layer, columns in COLUMNS.items():
        df = _read(tiny_city, layer)
        assert set(df.columns) == columns, layer
        assert len(df) > 0 and df.crs.to_epsg() == 4326, layer
    pois, regions, svi = (_read(tiny_city, n) for n in ("pois", "regions", "svi"))
    assert 9 <= len(regions) <= 16 and 100 <= len(pois) <= 200 and len(svi) == 40
    for df, key in [(pois, "poi_id"), (regions, "region_id"), (svi, "svi_id")]:
        assert df[key].is_unique
    assert _read(tiny_city, "roads").road_id.is_unique
    assert (pois.geom_type == "Point").all() and (regions.geom_type == "Polygon").all()
    assert all(isinstance(json.loads(t), dict) for t in pois.tags)

    minx, miny, maxx, maxy = regions.total_bounds
    assert pois.geometry.x.between(minx, maxx).all() and pois.geometry.y.between(miny, maxy).all()
    assert abs(pois.geometry.y.mean() - 47.37) < 0.05 and abs(pois.geometry.x.mean() - 8.54) < 0.05

    footprint = pois[FOOTPRINT]
    assert isinstance(footprint, gpd.GeoSeries) and footprint.crs.to_epsg() == 4326
    assert 0.3 < footprint.notna().mean() < 0.9
    assert (footprint.dropna().geom_type == "Polygon").all() and footprint.dropna().is_valid.all()

    trips = _read(tiny_city, "trajectories")
    assert trips.t.dtype == np.int64
    assert trips.groupby("traj_id").t.apply(lambda t: t.is_monotonic_increasing).all()
    assert trips.groupby("traj_id").size().between(5, 20).all()

    sat = pd.read_parquet(tiny_city / "satellite.parquet")
    assert sorted(sat.region_id) == sorted(regions.region_id)
    images = [(p, synth_images.SAT_SIZE) for p in sat.image]
    images += [(p, synth_images.SVI_SIZE) for d in SVI_DIRECTIONS for p in svi[d]]
    for path, size in images:
        with Image.open(tiny_city / path) as im:
            assert im.size == (size, size) and im.mode == "RGB"


def test_labels_cover_regions_and_pois(tiny_city: Path) -> None:
    regions, pois = _read(tiny_city, "regions"), _read(tiny_city, "pois")
    for task in ("population", "price"):
        df = pd.read_csv(tiny_city / "labels" / f"{task}.csv")
        assert list(df.columns) == ["region_id", "value"]
        assert list(df.region_id) == list(regions.region_id) and (df.value > 0).all()
    function = pd.read_csv(tiny_city / "labels" / "function.csv")
    assert list(function.columns) == ["poi_id", "label"]
    assert list(function.poi_id) == list(pois.poi_id)
    assert set(function.label) <= set(CLASSES)


def test_same_seed_same_bundle_other_seed_differs(tmp_path: Path, tiny_city: Path) -> None:
    again = generate_city(tmp_path / "again", size="tiny", seed=0)
    other = generate_city(tmp_path / "other", size="tiny", seed=1)
    pd.testing.assert_frame_equal(_read(tiny_city, "pois"), _read(again, "pois"))
    for layer in (*COLUMNS, "satellite"):
        name = f"{layer}.parquet"
        assert (tiny_city / name).read_bytes() == (again / name).read_bytes(), layer
    assert not _read(tiny_city, "pois").equals(_read(other, "pois"))


def test_interrupted_run_leaves_no_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(path: Path, array: np.ndarray) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(synth_images, "save_png", broken)
    out = tmp_path / "city"
    with pytest.raises(RuntimeError, match="disk full"):
        generate_city(out, size="tiny")
    assert list(tmp_path.iterdir()) == []


def test_refuses_existing_bundle_and_unknown_size(tmp_path: Path) -> None:
    (tmp_path / "city").mkdir()
    (tmp_path / "city" / "x").write_text("")
    with pytest.raises(CityError, match="already exists"):
        generate_city(tmp_path / "city", size="tiny")
    with pytest.raises(ConfigError, match="unknown city size"):
        generate_city(tmp_path / "new", size="huge")  # type: ignore[arg-type]
    assert set(MODALITY_EVIDENCE) == {"tags", "footprint", "svi", "satellite", "trajectories"}


def _facade_share(path: Path) -> float:
    """Share of the above-road pixels that are neither sky nor trees."""
    a = np.asarray(Image.open(path), dtype=float)[: synth_images.HORIZON]
    not_sky = np.abs(a - a[1:2]).sum(-1) > 40  # rows 0-3 always show sky
    tree = a[..., 1] - a[..., 2] > 40
    return float((not_sky & ~tree).mean())


def _green_share(path: Path) -> float:
    a = np.asarray(Image.open(path), dtype=float)
    green = (a[..., 1] - a[..., 0] > 30) & (a[..., 1] - a[..., 2] > 30)
    road = np.abs(a - synth_images.SAT_ROAD).sum(-1) < 30
    return float(green.sum() / max((~road).sum(), 1))


def test_planted_structure_is_visible_in_images(small_city: Path) -> None:
    regions = _read(small_city, "regions").to_crs(METRIC)
    svi = _read(small_city, "svi").to_crs(METRIC)
    population = pd.read_csv(small_city / "labels" / "population.csv").value.to_numpy()
    assert 60 <= len(regions) <= 85

    # Street view reveals height: the facade share tracks population density.
    facade = np.mean([[_facade_share(small_city / p) for p in svi[d]] for d in SVI_DIRECTIONS], 0)
    centres = np.column_stack([regions.centroid.x, regions.centroid.y])
    nearest = cKDTree(centres).query(np.column_stack([svi.geometry.x, svi.geometry.y]))[1]
    per_region = pd.Series(facade).groupby(nearest).mean()
    rho = spearmanr(per_region.to_numpy(), population[per_region.index]).statistic
    assert rho > 0.3

    # Satellite reveals greenery: green regions are less densely populated.
    sat = pd.read_parquet(small_city / "satellite.parquet")
    green = np.array([_green_share(small_city / p) for p in sat.image])
    assert spearmanr(green, population).statistic < -0.3


def test_tags_do_not_determine_function_but_footprints_help(small_city: Path) -> None:
    pois = _read(small_city, "pois")
    labels = pd.read_csv(small_city / "labels" / "function.csv").label
    tags = pois.tags.map(json.loads)
    informative = tags.map(
        lambda t: any(k in t for k in CATEGORY_KEYS) or t.get("building", "yes") != "yes"
    )
    assert 0.2 < 1 - informative.mean() < 0.4
    assert labels[~informative].nunique() >= 5  # the same vague tags hide many functions
    area = pois[FOOTPRINT].to_crs(METRIC).area.groupby(labels).median()
    assert area["industrial"] > 5 * area["residential"]
    assert area["office"] > 2 * area["residential"]
