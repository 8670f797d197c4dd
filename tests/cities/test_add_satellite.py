"""add_satellite: GeoTIFFs cropped per region, or a folder of per-region tiles."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from PIL import Image
from pyproj import Transformer
from rasterio.transform import Affine
from rasterio.warp import transform_bounds

from mfm.cities.add_satellite import add_satellite
from mfm.cities.bundle import new_bundle
from mfm.core.bundle.city import City
from mfm.core.errors import CityError
from tests.bundles import assert_untouched, snapshot

DEM = Path(__file__).parents[1] / "data" / "helsinki" / "elevation_model_2021_lapinlahti.tif"
UTM = "EPSG:32632"  # the synthetic city's metric CRS


def _extent(root: Path, crs: str) -> np.ndarray:
    return gpd.read_parquet(root / "regions.parquet").to_crs(crs).total_bounds


def _write_tif(
    path: Path,
    data: np.ndarray,
    crs: str,
    west: float,
    north: float,
    res: float,
    nodata: float | None = None,
) -> Path:
    count, height, width = data.shape
    profile = {"driver": "GTiff", "width": width, "height": height, "count": count}
    profile |= {"dtype": data.dtype, "crs": crs, "nodata": nodata}
    with rasterio.open(path, "w", transform=Affine(res, 0, west, 0, -res, north), **profile) as dst:
        dst.write(data)
    return path


def _gradient_rgb(root: Path, path: Path, crs: str, res: float = 4.0) -> Path:
    """uint8 RGB over the west ~60% of the city: R grows eastwards, G southwards."""
    minx, miny, maxx, maxy = _extent(root, crs)
    width = int(0.6 * (maxx - minx) / res)
    height = int((maxy - miny) / res) + 20
    cols, rows = np.meshgrid(np.arange(width), np.arange(height))
    data = np.stack([cols * 255 // width, rows * 255 // height, np.full_like(cols, 77)])
    data = data.astype(np.uint8)
    return _write_tif(path, data, crs, minx - 10, maxy + 40, res)


def test_rgb_raster_in_web_mercator_covers_part_of_the_city(bundle: Path, tmp_path: Path) -> None:
    tif = _gradient_rgb(bundle, tmp_path / "rgb.tif", "EPSG:3857")
    summary = add_satellite(bundle, raster=tif, size=32, progress=True)
    json.dumps(summary)
    n_regions = len(City.load(bundle).regions)
    assert summary["layer"] == "satellite" and summary["replaced"] is True
    assert summary["skipped"] > 0 and summary["rows"] + summary["skipped"] == n_regions
    assert summary["bands"] == "rgb" and summary["stretch"] is None

    city = City.load(bundle)
    sat = city.satellite
    assert len(sat) == summary["rows"] and sat["image"].str.startswith("images/sat/").all()
    assert len(list((bundle / "images/sat").iterdir())) == len(sat)  # old tiles removed
    regions = city.regions.set_index("region_id").loc[sat["region_id"]]
    to_3857 = Transformer.from_crs(UTM, "EPSG:3857", always_xy=True)
    compared = 0
    with rasterio.open(tif) as src:
        footprint = shapely.box(*transform_bounds(src.crs, "EPSG:4326", *src.bounds))
        assert regions.geometry.intersects(footprint).all()
        for rel, geom in zip(sat["image"], regions.geometry.to_crs(UTM), strict=True):
            with Image.open(bundle / rel) as im:
                assert im.size == (32, 32) and im.mode == "RGB"
                tile = np.asarray(im)
            # the tile is centred on the region: its centre pixel shows the raster there
            b = geom.bounds
            x, y = to_3857.transform((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
            row, col = src.index(x, y)
            if 0 <= row < src.height and 0 <= col < src.width:
                want = src.read(window=((row, row + 1), (col, col + 1)))[:, 0, 0]
                got = tile[15:17, 15:17].reshape(-1, 3).mean(axis=0)
                assert np.abs(got - want).max() <= 8
                compared += 1
    assert compared >= 3
    # regions outside the raster keep no tile
    skipped = set(city.regions["region_id"]) - set(sat["region_id"])
    assert len(skipped) == summary["skipped"]


def test_float_band_in_utm_with_nodata_and_mask(bundle: Path, tmp_path: Path) -> None:
    minx, miny, maxx, maxy = _extent(bundle, UTM)
    res, mid = 5.0, (minx + maxx) / 2
    width, height = int((maxx - minx) / res) + 40, int((maxy - miny) / res) + 40
    west, north = minx - 100, maxy + 100
    data = np.linspace(10.0, 50.0, width * height, dtype=np.float32).reshape(1, height, width)
    xs = west + (np.arange(width) + 0.5) * res
    data[:, :, xs < mid] = -9999.0  # the west half is nodata
    tif = _write_tif(tmp_path / "dem.tif", data, UTM, west, north, res, nodata=-9999.0)
    summary = add_satellite(bundle, raster=tif, size=24, mask=True)
    assert summary["skipped"] == 0 and summary["bands"] == "gray"
    lo, hi = summary["stretch"]
    assert 10 < lo < hi < 50  # percentiles of the valid (east) half only

    city = City.load(bundle)
    bounds = city.regions.to_crs(UTM).geometry.bounds.set_index(city.regions["region_id"])
    square = bounds.assign(w=bounds.maxx - bounds.minx, h=bounds.maxy - bounds.miny)
    seen = {"nodata": 0, "valid": 0}
    for rid, rel in zip(city.satellite["region_id"], city.satellite["image"], strict=True):
        tile = np.asarray(Image.open(bundle / rel))
        assert tile.shape == (24, 24, 3) and (tile[..., 0] == tile[..., 2]).all()
        b = square.loc[rid]
        cx, half = (b.minx + b.maxx) / 2, max(b.w, b.h) / 2
        if cx + half < mid:  # entirely in the nodata half
            assert not tile.any()
            seen["nodata"] += 1
        elif cx - half > mid:  # valid data: pixels inside the region, black outside it
            share = (tile[..., 0] > 0).mean()
            area = city.regions.set_index("region_id").to_crs(UTM).loc[rid].geometry.area
            assert abs(share - area / (2 * half) ** 2) < 0.15
            seen["valid"] += 1
    assert seen["nodata"] > 0 and seen["valid"] > 0


def test_real_elevation_model(tmp_path: Path) -> None:
    with rasterio.open(DEM) as src:
        w, s, e, n = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    xs, ys = np.linspace(w, e, 3), np.linspace(s, n, 3)
    cells = [shapely.box(xs[i], ys[j], xs[i + 1], ys[j + 1]) for i in range(2) for j in range(2)]
    cells.append(shapely.box(e + 0.01, n + 0.01, e + 0.02, n + 0.02))  # far away: skipped
    root = tmp_path / "lapinlahti"
    with new_bundle(root, "lapinlahti") as staging:
        pois = gpd.GeoDataFrame(
            {"poi_id": ["p0", "p1"], "tags": ["{}", "{}"]},
            geometry=gpd.points_from_xy([w, e], [s, n]),
            crs="EPSG:4326",
        )
        staging.add_layer("pois", pois)
        regions = gpd.GeoDataFrame(
            {"region_id": [f"cell{i}" for i in range(5)]}, geometry=cells, crs="EPSG:4326"
        )
        staging.add_layer("regions", regions)

    summary = add_satellite(root, raster=DEM, size=40)
    assert summary["rows"] == 4 and summary["skipped"] == 1 and summary["replaced"] is False
    assert summary["bands"] == "gray" and summary["stretch"][0] < summary["stretch"][1]
    city = City.load(root)
    assert city.satellite["region_id"].tolist() == ["cell0", "cell1", "cell2", "cell3"]
    for rel in city.satellite["image"]:
        tile = np.asarray(Image.open(city.path(rel)))
        assert tile.shape == (40, 40, 3) and tile.dtype == np.uint8
        assert (tile[..., 0] == tile[..., 1]).all() and (tile[..., 1] == tile[..., 2]).all()
        assert tile.max() > tile.min()  # terrain, not a flat tile


def test_raster_not_overlapping_names_both_extents(bundle: Path, tmp_path: Path) -> None:
    data = np.zeros((3, 20, 20), dtype=np.uint8)
    tif = _write_tif(tmp_path / "elsewhere.tif", data, "EPSG:3857", 0.0, 0.0, 10.0)
    before = snapshot(bundle)
    with pytest.raises(CityError) as err:
        add_satellite(bundle, raster=tif)
    msg = str(err.value)
    assert "\n" not in msg and f"{tif} does not overlap any region" in msg
    assert "it covers lon 0.00000..0.00180" in msg and "regions lon 8.5" in msg
    assert_untouched(bundle, before)


def test_image_folder(bundle: Path, tmp_path: Path) -> None:
    ids = City.load(bundle).regions["region_id"].tolist()
    folder = tmp_path / "tiles"
    folder.mkdir()
    Image.new("RGB", (50, 50), "green").save(folder / f"{ids[2]}.png")
    Image.new("RGB", (30, 20), "blue").save(folder / f"{ids[0]}.JPG", format="JPEG")
    (folder / "README.txt").write_text("not an image")
    (folder / "elsewhere.png").write_bytes((folder / f"{ids[2]}.png").read_bytes())
    before = snapshot(bundle)
    with pytest.raises(CityError) as err:
        add_satellite(bundle, images=folder)
    msg = str(err.value)
    assert f"{folder / 'elsewhere.png'} is not named after a region" in msg
    assert "--drop-invalid" in msg
    assert_untouched(bundle, before)

    summary = add_satellite(bundle, images=folder, drop_invalid=True)
    json.dumps(summary)
    assert summary["rows"] == 2 and summary["dropped"] == 1 and summary["ignored_files"] == 1
    assert summary["dropped_reasons"] == {"not a region id": 1}
    sat = City.load(bundle).satellite
    assert sat["region_id"].tolist() == [ids[0], ids[2]]
    assert sat["image"].tolist() == [f"images/sat/{ids[0]}.jpg", f"images/sat/{ids[2]}.png"]
    with Image.open(bundle / sat["image"][0]) as im:
        assert im.size == (30, 20)


def test_unreadable_tile_and_argument_errors(bundle: Path, tmp_path: Path) -> None:
    ids = City.load(bundle).regions["region_id"].tolist()
    folder = tmp_path / "tiles"
    folder.mkdir()
    (folder / f"{ids[1]}.png").write_bytes(b"garbage")
    with pytest.raises(CityError, match=rf"cannot read image .*{ids[1]}\.png"):
        add_satellite(bundle, images=folder)
    with pytest.raises(CityError, match="no usable tiles"):
        add_satellite(bundle, images=folder, drop_invalid=True)
    with pytest.raises(CityError, match="exactly one of --raster"):
        add_satellite(bundle)
    with pytest.raises(CityError, match="exactly one of --raster"):
        add_satellite(bundle, raster=tmp_path / "a.tif", images=folder)
    with pytest.raises(CityError, match="not found; pass a GeoTIFF"):
        add_satellite(bundle, raster=tmp_path / "a.tif")
    (tmp_path / "b.tif").write_text("no tiff")
    with pytest.raises(CityError, match=r"cannot read .*b\.tif as a raster"):
        add_satellite(bundle, raster=tmp_path / "b.tif")


def test_bundle_without_regions(tmp_path: Path) -> None:
    root = tmp_path / "noregions"
    with new_bundle(root, "noregions") as staging:
        pois = gpd.GeoDataFrame(
            {"poi_id": ["p0"], "tags": ["{}"]},
            geometry=gpd.points_from_xy([8.54], [47.37]),
            crs="EPSG:4326",
        )
        staging.add_layer("pois", pois)
    with pytest.raises(CityError, match=r"no regions layer.*mfm city from-osm --regions"):
        add_satellite(root, images=tmp_path)


def test_without_the_raster_extra_the_error_says_how_to_get_it(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tif = tmp_path / "x.tif"
    tif.write_bytes(b"not needed")
    monkeypatch.setitem(sys.modules, "rasterio", None)  # import rasterio -> ImportError
    with pytest.raises(CityError, match=r"urban-mfm\[raster\]"):
        add_satellite(bundle, raster=tif)
