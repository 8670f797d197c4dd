"""Tests of the terrain plugin: zonal statistics, the modality, the objective, the hooks.

Run from the urban-mfm repository root: ``python -m pytest examples/mfm-plugin-terrain/tests``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from mfm.core.bundle.city import City
from mfm.core.cache import FeatureCache
from mfm.core.config import RunConfig, make_config
from mfm.core.errors import MfmError
from mfm.core.losses import info_nce
from mfm.core.modality import Context, View
from mfm.core.model import UrbanModel
from mfm.core.plugins import LOAD_ENV, load_registry
from mfm.core.scales import Scale
from rasterio.crs import CRS
from rasterio.transform import from_origin
from shapely.geometry import box

from mfm_terrain.dem import (
    DEM_FILE,
    describe_dem,
    feature_names,
    pixel_size_m,
    standardize,
    terrain_features,
    write_city_dem,
)
from mfm_terrain.modality import TerrainModality, TerrainOptions
from mfm_terrain.objective import TerrainObjective, TerrainObjectiveOptions, mine_similar_pairs

UTM = "EPSG:32632"
X0, Y0 = 500_000.0, 5_000_000.0
NODATA = -9999.0
COL = {n: i for i, n in enumerate(feature_names())}
REAL_DATA = Path(__file__).resolve().parents[3] / "tests" / "data"  # urban-mfm's samples

# rasterio 1.4 still multiplies Affine objects with ``*``, which affine 3 deprecates
pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")


# ------------------------------------------------------------------------------ helpers


def _write(path: Path, z: np.ndarray, transform: Affine, crs: str, nodata: float | None) -> Path:
    profile = {
        "driver": "GTiff",
        "width": z.shape[1],
        "height": z.shape[0],
        "count": 1,
        "dtype": "float32",
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(z.astype(np.float32), 1)
    return path


def _ramp(path: Path) -> Path:
    """40 x 20 cells of 10 m; z = 5 + 0.1 * x (metres east of X0); x in 200..250 is nodata."""
    xs = (np.arange(40) + 0.5) * 10
    z = np.tile(5 + 0.1 * xs, (20, 1))
    z[:, 20:25] = NODATA
    return _write(path, z, from_origin(X0, Y0 + 200, 10, 10), UTM, NODATA)


def _squares(*boxes: tuple[float, float, float, float]) -> gpd.GeoSeries:
    """Boxes given in metres relative to (X0, Y0), as a GeoSeries in EPSG:4326."""
    geoms = [box(X0 + a, Y0 + b, X0 + c, Y0 + d) for a, b, c, d in boxes]
    return gpd.GeoSeries(geoms, crs=UTM).to_crs("EPSG:4326")


@pytest.fixture(scope="module")
def city_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic city with a synthetic hill DEM at its root."""
    from mfm.cities.synth import generate_city

    root = generate_city(tmp_path_factory.mktemp("city") / "tiny", size="tiny", seed=0)
    write_city_dem(root)
    return root


@pytest.fixture(scope="module")
def city(city_root: Path) -> City:
    return City.load(city_root)


def _ctx(city: City, cache: Path, **plugin: object) -> Context:
    config = RunConfig(city=city.root, plugin={"terrain": plugin} if plugin else {})
    return Context(city, config, FeatureCache(cache), torch.device("cpu"), 16, quiet=True)


def _fake_terrain(features: np.ndarray, dim: int = 16, seed: int = 0) -> TerrainModality:
    """A terrain modality with hand-made standardized features (all on the DEM)."""
    mod = TerrainModality()
    feats = torch.as_tensor(features, dtype=torch.float32)
    mod.register_buffer("features", feats, persistent=False)
    mod.register_buffer("raw", feats.clone(), persistent=False)
    mod.register_buffer("has_data", torch.ones(len(feats), dtype=torch.bool), persistent=False)
    torch.manual_seed(seed)
    from mfm.core.heads import ProjectionHead

    mod.head = ProjectionHead(feats.shape[1], dim)
    return mod


def _prepared(mod: TerrainModality, **opts: object) -> tuple[UrbanModel, TerrainObjective]:
    obj = TerrainObjective(TerrainObjectiveOptions(**opts))
    model = UrbanModel([mod], [obj], mod.head[-1].out_features)
    obj.prepare(None)  # type: ignore[arg-type] - prepare reads only the modality
    return model, obj


# ------------------------------------------------------------------ zonal statistics


