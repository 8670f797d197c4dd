"""add_svi: street-view folders + index CSV into the svi layer, all or nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mfm.cities.add_svi import add_svi
from mfm.core.bundle.city import City
from mfm.core.constants import SVI_DIRECTIONS
from mfm.core.errors import CityError
from tests.bundles import assert_untouched, snapshot

LON, LAT = 8.54, 47.37  # inside the synthetic city


def _images(folder: Path, n: int, size: tuple[int, int] = (40, 30)) -> dict[str, list[str]]:
    """Write n points x 4 directions (JPEG for east/west, PNG for south/north)."""
    folder.mkdir(parents=True, exist_ok=True)
    cols: dict[str, list[str]] = {d: [] for d in SVI_DIRECTIONS}
    for i in range(n):
        for k, d in enumerate(SVI_DIRECTIONS):
            name = f"pt{i}/{d[0]}.{'jpg' if k % 2 == 0 else 'png'}"
            (folder / name).parent.mkdir(exist_ok=True)
            Image.new("RGB", size, (20 * i, 60 * k, 90)).save(folder / name)
            cols[d].append(name)
    return cols


def _index(path: Path, n: int, cols: dict[str, list[str]], **extra: list) -> Path:
    frame = pd.DataFrame(
        {"lat": LAT + 0.0005 * np.arange(n), "lon": LON + 0.0005 * np.arange(n), **cols, **extra}
    )
    frame.to_csv(path, index=False)
    return path


def test_import_replaces_layer_with_mapped_columns_and_ids(bundle: Path, tmp_path: Path) -> None:
    cols = _images(tmp_path / "imgs", 3)
    renamed = {f"img_{d[0]}": v for d, v in cols.items()}
    index = _index(tmp_path / "index.csv", 3, renamed, pano=["a7", "b/8", "c 9"])
    summary = add_svi(
        bundle,
        tmp_path / "imgs",
        index,
        id_column="pano",
        directions={d: f"img_{d[0]}" for d in SVI_DIRECTIONS},
        progress=True,
    )
    json.dumps(summary)
    assert summary["layer"] == "svi" and summary["rows"] == 3 and summary["images"] == 12
    assert summary["replaced"] is True and summary["dropped"] == 0

    city = City.load(bundle)
    svi = city.svi
    assert svi["svi_id"].tolist() == ["a7", "b/8", "c 9"]
    assert svi.geometry.x.tolist() == pytest.approx(LON + 0.0005 * np.arange(3))
    assert svi.geometry.y.tolist() == pytest.approx(LAT + 0.0005 * np.arange(3))
    assert svi.loc[0, "east"] == "images/svi/a7_east.jpg"
    assert svi.loc[1, "north"] == "images/svi/b%2F8_north.png"  # ids are quoted in file names
    for d in SVI_DIRECTIONS:
        for rel, src in zip(svi[d], cols[d], strict=True):
            assert (bundle / rel).read_bytes() == (tmp_path / "imgs" / src).read_bytes()
            with Image.open(bundle / rel) as im:
                assert im.size == (40, 30)
    # the synthetic city's old street-view images are gone with the old layer
    assert len(list((bundle / "images/svi").iterdir())) == 12


def test_generated_ids_and_absolute_paths(bundle: Path, tmp_path: Path) -> None:
    cols = _images(tmp_path / "imgs", 2)
    cols["west"][1] = str((tmp_path / "imgs" / cols["west"][1]).resolve())
    summary = add_svi(bundle, tmp_path / "imgs", _index(tmp_path / "i.csv", 2, cols))
    assert summary["rows"] == 2
    svi = City.load(bundle).svi
    assert svi["svi_id"].tolist() == ["s000000", "s000001"]
    assert svi.loc[1, "west"] == "images/svi/s000001_west.jpg"
    assert (bundle / svi.loc[1, "west"]).is_file()


def test_missing_image_names_file_row_column_and_leaves_bundle_unchanged(
    bundle: Path, tmp_path: Path
) -> None:
    cols = _images(tmp_path / "imgs", 3)
    cols["east"][1] = "pt1/nope.jpg"
    index = _index(tmp_path / "index.csv", 3, cols)
    before = snapshot(bundle)
    with pytest.raises(CityError) as err:
        add_svi(bundle, tmp_path / "imgs", index)
    msg = str(err.value)
    assert "\n" not in msg
    assert f"{tmp_path / 'imgs' / 'pt1/nope.jpg'} ({index} row 1 column east) not found" in msg
    assert "--drop-invalid" in msg
    assert_untouched(bundle, before)


def test_unreadable_image_is_an_error(bundle: Path, tmp_path: Path) -> None:
    cols = _images(tmp_path / "imgs", 2)
    (tmp_path / "imgs" / cols["south"][0]).write_bytes(b"\x89PNG\r\n\x1a\n broken")
    index = _index(tmp_path / "index.csv", 2, cols)
    before = snapshot(bundle)
    with pytest.raises(CityError, match=r"row 0 column south.*cannot read image"):
        add_svi(bundle, tmp_path / "imgs", index)
    assert_untouched(bundle, before)


def test_bad_lat_and_unknown_column(bundle: Path, tmp_path: Path) -> None:
    cols = _images(tmp_path / "imgs", 3)
    index = _index(tmp_path / "index.csv", 3, cols)
    frame = pd.read_csv(index)
    frame.loc[2, "lat"] = 123.0
    frame.to_csv(index, index=False)
    before = snapshot(bundle)
    with pytest.raises(CityError, match=r"index.csv row 2 column lat: lat 123 is out of range"):
        add_svi(bundle, tmp_path / "imgs", index)
    with pytest.raises(CityError) as err:
        add_svi(bundle, tmp_path / "imgs", index, lat="latitude", directions={"east": "img_e"})
    msg = str(err.value)
    assert "no column 'latitude'" in msg and "--lat-column" in msg
    assert "no column 'img_e'" in msg and "--east-column" in msg
    assert "its columns are: lat, lon, east, south, west, north" in msg
    with pytest.raises(CityError, match="unknown direction 'up'"):
        add_svi(bundle, tmp_path / "imgs", index, directions={"up": "east"})
    assert_untouched(bundle, before)


def test_drop_invalid_counts_every_bad_row(bundle: Path, tmp_path: Path) -> None:
    cols = _images(tmp_path / "imgs", 6)
    cols["north"][1] = "missing.png"
    (tmp_path / "imgs" / cols["west"][2]).write_bytes(b"not an image")
    cols["south"][3] = ""
    index = _index(tmp_path / "index.csv", 6, cols, pid=["p0", "p1", "p2", "p3", "p0", "p5"])
    frame = pd.read_csv(index, dtype={"lon": str})
    frame.loc[5, "lon"] = "east"
    frame.to_csv(index, index=False)
    with pytest.raises(CityError, match="row 5 column lon: lon 'east' is not a number"):
        add_svi(bundle, tmp_path / "imgs", index, id_column="pid")
    summary = add_svi(bundle, tmp_path / "imgs", index, id_column="pid", drop_invalid=True)
    assert summary["rows"] == 1 and summary["dropped"] == 5
    assert summary["dropped_reasons"] == {
        "lon not a number": 1,
        "missing image path": 1,
        "duplicate id": 1,
        "image not found": 1,
        "unreadable image": 1,
    }
    assert City.load(bundle).svi["svi_id"].tolist() == ["p0"]
    # generated ids keep the index row number when rows before them are dropped
    add_svi(bundle, tmp_path / "imgs", index, drop_invalid=True)
    assert City.load(bundle).svi["svi_id"].tolist() == ["s000000", "s000004"]
