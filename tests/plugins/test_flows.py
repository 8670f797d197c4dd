"""Mobility as flows: the od layer, flow features, L_flow, and a city with no POIs."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from mfm.core.bundle.city import City
from mfm.core.config import make_config
from mfm.core.errors import CityError
from mfm.core.pipeline import run
from mfm.plugins.trajectory.flows import RANK, flow_features, od_pairs


def _od_only(src, dst, od: pd.DataFrame):
    """A bundle with the regions of ``src``, an od.csv and the region labels, no POIs."""
    dst.mkdir()
    shutil.copy(src / "regions.parquet", dst / "regions.parquet")
    shutil.copytree(src / "labels", dst / "labels")
    od.to_csv(dst / "od.csv", index=False)
    (dst / "city.toml").write_text(
        'name = "od-only"\ncrs = "EPSG:32632"\n[layers]\nregions = "regions.parquet"\n'
        'od = "od.csv"\n[labels.population]\npath = "labels/population.csv"\n'
        'level = "region"\nkind = "regression"\n'
    )
    return dst


def _gravity_od(city: City, seed: int = 0) -> pd.DataFrame:
    """Trips between every pair of regions, more between near ones."""
    xy = city.xy("regions")
    ids = city.regions["region_id"].to_numpy()
    d = np.linalg.norm(xy[:, None] - xy[None], axis=2)
    rate = 200.0 * np.exp(-d / 1500.0)
    counts = np.random.default_rng(seed).poisson(rate)
    o, t = np.nonzero(counts)
    return pd.DataFrame({"origin": ids[o], "destination": ids[t], "count": counts[o, t]})


def test_flow_features_have_a_width_independent_of_the_city(tiny_city):
    city = City.load(tiny_city)
    o, d, w = od_pairs(city)  # from the trajectories' end points
    assert w.sum() == city.trajectories["traj_id"].nunique()
    few = flow_features(o, d, w, city.xy("regions"))
    xy = np.random.default_rng(0).random((40, 2)) * 5000
    many = flow_features(np.arange(40), (np.arange(40) * 7) % 40, np.ones(40), xy)
    assert few.shape[1] == many.shape[1] == 5 + 2 * 4 + 2 * RANK
    np.testing.assert_allclose(few[:, 5:9].sum(axis=1)[w.size and np.unique(o)], 1.0, atol=1e-6)
    again = flow_features(o, d, w, city.xy("regions"))
    np.testing.assert_array_equal(few, again)  # deterministic signs


def test_od_layer_sums_repeated_pairs(tiny_city, tmp_path):
    city = City.load(tiny_city)
    ids = city.regions["region_id"].to_numpy()
    od = pd.DataFrame({"origin": [ids[0], ids[0], ids[1]], "destination": [ids[2]] * 3,
                       "count": [2, 3, 1.5]})  # fmt: skip
    other = City.load(_od_only(tiny_city, tmp_path / "b", od))
    o, d, w = od_pairs(other)
    rows = sorted(zip(o.tolist(), d.tolist(), w.tolist(), strict=True))
    assert rows == [(0, 2, 5.0), (1, 2, 1.5)]


@pytest.mark.parametrize(
    ("row", "needle"),
    [({"origin": "nowhere"}, "origin 'nowhere' is not a region_id"), ({"count": 0}, "count 0")],
)
def test_od_rows_must_name_regions_and_count_trips(tiny_city, tmp_path, row, needle):
    od = _gravity_od(City.load(tiny_city))
    for key, value in row.items():
        od.loc[0, key] = value
    bundle = _od_only(tiny_city, tmp_path / "b", od)
    with pytest.raises(CityError, match=needle):
        City.load(bundle)


def test_a_city_with_regions_and_od_flows_but_no_pois_trains(tiny_city, tmp_path):
    city = City.load(tiny_city)
    bundle = _od_only(tiny_city, tmp_path / "b", _gravity_od(city))
    out = tmp_path / "run"
    result = run(make_config(city=bundle, out=out, epochs=2, quiet=True))
    manifest = json.loads((out / "manifest.json").read_text())
    plan = {e["objective"]: e for e in manifest["plan"]}
    assert plan["flow"]["skipped"] is None and "od layer" in plan["flow"]["note"]
    assert plan["global"]["note"].startswith("macro/macro")
    assert [s["name"] for s in manifest["stages"]] == ["flow", "global"]
    flow = manifest["stages"][0]
    assert flow["health"]["flow"]["loss"] < flow["health"]["flow"]["chance"]  # it learned
    assert not (out / "poi_embeddings.parquet").exists()
    assert result.region is not None and result.region.shape == (len(city.regions), 256 + 3)
    assert np.isfinite(result.region).all()