def test_ramp_statistics_nodata_and_outside(tmp_path: Path) -> None:
    dem = _ramp(tmp_path / "ramp.tif")
    regions = _squares((0, 0, 100, 100), (150, 0, 250, 100), (5000, 5000, 5100, 5100))
    raw = terrain_features(dem, regions)
    a, b, c = raw
    # region a: cells x = 5..95, 10 rows each
    vals = np.repeat(5 + 0.1 * (np.arange(10) * 10 + 5.0), 10)
    assert a[COL["elev_mean"]] == pytest.approx(vals.mean())
    assert a[COL["elev_std"]] == pytest.approx(vals.std())
    assert a[COL["elev_min"]] == pytest.approx(5.5) and a[COL["elev_max"]] == pytest.approx(14.5)
    assert a[COL["elev_range"]] == pytest.approx(9.0)
    for p in (10, 25, 50, 75, 90):
        assert a[COL[f"elev_p{p}"]] == pytest.approx(np.percentile(vals, p))
    assert a[COL["slope_mean"]] == pytest.approx(math.degrees(math.atan(0.1)), rel=1e-5)
    assert a[COL["slope_std"]] == pytest.approx(0.0, abs=1e-5)
    assert a[COL["coverage"]] == pytest.approx(1.0) and a[COL["has_data"]] == 1
    # region b: x = 150..250, the half x >= 200 is nodata
    vals_b = np.repeat(5 + 0.1 * (np.arange(15, 20) * 10 + 5.0), 10)
    assert b[COL["elev_mean"]] == pytest.approx(vals_b.mean())
    assert b[COL["elev_max"]] == pytest.approx(24.5)  # x = 195 m, the last valid cell
    assert b[COL["coverage"]] == pytest.approx(0.5) and b[COL["has_data"]] == 1
    assert b[COL["slope_mean"]] == pytest.approx(math.degrees(math.atan(0.1)), rel=1e-5)
    # region c lies outside the DEM: all zeros
    assert np.all(c == 0)


def test_large_windows_are_read_decimated(tmp_path: Path) -> None:
    dem = _ramp(tmp_path / "ramp.tif")
    regions = _squares((0, 0, 100, 100), (150, 0, 250, 100))
    full = terrain_features(dem, regions)
    coarse = terrain_features(dem, regions, max_cells=200)  # 40 x 20 cells -> 20 x 10
    a = COL["elev_mean"]
    assert coarse[0, a] == pytest.approx(full[0, a])  # averaging keeps a ramp's mean
    assert coarse[0, COL["elev_min"]] == pytest.approx(6.0)  # 20 m cells: 5 + 0.1 * 10
    assert coarse[0, COL["slope_mean"]] == pytest.approx(full[0, COL["slope_mean"]], rel=1e-5)
    assert coarse[1, COL["has_data"]] == 1 and 0 < coarse[1, COL["coverage"]] < 1


def test_region_smaller_than_a_cell_takes_the_cells_it_touches(tmp_path: Path) -> None:
    dem = _ramp(tmp_path / "ramp.tif")
    raw = terrain_features(dem, _squares((11, 11, 14, 14)))  # inside cell x 10..20, no centre
    assert raw[0, COL["has_data"]] == 1
    assert raw[0, COL["elev_mean"]] == pytest.approx(5 + 0.1 * 15)
    assert raw[0, COL["coverage"]] == pytest.approx(1.0)  # clipped: the cell is larger


def test_geographic_pixel_size_is_in_metres() -> None:
    t = Affine(1e-4, 0, 24.9, 0, -1e-4, 60.0)
    dx, dy = pixel_size_m(CRS.from_epsg(4326), t, 3)
    assert dx[0] == pytest.approx(111_320 * 1e-4 * math.cos(math.radians(60.0)), rel=0.01)
    assert dy[0] == pytest.approx(11.13, rel=0.01)
    dx_utm, dy_utm = pixel_size_m(CRS.from_string(UTM), from_origin(X0, Y0, 2.5, 5.0), 2)
    assert list(dx_utm) == [2.5, 2.5] and list(dy_utm) == [5.0, 5.0]


