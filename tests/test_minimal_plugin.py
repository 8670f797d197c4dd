"""The minimal plugin that opens docs/plugins.md is real: built from ``import mfm`` names
only, installed through an entry point of a temporary distribution, it runs."""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "plugins.md").read_text()


def _plugin_source() -> str:
    """The first Python block of docs/plugins.md."""
    return re.search(r"```python\n(.*?)```", DOC, re.S).group(1)


def test_the_minimal_plugin_imports_only_mfm():
    tree = ast.parse(_plugin_source())
    modules = {
        alias.name if isinstance(node, ast.Import) else node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert modules == {"numpy", "torch", "pydantic", "mfm"}
    assert 40 <= len(_plugin_source().splitlines()) <= 75


def _distribution(site: Path) -> None:
    """``mfm-density`` 0.1 in ``site``: the module and a dist-info with the entry point."""
    (site / "mfm_density.py").write_text(_plugin_source())
    info = site / "mfm_density-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mfm-density\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mfm]\ndensity = mfm_density\n")


def test_the_minimal_plugin_runs_from_an_entry_point(tiny_city, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    _distribution(site)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    env.pop("MFM_LOAD_PLUGINS", None)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mfm", "run", "--city", str(tiny_city), "--out", str(out)]
    cmd += ["--plugins", "osm,density", "--epochs", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    plan = {e["objective"]: e["skipped"] for e in manifest["plan"]}
    assert plan["density"] is None and plan["global"] is None, plan
    assert [s["name"] for s in manifest["stages"]][-2:] == ["density", "global"]
    assert {"name": "density", "version": "0.1", "package": "mfm-density"} in manifest["plugins"]
    assert (out / "region_embeddings.parquet").is_file()
