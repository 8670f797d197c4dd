"""``mfm city from-osm`` on the real Helsinki and Porto Alegre extracts, and its errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
import shapely

from mfm.cities.from_osm import POI_KEYS, from_osm, parse_bbox
from mfm.cities.osm_reader import check_pbf, read_osm
from mfm.core.bundle.city import City
from mfm.core.bundle.validate import validate_city
from mfm.core.errors import CityError


def test_helsinki_bundle_has_pois_footprints_roads_and_blocks(helsinki_city: Path) -> None:
    assert validate_city(helsinki_city) == []
    city = City.load(helsinki_city)
    assert len(city.pois) >= 1000
    tags = city.poi_tags()
    assert all(any(k in t for k in POI_KEYS) for t in tags)
    with_fp = city.pois[city.pois["footprint"].notna()]
    assert len(with_fp) > 400  # tagged buildings and amenity areas
    assert shapely.contains(with_fp["footprint"].to_numpy(), with_fp.geometry.to_numpy()).all()
    assert set(with_fp["poi_id"].str[0]) <= {"w", "r"}
    assert len(city.roads) > 1000 and (city.roads["length_m"] > 0).all()
    assert all("highway" in json.loads(t) for t in city.roads["tags"])
    # road-network blocks: a few dozen, covering the extract without overlaps
    areas = city.region_area_m2()
    assert 20 <= len(city.regions) <= 200
    assert areas.min() >= 2_500
    metric = city.regions.geometry.to_crs(city.crs)
    assert metric.union_all().area == pytest.approx(areas.sum(), rel=1e-6)
    assert city.crs == "EPSG:32635"  # UTM 35N, estimated and written to city.toml


def test_osm_tags_are_kept_whole(helsinki_pbf: Path) -> None:
    extract = read_osm(helsinki_pbf)
    tags = [json.loads(t) for t in extract.pois["tags"]]
    named = [t for t in tags if "name" in t and "amenity" in t]
    assert named and all(isinstance(v, str) for t in named for v in t.values())
    assert extract.pois["poi_id"].is_unique
    assert extract.features >= len(extract.pois) + len(extract.roads)


def test_bbox_keeps_features_inside(helsinki_pbf: Path, tmp_path: Path) -> None:
    box = (24.94, 60.165, 24.95, 60.172)
    summary = from_osm(helsinki_pbf, tmp_path / "b", bbox="24.94,60.165,24.95,60.172")
    city = City.load(tmp_path / "b")
    assert summary["pois"] == len(city.pois) < 2000
    assert shapely.intersects(city.pois.geometry.to_numpy(), shapely.box(*box)).all()
    w, s, e, n = city.regions.total_bounds
    assert w >= box[0] - 1e-6 and e <= box[2] + 1e-6 and s >= box[1] - 1e-6 and n <= box[3] + 1e-6


def test_porto_alegre_h3_regions_join_the_hexgrid(real_data: Path, tmp_path: Path) -> None:
    pbf = tmp_path / "poa_osm.pbf"
    shutil.copy(real_data / "porto_alegre" / "poa_osm.pbf", pbf)
    summary = from_osm(pbf, tmp_path / "poa", regions="h3:9")
    city = City.load(tmp_path / "poa")
    assert summary["regions"] == len(city.regions)
    grid = pd.read_csv(real_data / "porto_alegre" / "poa_hexgrid.csv")
    assert grid["id"].isin(city.regions["region_id"]).sum() >= 1200
    import h3

    assert all(h3.get_resolution(c) == 9 for c in city.regions["region_id"])


def test_boundary_file_regions(helsinki_pbf: Path, tmp_path: Path) -> None:
    cells = [shapely.box(24.935 + i * 0.006, 60.164, 24.941 + i * 0.006, 60.179) for i in range(3)]
    path = tmp_path / "districts.gpkg"
    gpd.GeoDataFrame({"code": ["A", "B", "C"]}, geometry=cells, crs="EPSG:4326").to_crs(
        "EPSG:3067"
    ).to_file(path)
    with pytest.raises(CityError, match="--region-id-column"):
        from_osm(helsinki_pbf, tmp_path / "x", regions=str(path))
    from_osm(helsinki_pbf, tmp_path / "b", regions=str(path), region_id_column="code")
    city = City.load(tmp_path / "b")
    assert list(city.regions["region_id"]) == ["A", "B", "C"]
    assert city.regions.crs.to_epsg() == 4326


@pytest.mark.parametrize(
    "content, reason",
    [(b"not a protobuf at all\n", "no block header"), (None, "truncated")],
)
def test_bad_pbf_is_one_line_and_leaves_nothing(
    real_data: Path, tmp_path: Path, content: bytes | None, reason: str
) -> None:
    data = (real_data / "porto_alegre" / "poa_osm.pbf").read_bytes()
    bad = tmp_path / "in" / "city.osm.pbf"
    bad.parent.mkdir()
    bad.write_bytes(content if content is not None else data[: len(data) // 3])
    with pytest.raises(CityError, match=reason) as err:
        from_osm(bad, tmp_path / "out" / "b")
    assert "\n" not in str(err.value) and str(bad) in str(err.value)
    assert not (tmp_path / "out" / "b").exists()
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_bad_arguments(helsinki_pbf: Path, tmp_path: Path) -> None:
    with pytest.raises(CityError, match="W,S,E,N"):
        parse_bbox("1,2,3")
    with pytest.raises(CityError, match="-180"):
        parse_bbox("10,50,5,60")
    with pytest.raises(CityError, match="h3:9"):
        from_osm(helsinki_pbf, tmp_path / "b", regions="hexagons")
    with pytest.raises(CityError, match="0-15"):
        from_osm(helsinki_pbf, tmp_path / "b", regions="h3:16")
    with pytest.raises(CityError, match="no POIs inside --bbox"):
        from_osm(helsinki_pbf, tmp_path / "b", bbox="0,0,1,1")
    txt = tmp_path / "city.txt"
    txt.write_text("x")
    with pytest.raises(CityError, match=r"\.osm\.pbf"):
        from_osm(txt, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_check_pbf_counts_blocks(real_data: Path, helsinki_pbf: Path) -> None:
    assert check_pbf(real_data / "porto_alegre" / "poa_osm.pbf") > 1
    assert check_pbf(helsinki_pbf) > 1


def test_truncated_osm_xml_is_refused(tmp_path: Path) -> None:
    good = tmp_path / "tiny.osm"
    good.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<osm version="0.6">\n'
        '<node id="1" lat="60.17" lon="24.94"><tag k="amenity" v="cafe"/></node>\n</osm>\n'
    )
    extract = read_osm(good)
    assert list(extract.pois["poi_id"]) == ["n1"]
    cut = tmp_path / "cut.osm"
    cut.write_bytes(good.read_bytes()[:-8])
    with pytest.raises(CityError, match="truncated"):
        read_osm(cut)