def test_standardize_over_regions_with_data() -> None:
    raw = np.zeros((4, len(COL)))
    raw[:3, : COL["coverage"]] = np.arange(3)[:, None] * np.arange(1, COL["coverage"] + 1)
    raw[:3, COL["coverage"]] = [1.0, 0.5, 1.0]
    raw[:3, COL["has_data"]] = 1
    z = standardize(raw)
    stats = z[:3, : COL["coverage"]]
    np.testing.assert_allclose(stats.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(stats.std(0), 1)
    assert np.all(z[3, : COL["coverage"]] == 0)  # no data: the mean
    assert z[3, COL["has_data"]] < 0 < z[0, COL["has_data"]]


# ------------------------------------------------------------------------- modality


def test_modality_reads_dem_tif_in_the_city_root(city: City, tmp_path: Path) -> None:
    ctx = _ctx(city, tmp_path / "cache")
    mod = TerrainModality()
    mod.prepare(ctx)
    n = len(city.regions)
    assert mod.features.shape == (n, len(COL)) and bool(mod.has_data.all())
    assert mod.region_view(torch.arange(4)).shape == (4, 16)
    raw = mod.raw.numpy()
    assert np.all((raw[:, COL["elev_min"]] >= 20) & (raw[:, COL["elev_max"]] <= 95))
    assert raw[:, COL["elev_mean"]].std() > 5  # the hill makes regions differ
    assert mod.fingerprint()["dem_used"]["file"].endswith(DEM_FILE)
    again = TerrainModality()
    again.prepare(ctx)  # second prepare: from the feature cache
    assert ctx.cache.hits == 1
    torch.testing.assert_close(again.features, mod.features)


def test_dem_option_and_missing_dem(city: City, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere.tif"
    other.write_bytes((city.root / DEM_FILE).read_bytes())
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in city.root.iterdir():  # the city without its DEM
        if f.name != DEM_FILE:
            (bare / f.name).symlink_to(f)
    bare_city = City.load(bare)
    with pytest.raises(MfmError) as err:
        TerrainModality().prepare(_ctx(bare_city, tmp_path / "c1"))
    msg = str(err.value)
    assert "\n" not in msg and str(bare / DEM_FILE) in msg and "[plugin.terrain] dem" in msg
    mod = TerrainModality(TerrainOptions(dem=str(other)))
    mod.prepare(_ctx(bare_city, tmp_path / "c2", dem=str(other)))
    assert bool(mod.has_data.all())
    with pytest.raises(MfmError, match=r"nosuch\.tif"):
        TerrainModality(TerrainOptions(dem="nosuch.tif")).prepare(_ctx(bare_city, tmp_path / "c3"))
    cfg = make_config(city=bare, plugin={"terrain": {"dem": str(other), "percentiles": [50]}})
    assert TerrainOptions.model_validate(cfg.plugin["terrain"]).percentiles == (50.0,)
    with pytest.raises(ValueError, match="percentiles"):
        TerrainOptions(percentiles=(10, 120))


def test_dem_that_misses_the_city_is_an_error(city: City, tmp_path: Path) -> None:
    z = np.ones((10, 10))
    far = _write(tmp_path / "far.tif", z, from_origin(X0, Y0, 10, 10), UTM, None)
    with pytest.raises(MfmError, match="covers none of the 16 regions"):
        TerrainModality(TerrainOptions(dem=str(far))).prepare(_ctx(city, tmp_path / "c"))


# ------------------------------------------------------------------------ objective


def test_mining_rule_selects_exactly_the_similar_pairs() -> None:
    x = np.array([[1, 0, 0], [0.99, 0.1, 0], [0, 1, 0], [-1, 0, 0], [0, 0, 0], [0.95, 0, 0.2]])
    expected = {(0, 1), (1, 0), (0, 5), (5, 0), (1, 5), (5, 1)}
    for block in (1, 2, 1024):
        pairs = mine_similar_pairs(x, 0.9, block=block)
        assert {tuple(p) for p in pairs.tolist()} == expected
    capped = mine_similar_pairs(x, 0.9, max_per_row=1)
    assert {tuple(p) for p in capped.tolist()} == {(0, 1), (1, 0), (5, 0)}
    assert len(mine_similar_pairs(x, 1.01)) == 0


def _clusters() -> np.ndarray:
    """Regions 0-3 point one way, 4-7 another, 8 (its own) a third: [9, 6]."""
    rng = np.random.default_rng(0)
    base = np.zeros((9, 6))
    base[:4, :2] = [2.0, 1.0]
    base[4:8, 2:4] = [2.0, -1.0]
    base[8, 4:] = [1.0, 1.0]
    return base + 0.05 * rng.standard_normal(base.shape)


def test_positives_are_similar_regions_and_beat_dissimilar_ones() -> None:
    model, obj = _prepared(_fake_terrain(_clusters()), threshold=0.9)
    ptr, members = obj.ptr.numpy(), obj.members.numpy()
    for i in range(8):
        partners = set(members[ptr[i] : ptr[i + 1]].tolist())
        assert partners == set(range(4) if i < 4 else range(4, 8)) - {i}
    assert ptr[9] == ptr[8]  # region 8 has no positive
    terrain = model.modalities["terrain"]
    idx = torch.arange(8)
    with torch.no_grad():
        aligned = model("terrain", idx, torch.Generator().manual_seed(0))
        anchor = terrain.region_view(idx)
        swapped = info_nce(anchor, terrain.region_view((idx + 4) % 8))  # other cluster
    assert aligned < swapped - 0.2


def test_region_without_positive_falls_back_to_a_noisy_copy_of_itself() -> None:
    model, obj = _prepared(_fake_terrain(_clusters()), threshold=0.9, noise=0.0)
    terrain = model.modalities["terrain"]
    lonely = torch.tensor([8])
    with torch.no_grad():
        exact = obj.positives(lonely, torch.Generator().manual_seed(0))
        torch.testing.assert_close(exact, terrain.region_view(lonely))
        obj.options.noise = 0.5
        noisy = obj.positives(lonely, torch.Generator().manual_seed(0))
        assert not torch.allclose(noisy, exact)
        again = obj.positives(lonely, torch.Generator().manual_seed(0))
        torch.testing.assert_close(noisy, again)  # randomness only from rng


def test_one_step_trains_the_terrain_head(city: City, tmp_path: Path) -> None:
    mod = TerrainModality()
    mod.prepare(_ctx(city, tmp_path / "cache"))
    model, obj = _prepared(mod, threshold=0.9)
    assert obj.num_items() == len(city.regions) and obj.stats()["pairs"] > 0
    modules = obj.trainable()
    assert modules == [mod]
    params = [p for m in modules for p in m.parameters()]
    before = [p.detach().clone() for p in params]
    opt = torch.optim.SGD(params, lr=0.1)
    loss = model("terrain", torch.arange(obj.num_items()), torch.Generator().manual_seed(0))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, params, strict=True))
    same = model("terrain", torch.arange(8), torch.Generator().manual_seed(1))
    assert same.item() == model("terrain", torch.arange(8), torch.Generator().manual_seed(1)).item()
    assert obj.region_embeddings().shape == (len(city.regions), 16)


