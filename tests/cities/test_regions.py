"""Road-network polygonization and sliver merging on hand-made street grids."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from mfm.cities.regions import merge_slivers, parse_regions, road_regions
from mfm.core.errors import CityError

CRS = "EPSG:32632"


def _streets(lines: list[shapely.LineString], highway: str = "residential"):
    frame = gpd.GeoDataFrame(
        {"tags": [json.dumps({"highway": highway})] * len(lines)}, geometry=lines, crs=CRS
    ).to_crs("EPSG:4326")
    return frame, pd.Series([highway] * len(lines))


def _grid(n: int, step: float = 100.0, x0: float = 500_000.0, y0: float = 5_000_000.0):
    extent = n * step
    lines = [
        shapely.LineString([(x0 + i * step, y0), (x0 + i * step, y0 + extent)])
        for i in range(n + 1)
    ]
    lines += [
        shapely.LineString([(x0, y0 + i * step), (x0 + extent, y0 + i * step)])
        for i in range(n + 1)
    ]
    return lines


def test_a_street_grid_becomes_its_blocks() -> None:
    roads, highway = _streets(_grid(3))
    regions = road_regions(roads, highway, CRS)
    assert len(regions) == 9
    areas = regions.to_crs(CRS).area.to_numpy()
    np.testing.assert_allclose(areas, 10_000, rtol=1e-3)
    assert regions["region_id"].is_unique


def test_dead_ends_and_footways_do_not_cut_blocks() -> None:
    lines = _grid(2)
    stub = shapely.LineString([(500_050, 5_000_000), (500_050, 5_000_060)])  # dead end
    path = shapely.LineString([(500_000, 5_000_050), (500_100, 5_000_050)])  # footway
    roads, highway = _streets([*lines, stub, path])
    highway.iloc[-1] = "footway"
    assert len(road_regions(roads, highway, CRS)) == 4


def test_median_strip_is_merged_into_a_block() -> None:
    lines = _grid(2)  # 4 blocks of 100 m
    # a dual carriageway: a second line 6 m from the middle horizontal street
    lines.append(shapely.LineString([(500_000, 5_000_106), (500_200, 5_000_106)]))
    roads, highway = _streets(lines)
    regions = road_regions(roads, highway, CRS)
    assert len(regions) == 4  # the two 6 m strips joined their neighbours
    total = regions.to_crs(CRS).area.sum()
    assert total == pytest.approx(200 * 200, rel=1e-3)


def test_isolated_sliver_is_dropped() -> None:
    big = shapely.box(0, 0, 100, 100)
    island = shapely.box(300, 300, 310, 310)  # tiny, touches nothing
    kept = merge_slivers(np.array([big, island], dtype=object), 2_500, 12)
    assert len(kept) == 1 and kept[0].equals(big)


def test_outline_closes_edge_blocks() -> None:
    lines = [shapely.LineString([(500_100, 5_000_000), (500_100, 5_000_300)])]
    roads, highway = _streets(lines)
    outline = gpd.GeoSeries([shapely.box(500_000, 5_000_000, 500_300, 5_000_300)], crs=CRS)
    regions = road_regions(roads, highway, CRS, extent=outline.to_crs("EPSG:4326").iloc[0])
    assert len(regions) == 2
    np.testing.assert_allclose(sorted(regions.to_crs(CRS).area), [30_000, 60_000], rtol=1e-3)


def test_no_drivable_roads_is_an_error() -> None:
    roads, highway = _streets(_grid(1), highway="footway")
    with pytest.raises(CityError, match="h3:9"):
        road_regions(roads, highway, CRS)


def test_parse_regions() -> None:
    assert parse_regions("roads").kind == "roads"
    assert parse_regions("h3:9").resolution == 9
    with pytest.raises(CityError, match="boundary file"):
        parse_regions("nowhere.gpkg")
