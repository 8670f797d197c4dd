"""``report`` on a tiny run: a self-contained page, figures, tables, a browser screenshot."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mfm.core.errors import MfmError
from mfm.eval.report import out_of_fold, report
from mfm.plots import pca_rgb

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "screenshot_report.py"
CHROMIUM = Path("/usr/bin/chromium")
DATA_URI = "data:image/png;base64,"


@pytest.fixture(scope="module")
def run_dir(tiny_city, cache_dir, tmp_path_factory):
    from mfm.core.config import make_config
    from mfm.core.pipeline import run

    out = tmp_path_factory.mktemp("report") / "run"
    config = make_config(
        city=tiny_city, out=out, plugins="osm", epochs=1, quiet=True, cache_dir=cache_dir
    )
    run(config)
    return out


@pytest.fixture(scope="module")
def page(run_dir):
    return report(run_dir, runs=3)


def test_report_page(run_dir, page):
    assert page == run_dir / "report" / "index.html"
    text = page.read_text()
    assert text.count(DATA_URI) >= 3
    assert "synthetic-tiny-seed0" in text and "poi (micro)" in text
    assert "<table" in text and "population: region regression" in text
    assert re.search(r"R2 -?\d+\.\d{3} over the pooled out-of-fold predictions", text)
    assert "Ablation" not in text  # no ablation next to this run
    assert "Objective health" in text and "after poi" in text
    for name in (
        "embedding_pca",
        "predictions_map",
        "predictions_scatter",
        "loss_curves",
        "health",
    ):
        png = run_dir / "report" / f"{name}.png"
        assert png.stat().st_size > 5_000, name
    # no eval/*.json before: every task was evaluated and written first
    saved = sorted(p.stem for p in (run_dir / "eval").glob("*.json"))
    assert saved == ["function", "population", "price"]
    assert json.loads((run_dir / "eval" / "population.json").read_text())["runs"] == 3
    # the embedded images are the PNGs beside the page
    first = re.search(r'src="data:image/png;base64,([^"]+)"', text).group(1)
    import base64

    assert base64.b64decode(first) == (run_dir / "report" / "embedding_pca.png").read_bytes()


def test_poi_task_and_ablation(run_dir, page, tmp_path):
    from mfm.eval.ablate import write_table

    pair = [0.5, 0.1]
    table = {
        "city": {"name": "tiny", "root": "x"},
        "settings": {"split": "random", "runs": 3, "probe": "ridge", "seed": 0, "epochs": 1},
        "tasks": [{"name": "population", "level": "region", "kind": "regression",
                   "metrics": ["r2", "rmse"]}],
        "rows": [
            {"variant": "full", "kind": "variant", "plugins": ["osm"], "scales": ["micro"],
             "run_dir": None, "error": None,
             "results": {"population": {"r2": pair, "rmse": [3.0, 1.0]}}},
            {"variant": "no-osm", "kind": "variant", "plugins": [], "scales": ["micro"],
             "run_dir": None, "error": "no modality can run", "results": {}},
        ],
    }  # fmt: skip
    write_table(table, tmp_path)
    out = report(run_dir, task="function", ablation=tmp_path)
    text = out.read_text()
    assert "Task function" in text and "macro F1" in text
    assert (run_dir / "report" / "predictions_confusion.png").stat().st_size > 5_000
    assert "Ablation" in text and "no-osm" in text and "no modality can run" in text
    assert text.count(DATA_URI) >= 5  # pca, map, confusion, losses, ablation chart


def test_report_errors(run_dir, tmp_path):
    with pytest.raises(MfmError, match="unknown task 'nope'"):
        report(run_dir, task="nope")
    with pytest.raises(MfmError, match="--ablation"):
        report(run_dir, ablation=tmp_path / "missing")
    with pytest.raises(MfmError, match=r"manifest\.json"):
        report(tmp_path)


def test_pca_rgb_and_out_of_fold():
    rng = np.random.default_rng(0)
    rgb = pca_rgb(rng.standard_normal((20, 8)))
    assert rgb.shape == (20, 3) and rgb.min() == 0.0 and rgb.max() == 1.0
    assert np.allclose(pca_rgb(np.ones((4, 2))), 0.5)
    x = rng.standard_normal((60, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.01 * rng.standard_normal(60)
    pred = out_of_fold(x, y, "regression")
    assert np.corrcoef(pred, y)[0, 1] > 0.99
    labels = np.where(x[:, 0] > 0, "a", "b")
    assert (out_of_fold(x, labels, "classification") == labels).mean() > 0.9


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_screenshot(page, tmp_path):
    png = tmp_path / "shot.png"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(page), str(png)],
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