# ------------------------------------------------------------------- hooks and plan


def test_hooks_register_a_region_view_and_a_macro_objective(
    city: City, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mfm.core.pipeline import plan_run

    monkeypatch.setenv(LOAD_ENV, "urban-mfm")  # the built-ins; terrain comes from `extra`
    reg = load_registry(extra={"terrain": "mfm_terrain"})
    info = reg.plugins["terrain"]
    assert info.modalities["terrain"].views == frozenset({View.REGION})
    assert info.objectives["terrain"].scale == Scale.MACRO
    plan = plan_run(RunConfig(city=city.root, plugins=["osm", "terrain"]), city, reg)
    status = {e.objective: e.skip for e in plan.entries}
    assert status["terrain"] is None and status["global"] is None  # GLOBAL fuses terrain
    alone = TerrainObjective()
    UrbanModel([], [alone], 8)
    assert "terrain" in alone.skip_reason(city)


def test_terrain_info_command(city_root: Path) -> None:
    import typer
    from typer.testing import CliRunner

    import mfm_terrain

    app = typer.Typer()
    mfm_terrain.register_commands(app=app)
    result = CliRunner().invoke(app, ["terrain-info", str(city_root / DEM_FILE)])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info == describe_dem(city_root / DEM_FILE)
    assert info["crs"] == UTM and info["pixel_m"] == [10.0, 10.0]


# ------------------------------------------------------------------------ real data


def test_real_helsinki_dem_and_population_grid() -> None:
    data = REAL_DATA / "helsinki"
    dem = data / "elevation_model_2021_lapinlahti.tif"
    grid = data / "helsinki_population_grid_2020.gpkg"
    regions = gpd.read_file(grid).geometry
    raw = terrain_features(dem, regions)
    with rasterio.open(dem) as src:
        footprint = box(*src.bounds)  # the DEM is in EPSG:4326, like the grid
    overlap = regions.to_crs(regions.estimate_utm_crs()).intersection(
        gpd.GeoSeries([footprint], crs="EPSG:4326").to_crs(regions.estimate_utm_crs()).iloc[0]
    )
    on_dem = overlap.area.to_numpy() > 1.0
    assert on_dem.sum() >= 1
    np.testing.assert_array_equal(raw[:, COL["has_data"]] == 1, on_dem)
    assert np.all(raw[~on_dem] == 0)
    hit = raw[on_dem]
    assert np.all((hit[:, COL["elev_min"]] >= -5) & (hit[:, COL["elev_max"]] <= 60))
    assert np.all((hit[:, COL["elev_mean"]] > 1) & (hit[:, COL["elev_mean"]] < 40))
    assert np.all((hit[:, COL["slope_mean"]] > 0) & (hit[:, COL["slope_mean"]] < 45))
    # geographic DEM: coverage is measured in metres, so it matches the overlap share
    area = regions.to_crs(regions.estimate_utm_crs()).area.to_numpy()
    np.testing.assert_allclose(
        hit[:, COL["coverage"]], overlap.area.to_numpy()[on_dem] / area[on_dem], atol=0.03
    )
