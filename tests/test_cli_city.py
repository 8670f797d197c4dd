"""The README's real-city demos through the CLI, and the import errors a user meets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from tests.bundles import assert_untouched, snapshot
from tests.test_cli import assert_one_line_error, mfm


def _ok(result) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_helsinki_demo(helsinki_pbf: Path, real_data: Path, tmp_path: Path) -> None:
    hel = tmp_path / "helsinki"
    _ok(mfm("city", "from-osm", helsinki_pbf, "--out", hel, "--json"))
    grid = real_data / "helsinki" / "helsinki_population_grid_2020.gpkg"
    pop = json.loads(
        _ok(
            mfm("city", "add-labels", hel, grid, "--name", "population", "--column",
                "population", "--json")
        )
    )  # fmt: skip
    assert pop["method"] == "overlay" and pop["aggregate"] == "mean" and pop["labelled"] >= 30
    fn = json.loads(_ok(mfm("city", "label-from-tag", hel, "--tag", "building",
                            "--name", "function", "--json")))  # fmt: skip
    assert fn["labelled"] > 50 and len(fn["classes"]) >= 3
    info = json.loads(_ok(mfm("city", "info", hel, "--json", "--map", tmp_path / "hel.png")))
    assert (tmp_path / "hel.png").stat().st_size > 10_000
    assert info["layers"]["pois"]["count"] >= 1000
    assert info["layers"]["regions"]["count"] >= 20
    assert set(info["labels"]) == {"population", "function"}
    tags = pd.read_parquet(hel / "pois.parquet", columns=["tags"])["tags"]
    assert not tags.str.contains('"building"').any()  # the answer is not in the text
    assert "ok" in _ok(mfm("city", "validate", hel))
    run = tmp_path / "run"
    _ok(mfm("run", "--city", hel, "--plugins", "osm,polygon", "--out", run, "--epochs", "1",
            "--max-steps", "2", "--quiet"))  # fmt: skip
    result = json.loads(_ok(mfm("eval", run, "--runs", "2", "--json")))
    assert {r["task"] for r in result} == {"population", "function"}


def test_porto_alegre_demo(real_data: Path, tmp_path: Path) -> None:
    pbf = tmp_path / "poa_osm.pbf"
    shutil.copy(real_data / "porto_alegre" / "poa_osm.pbf", pbf)
    poa = tmp_path / "poa"
    _ok(mfm("city", "from-osm", pbf, "--out", poa, "--regions", "h3:9", "--json"))
    grid = real_data / "porto_alegre" / "poa_hexgrid.csv"
    for column in ("population", "jobs"):
        summary = json.loads(
            _ok(
                mfm("city", "add-labels", poa, grid, "--name", column, "--column", column,
                    "--id-column", "id", "--drop-invalid", "--json")
            )
        )  # fmt: skip
        assert summary["labelled"] >= 1200
    assert "ok" in _ok(mfm("city", "validate", poa))
    run = tmp_path / "run"
    _ok(mfm("run", "--city", poa, "--plugins", "osm,polygon", "--out", run, "--epochs", "1",
            "--max-steps", "2", "--quiet"))  # fmt: skip
    result = json.loads(_ok(mfm("eval", run, "--task", "population", "--runs", "2", "--json")))
    assert result["task"] == "population" and result["n"] >= 1200


def test_truncated_pbf_leaves_no_bundle(real_data: Path, tmp_path: Path) -> None:
    data = (real_data / "porto_alegre" / "poa_osm.pbf").read_bytes()
    bad = tmp_path / "cut.osm.pbf"
    bad.write_bytes(data[: len(data) // 2])
    r = mfm("city", "from-osm", bad, "--out", tmp_path / "b")
    assert_one_line_error(r, str(bad), "truncated", "download the extract again")
    assert not (tmp_path / "b").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["cut.osm.pbf"]


def test_not_a_pbf(tmp_path: Path) -> None:
    bad = tmp_path / "city.osm.pbf"
    bad.write_text("<html>404 not found</html>")
    assert_one_line_error(mfm("city", "from-osm", bad, "--out", tmp_path / "b"), str(bad))
    assert not (tmp_path / "b").exists()


def test_labels_with_unknown_id_column(bundle: Path, tmp_path: Path) -> None:
    table = tmp_path / "stats.csv"
    pd.DataFrame({"zone": ["r00000"], "pop": [1.0]}).to_csv(table, index=False)
    before = snapshot(bundle)
    r = mfm("city", "add-labels", bundle, table, "--name", "pop", "--column", "pop",
            "--id-column", "cell")  # fmt: skip
    assert_one_line_error(r, str(table), "cell", "--id-column")
    assert_untouched(bundle, before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "stats.csv"]


def test_svi_index_with_missing_images(bundle: Path, tmp_path: Path) -> None:
    images = tmp_path / "photos"
    images.mkdir()
    index = tmp_path / "index.csv"
    pd.DataFrame(
        {"lat": [45.0], "lon": [9.0], "east": ["e.jpg"], "south": ["s.jpg"],
         "west": ["w.jpg"], "north": ["n.jpg"]}
    ).to_csv(index, index=False)  # fmt: skip
    before = snapshot(bundle)
    r = mfm("city", "add-svi", bundle, "--images", images, "--index", index)
    assert_one_line_error(r, "index.csv", "e.jpg")
    assert_untouched(bundle, before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "index.csv", "photos"]
