import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError
from shapely.geometry import Point, box

from mfm.core.bundle.city import City
from mfm.core.cache import FeatureCache
from mfm.core.config import RunConfig
from mfm.core.modality import Context, View
from mfm.core.plugins import LOAD_ENV, load_registry
from mfm.plugins.trajectory.features import feature_names, mobility_features
from mfm.plugins.trajectory.modality import TrajectoryModality, TrajectoryOptions

CRS = "EPSG:32632"
X0, Y0 = 500_000.0, 5_000_000.0
DAY, H = 86_400, 3_600


def _regions() -> gpd.GeoDataFrame:
    """Three 1 km squares side by side (west to east): regions 0, 1, 2."""
    squares = [box(X0 + i * 1000, Y0, X0 + (i + 1) * 1000, Y0 + 1000) for i in range(3)]
    return gpd.GeoDataFrame({"region_id": ["a", "b", "c"]}, geometry=squares, crs=CRS).to_crs(
        "EPSG:4326"
    )


def _trips(rows: list[tuple[str, int, float, float]]) -> gpd.GeoDataFrame:
    ids, t, x, y = zip(*rows, strict=True)
    geom = [Point(X0 + a, Y0 + b) for a, b in zip(x, y, strict=True)]
    frame = gpd.GeoDataFrame({"traj_id": ids, "t": np.array(t, np.int64)}, geometry=geom, crs=CRS)
    return frame.to_crs("EPSG:4326")


# two morning trips from region 0 to region 2 (one through region 1), one trip outside all
# regions, rows deliberately out of order
MORNING = [
    ("b", DAY + 9 * H + 1200, 2700, 400),
    ("a", DAY + 8 * H, 500, 500),
    ("a", DAY + 8 * H + 300, 1500, 500),
    ("a", DAY + 8 * H + 600, 2500, 500),
    ("b", DAY + 9 * H, 300, 600),
    ("z", 14 * H, -5000, -5000),
    ("z", 14 * H + 60, -5200, -5000),
]


def test_morning_trips_land_in_the_right_rows_and_bins():
    raw = mobility_features(_trips(MORNING), _regions(), CRS, standardize=False)
    names = feature_names()
    assert raw.shape == (3, len(names))
    col = {n: raw[:, i] for i, n in enumerate(names)}
    np.testing.assert_allclose(col["origin_density"], np.log1p([2, 0, 0]), rtol=1e-3)
    np.testing.assert_allclose(col["destination_density"], np.log1p([0, 0, 2]), rtol=1e-3)
    np.testing.assert_allclose(col["point_density"], np.log1p([2, 1, 2]), rtol=1e-3)
    np.testing.assert_allclose(col["in_out_ratio"], np.log([1 / 3, 1, 3]), rtol=1e-5)
    np.testing.assert_allclose(col["depart_h8_12"], [1, 0, 0])
    np.testing.assert_allclose(col["arrive_h8_12"], [0, 0, 1])
    depart = raw[:, [i for i, n in enumerate(names) if n.startswith("depart_")]]
    arrive = raw[:, [i for i, n in enumerate(names) if n.startswith("arrive_")]]
    assert depart.sum() == 1 and arrive.sum() == 1  # nothing in any other row or bin
    np.testing.assert_allclose(col["trip_km_2_4"], [1, 0, 0])  # both trips are 2.0-2.4 km
    np.testing.assert_allclose(col["intra_share"], [0, 0, 0])
    np.testing.assert_allclose(col["stay_density"], [0, 0, 0])


def test_stay_points_and_intra_region_trips():
    rows = [
        ("s", 14 * H, 1200, 500),
        ("s", 14 * H + 600, 1210, 500),
        ("s", 14 * H + 660, 1800, 500),
    ]
    raw = mobility_features(_trips(rows), _regions(), CRS, standardize=False)
    col = {n: raw[:, i] for i, n in enumerate(feature_names())}
    np.testing.assert_allclose(col["stay_density"], np.log1p([0, 1, 0]), rtol=1e-3)
    np.testing.assert_allclose(col["intra_share"], [0, 1, 0])
    np.testing.assert_allclose(col["depart_h12_16"], [0, 1, 0])


def test_timestamps_give_the_same_features_as_seconds():
    trips = _trips(MORNING)
    stamped = trips.assign(t=pd.Timestamp("2024-05-06") + pd.to_timedelta(trips["t"], unit="s"))
    a = mobility_features(trips, _regions(), CRS, standardize=False)
    b = mobility_features(stamped, _regions(), CRS, standardize=False)
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_standardized_columns_are_z_scores():
    feats = mobility_features(_trips(MORNING), _regions(), CRS)
    assert feats.dtype == np.float32
    np.testing.assert_allclose(feats.mean(0), 0, atol=1e-5)
    std = feats.std(0)
    assert np.all(np.isclose(std, 1, atol=1e-4) | np.isclose(std, 0, atol=1e-6))


def test_options_reject_bad_distance_edges():
    with pytest.raises(ValidationError):
        TrajectoryOptions(distance_edges=(1000.0, 500.0))
    with pytest.raises(ValidationError):
        TrajectoryOptions(bins=3)  # unknown key


def test_modality_on_tiny_city_is_cached_and_trains(tiny_city, tmp_path):
    city = City.load(tiny_city)
    cache = FeatureCache(tmp_path)
    ctx = Context(city, RunConfig(city=tiny_city), cache, torch.device("cpu"), 16)
    a, b = TrajectoryModality(), TrajectoryModality()
    a.prepare(ctx)
    b.prepare(ctx)
    assert cache.misses == 1 and cache.hits == 1
    assert a.features.shape == (len(city.regions), len(a.feature_names))
    assert torch.equal(a.features, b.features)
    assert "features" not in a.state_dict()  # checkpoints hold only the head
    idx = torch.arange(len(city.regions))
    emb = a.region_view(idx)
    assert emb.shape == (len(city.regions), 16)
    opt = torch.optim.AdamW(a.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in a.parameters()]
    emb.pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in a.parameters())
    opt.step()
    assert all(not torch.equal(x, p) for x, p in zip(before, a.parameters(), strict=True))


def test_plugin_registers_two_region_views_and_l_flow(monkeypatch):
    monkeypatch.setenv(LOAD_ENV, "")
    reg = load_registry(extra={"trajectory": "mfm.plugins.trajectory"})
    info = reg.plugins["trajectory"]
    assert list(info.modalities) == ["trajectory", "flows"] and list(info.objectives) == ["flow"]
    assert all(m.views == frozenset({View.REGION}) for m in info.modalities.values())
