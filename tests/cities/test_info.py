"""``city_info``: layer counts, extent and label summaries of a bundle, and its rich table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from rich.console import Console

from mfm.cities.bundle import new_bundle
from mfm.cities.info import city_info, info_table
from mfm.core.constants import CITY_MANIFEST
from mfm.core.errors import CityError


def _render(info: dict) -> str:
    console = Console(record=True, width=140)
    console.print(info_table(info))
    return console.export_text()


def test_tiny_city_info(tiny_city: Path) -> None:
    info = city_info(tiny_city)
    json.dumps(info)
    assert info["name"] == "synthetic-tiny-seed0"
    assert (info["crs"], info["crs_guessed"]) == ("EPSG:32632", False)
    layers = info["layers"]
    assert list(layers) == ["pois", "roads", "regions", "svi", "satellite", "trajectories"]

    pois = gpd.read_parquet(tiny_city / "pois.parquet")
    assert layers["pois"]["count"] == len(pois)
    assert layers["pois"]["footprints"] == int(pois["footprint"].notna().sum())
    x0, y0, x1, y1 = info["bbox"]
    lon, lat = pois.geometry.x, pois.geometry.y
    assert x0 <= lon.min() and lon.max() <= x1 and y0 <= lat.min() and lat.max() <= y1

    roads = gpd.read_parquet(tiny_city / "roads.parquet").to_crs(32632)
    assert layers["roads"]["length_km"] == pytest.approx(roads.length.sum() / 1000, abs=1e-3)
    area = gpd.read_parquet(tiny_city / "regions.parquet").to_crs(32632).area / 1e6
    assert layers["regions"]["count"] == len(area)
    assert layers["regions"]["median_area_km2"] == pytest.approx(area.median(), rel=1e-4)
    assert layers["svi"]["images"] == 4 * layers["svi"]["count"]
    traj = pd.read_parquet(tiny_city / "trajectories.parquet")
    assert layers["trajectories"]["count"] == traj["traj_id"].nunique()
    assert layers["trajectories"]["points"] == len(traj)

    pop = info["labels"]["population"]
    values = pd.read_csv(tiny_city / "labels" / "population.csv")["value"]
    assert (pop["level"], pop["kind"], pop["coverage"]) == ("region", "regression", 1.0)
    assert pop["min"] == pytest.approx(values.min()) and pop["max"] == pytest.approx(values.max())
    assert pop["mean"] == pytest.approx(values.mean())
    fn = info["labels"]["function"]
    counts = pd.read_csv(tiny_city / "labels" / "function.csv")["label"].value_counts()
    assert (fn["kind"], fn["classes"], fn["labelled"]) == ("classification", 8, 150)
    assert list(fn["top"].values()) == sorted(counts.to_numpy(), reverse=True)[:5]

    text = _render(info)
    for word in ("synthetic-tiny-seed0", "EPSG:32632", "trajectories", "population", "8 classes"):
        assert word in text


def test_guessed_crs_partial_labels_no_optional_layers(tmp_path: Path) -> None:
    boxes = [shapely.box(24.94 + i * 0.01, 60.17, 24.95 + i * 0.01, 60.175) for i in range(4)]
    regions = gpd.GeoDataFrame({"region_id": ["a", "b", "c", "d"]}, geometry=boxes, crs=4326)
    pois = gpd.GeoDataFrame(
        {"poi_id": ["p0", "p1"], "tags": ['{"shop": "bakery"}', "{}"]},
        geometry=gpd.points_from_xy([24.945, 24.955], [60.172, 60.172]),
        crs=4326,
    )
    root = tmp_path / "b"
    with new_bundle(root, "bare") as st:
        st.add_layer("regions", regions)
        st.add_layer("pois", pois)
        st.add_label(
            "rent",
            pd.DataFrame({"region_id": ["a", "c"], "value": [1.0, 3.0]}),
            "region",
            "regression",
        )
    info = city_info(root)
    assert (info["crs"], info["crs_guessed"]) == ("EPSG:32635", True)
    assert set(info["layers"]) == {"pois", "regions"}
    assert info["layers"]["pois"] == {"file": "pois.parquet", "count": 2, "footprints": 0}
    rent = info["labels"]["rent"]
    assert (rent["labelled"], rent["total"], rent["coverage"]) == (2, 4, 0.5)
    assert (rent["min"], rent["mean"], rent["max"]) == (1.0, 2.0, 3.0)
    np.testing.assert_allclose(info["bbox"], [24.94, 60.17, 24.98, 60.175])
    assert "guessed" in _render(info)


def test_invalid_bundle_is_a_city_error(tiny_city: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(tiny_city, tmp_path / "c"))
    (root / CITY_MANIFEST).write_text((root / CITY_MANIFEST).read_text() + "\nbogus = 1\n")
    with pytest.raises(CityError, match="unknown key 'bogus'"):
        city_info(root)
