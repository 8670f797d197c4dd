"""The example third-party plugin (examples/mfm-plugin-terrain) installs with pip and runs.

pip installs it (editable, no network) into a throw-away virtual environment that sees
this environment's packages (``--system-site-packages``), not into this environment
itself: an installed plugin joins every run that leaves out ``--plugins`` (and test
sessions already running would see its entry point without being able to import it),
while the synthetic city has no DEM. The commands then run with that environment's
Python, exactly as a user's would after ``pip install -e examples/mfm-plugin-terrain``.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pytest

pytest.importorskip("rasterio", reason="the terrain example needs rasterio (mfm-terrain's dep)")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "mfm-plugin-terrain"


def _run(*cmd: object, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def _write_hill_dem(city: Path) -> None:
    """A smooth hill in the city's metric CRS over its regions, as ``<city>/dem.tif``."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    from mfm.core.bundle.city import City

    c = City.load(city)
    x0, y0, x1, y1 = c.regions.to_crs(c.crs).total_bounds + np.array([-50, -50, 50, 50])
    xs, ys = np.arange(x0, x1, 10.0) + 5, np.arange(y1, y0, -10.0) - 5
    gx, gy = np.meshgrid(xs, ys)
    z = 20 + 60 * np.exp(-((gx - x1) ** 2 + (gy - y1) ** 2) / (2 * (0.4 * (x1 - x0)) ** 2))
    profile = {
        "driver": "GTiff",
        "width": len(xs),
        "height": len(ys),
        "count": 1,
        "dtype": "float32",
        "crs": c.crs,
        "transform": from_origin(x0, y1, 10.0, 10.0),
    }
    with rasterio.open(city / "dem.tif", "w", **profile) as dst:
        dst.write(z.astype(np.float32), 1)


@pytest.fixture(scope="module")
def python(tmp_path_factory) -> Path:
    """The Python of a fresh venv (system packages visible) with mfm-terrain pip-installed."""
    venv = tmp_path_factory.mktemp("venv") / "env"
    made = _run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv)
    assert made.returncode == 0, made.stderr
    exe = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    flags = ["--no-deps", "--no-build-isolation", "--no-input", "-q", "-e"]
    pip = _run(sys.executable, "-m", "pip", "--python", exe, "install", *flags, EXAMPLE)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return exe


def test_pip_installed_example_is_listed(python):
    r = _run(python, "-m", "mfm", "plugins", "--json")
    assert r.returncode == 0, r.stderr
    records = {p["name"]: p for p in json.loads(r.stdout)}
    terrain = records["terrain"]
    assert terrain["package"] == "mfm-terrain" and terrain["version"] == "0.1.0"
    assert terrain["modalities"] == ["terrain"]
    assert terrain["objectives"] == [{"name": "terrain", "scale": "macro"}]
    assert records["osm"]["package"] == "urban-mfm"  # the built-ins load beside it


@pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")  # rasterio 1.4
def test_run_with_osm_and_terrain(python, tiny_city, tmp_path):
    city = tmp_path / "city"
    shutil.copytree(tiny_city, city)
    _write_hill_dem(city)
    out = tmp_path / "run"
    args = ["--plugins", "osm,terrain", "--epochs", "1", "--quiet"]
    r = _run(python, "-m", "mfm", "run", "--city", city, "--out", out, *args)
    assert r.returncode == 0, r.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    plugins = {p["name"]: p for p in manifest["plugins"]}
    assert plugins["terrain"]["package"] == "mfm-terrain"
    used = manifest["modalities"]["terrain"]["dem_used"]
    assert used["file"] == str((city / "dem.tif").resolve())
    plan = {e["objective"]: e for e in manifest["plan"]}
    assert (plan["terrain"]["scale"], plan["terrain"]["skipped"]) == ("macro", None)
    assert plan["global"]["skipped"] is None  # terrain is the macro view GLOBAL needs
    stages = {s["name"]: s for s in manifest["stages"]}
    assert list(stages)[-2:] == ["terrain", "global"]  # MACRO, then GLOBAL
    assert stages["terrain"]["steps"] >= 1 and stages["terrain"]["losses"]
    assert stages["global"]["steps"] >= 1
    regions = gpd.read_parquet(out / "region_embeddings.parquet")
    assert len(regions) == 16
    assert len(regions["embedding"].iloc[0]) == manifest["outputs"]["region_dim"]
