"""The report's interactive task maps: inline SVG + JS, offline, units, one R2 protocol,
and (when Chromium is installed, as in CI) what a headless browser renders."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import r2_score

from mfm.core.bundle.validate import validate_city
from mfm.eval.report import report

UNIT = "people"


def _chromium() -> str | None:
    """``$CHROMIUM``, or chromium / chromium-browser on PATH."""
    given = os.environ.get("CHROMIUM")
    if given and Path(given).is_file():
        return given
    return shutil.which("chromium") or shutil.which("chromium-browser")


CHROMIUM = _chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary (CI installs Debian's chromium)"
)


def _with_unit(tiny_city: Path, root: Path) -> Path:
    """A copy of the tiny city whose population task has ``unit = "people"``."""
    city = Path(shutil.copytree(tiny_city, root))
    toml = city / "city.toml"
    text = toml.read_text()
    head = '[labels.population]\npath = "labels/population.csv"\n'
    assert head in text
    toml.write_text(text.replace(head, f'{head}unit = "{UNIT}"\n'))
    return city


@pytest.fixture(scope="module")
def run(tiny_city, cache_dir, tmp_path_factory):
    """(run dir, city with a unit) of a tiny 1-epoch run."""
    from mfm.core.config import make_config
    from mfm.core.pipeline import run

    base = tmp_path_factory.mktemp("report-map")
    out = base / "run"
    run(
        make_config(
            city=tiny_city, out=out, plugins="osm", epochs=1, quiet=True, cache_dir=cache_dir
        )
    )
    return out, _with_unit(tiny_city, base / "city")


@pytest.fixture(scope="module")
def page(run) -> Path:
    run_dir, city = run
    return report(run_dir, runs=2, city=city)


def _data(text: str, task: str) -> dict:
    m = re.search(
        rf'<script type="application/json" class="map-data" data-task="{task}">(.*?)</script>', text
    )
    assert m, f"no map data of {task}"
    return json.loads(m.group(1))


def test_every_task_has_an_offline_map_pair(page):
    text = page.read_text()
    for task, tag in (("population", "<path"), ("price", "<path"), ("function", "<circle")):
        assert f'<section id="map-{task}">' in text
        data = _data(text, task)
        n = len(data["id"])
        assert n > 5 and len(data["true"]) == len(data["pred"]) == len(data["res"]) == n
        for layer in ("value", "residual"):
            svg = re.search(
                rf'<svg class="map" data-task="{task}" data-layer="{layer}".*?</svg>', text
            )
            assert svg, (task, layer)
            assert svg.group(0).count(f"{tag} ") >= n and svg.group(0).count("data-i=") == n
    assert text.index('id="map-population"') < text.index("Embedding map")  # near the top
    # nothing fetched: no external script, style, font or image
    assert not re.search(r'(src|href)="(https?:)?//', text) and "<link" not in text
    assert "@import" not in text and 'src="http' not in text


def test_units_reach_maps_tables_and_tooltips(page):
    text = page.read_text()
    assert _data(text, "population")["unit"] == UNIT and _data(text, "price")["unit"] == ""
    assert f"population ({UNIT})" in text  # map heading, legend, scatter axes
    assert f"residual = predicted - true ({UNIT})" in text
    assert f"<td>RMSE ({UNIT})</td>" in text and f"<td>MAE ({UNIT})</td>" in text
    assert "<td>R2</td>" in text  # no unit on a ratio


def test_one_r2_protocol(page):
    text = page.read_text()
    data = _data(text, "population")
    r2 = r2_score(data["true"], data["pred"])
    # the map note and the scatter both give the out-of-fold R2 of these same predictions
    shown = re.findall(r"out-of-fold R2 (-?\d+\.\d{3}) \(pooled\)", text)
    assert shown and abs(float(shown[0]) - r2) < 2e-3
    scatter = re.search(r"R2 (-?\d+\.\d{3}) over the pooled out-of-fold predictions of 5", text)
    assert scatter and scatter.group(1) == shown[0]
    # the tables state their own protocol
    assert "How to read the numbers" in text and text.count("How to read the numbers") == 1
    assert re.search(r"cells: mean \(std\) over 2 random splits", text)
    assert "R2 over all folds" not in text


def test_unit_must_be_a_string(bundle):
    toml = bundle / "city.toml"
    head = '[labels.population]\npath = "labels/population.csv"\n'
    toml.write_text(toml.read_text().replace(head, f"{head}unit = 3\n"))
    problems = [p for p in validate_city(bundle) if p.column == "labels.population.unit"]
    assert problems and "use a string" in problems[0].message


def _browser(*args: str) -> subprocess.CompletedProcess:
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory(prefix="mfm-chromium-") as profile:
        cmd = [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            f"--user-data-dir={profile}", *args,
        ]  # fmt: skip
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _near(pixels: np.ndarray, ramp: np.ndarray, tol: int = 10) -> int:
    """How many ``pixels [N, 3]`` lie within ``tol`` (per channel) of a ``ramp`` colour."""
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    diff = np.abs(colours[:, None, :].astype(int) - ramp[None, :, :].astype(int)).max(axis=2)
    return int(counts[diff.min(axis=1) <= tol].sum())


@needs_chromium
def test_screenshot_shows_the_maps(page, tmp_path):
    import matplotlib as mpl
    from PIL import Image

    png = tmp_path / "shot.png"
    proc = _browser(f"--screenshot={png}", "--window-size=1200,900", page.as_uri())
    assert png.is_file(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
    ramp = lambda name: np.round(mpl.colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255)  # noqa: E731
    value = _near(pixels, ramp("viridis"))
    strong = ramp("RdBu_r")[np.r_[0:80, 176:256]]  # the saturated ends, not the near-white middle
    residual = _near(pixels, strong)
    assert value > 0.05 * len(pixels), value  # the first map pair is in the first screen
    assert residual > 0.01 * len(pixels), residual


@needs_chromium
def test_tooltip_and_toggle_after_the_script_runs(page, tmp_path):
    probe = """<script>
var el = document.querySelector('svg.map[data-task="population"] [data-i="0"]');
el.dispatchEvent(new MouseEvent("mouseover", {bubbles: true, clientX: 50, clientY: 50}));
var tip = document.querySelector(".mfm-tip");
document.body.setAttribute("data-tip", tip.hidden ? "hidden" : tip.textContent);
document.body.setAttribute("data-lit", document.querySelectorAll("svg.map .hi").length);
document.querySelector('button[data-task="population"][data-show="true"]').click();
document.body.setAttribute("data-fill", el.getAttribute("fill"));
</script></body>"""
    probed = page.with_name("probe.html")
    probed.write_text(page.read_text().replace("</body>", probe))
    dom = _browser("--dump-dom", probed.as_uri()).stdout
    assert 'data-maps="ready"' in dom  # the map script ran to its end
    data = _data(page.read_text(), "population")
    tip = re.search(r'data-tip="([^"]*)"', dom).group(1)
    assert tip.startswith(f"id{data['id'][0]}") and "predicted" in tip and "residual" in tip
    assert tip.count(UNIT) == 3  # true, predicted, residual
    assert re.search(r'data-lit="2"', dom)  # the item lit on both maps
    assert re.search(rf'data-fill="{data["fills"]["true"][0]}"', dom)  # toggled to true
