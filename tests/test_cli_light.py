"""``mfm --help`` and ``mfm plugins`` without importing torch, plugin commands included."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = '''
import typer

import mfm


@mfm.hookimpl
def register_commands(app):
    @app.command("{name}")
    def hello() -> None:
        """Say hello from a plugin."""
        typer.echo("hello from a plugin")
'''


def _install(site: Path, command: str) -> Path:
    """``mfm-hello`` 0.1 in ``site``: one module with an ``mfm`` entry point."""
    module = site / "mfm_hello.py"
    module.write_text(PLUGIN.format(name=command))
    info = site / "mfm_hello-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mfm-hello\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mfm]\nhello = mfm_hello\n")
    return module


def _mfm(tmp_path: Path, *args: str) -> tuple[str, bool]:
    """(stdout, whether torch was imported) of ``python -m mfm ARGS``."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(ROOT)]),
        "MFM_CACHE": str(tmp_path / "cache"),
        "COLUMNS": "200",
    }
    env.pop("MFM_LOAD_PLUGINS", None)
    cmd = [sys.executable, "-X", "importtime", "-m", "mfm", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if "|" in line}
    return r.stdout, "torch" in imported


def test_help_lists_plugin_commands_and_then_needs_no_torch(tmp_path):
    (tmp_path / "site").mkdir()
    module = _install(tmp_path / "site", "hello-city")
    first, _ = _mfm(tmp_path, "--help")  # no index yet: the plugins are loaded once
    assert "hello-city" in first
    again, torch_loaded = _mfm(tmp_path, "--help")
    assert "Plugin commands" in again and "hello-city" in again
    assert "Say hello from a plugin. (plugin hello)" in again
    assert not torch_loaded
    out, _ = _mfm(tmp_path, "hello-city")
    assert "hello from a plugin" in out
    module.write_text(PLUGIN.format(name="hello-region"))  # an edited plugin: a stale index
    os.utime(module, ns=(module.stat().st_atime_ns, module.stat().st_mtime_ns + 10**9))
    edited, _ = _mfm(tmp_path, "--help")
    assert "hello-region" in edited and "hello-city" not in edited


def test_plugins_lists_from_the_index_without_torch(tmp_path):
    (tmp_path / "site").mkdir()
    _install(tmp_path / "site", "hello-city")
    loaded, torch_loaded = _mfm(tmp_path, "plugins", "--json")
    assert torch_loaded  # nothing remembered yet: the plugins were imported
    remembered, torch_loaded = _mfm(tmp_path, "plugins", "--json")
    assert not torch_loaded
    assert json.loads(remembered) == json.loads(loaded)
    names = {p["name"] for p in json.loads(remembered)}
    assert {"osm", "sat", "global", "hello"} <= names


MODALITY_PLUGIN = """
import os
from pathlib import Path

import mfm

Path(os.environ["MARKER"]).write_text("imported")


class Nothing(mfm.Modality):
    name = "nothing"
    layers = ("regions",)
    views = frozenset({mfm.View.REGION})

    def prepare(self, ctx):
        pass


@mfm.hookimpl
def register_modalities(register):
    register(Nothing)
"""


def test_a_run_does_not_import_modality_plugins_it_does_not_select(tiny_city, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "mfm_nothing.py").write_text(MODALITY_PLUGIN)
    info = site / "mfm_nothing-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mfm-nothing\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mfm]\nnothing = mfm_nothing\n")
    marker = tmp_path / "marker"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]),
        "MFM_CACHE": str(tmp_path / "cache"),
        "MARKER": str(marker),
    }
    env.pop("MFM_LOAD_PLUGINS", None)
    listing = [sys.executable, "-m", "mfm", "plugins"]
    subprocess.run(listing, env=env, check=True, capture_output=True)
    assert marker.exists()  # listing loads every plugin once (and writes the index)
    marker.unlink()
    code = (
        "from mfm.core.bundle import City; from mfm.core.config import make_config; "
        "from mfm.core.pipeline import plan_run; "
        f"plan = plan_run(make_config(city={str(tiny_city)!r}, plugins='osm'), "
        f"City.load({str(tiny_city)!r})); "
        "print(sorted(m.name for m in plan.modalities)); "
        "print([e.skip for e in plan.entries if e.plugin == 'sat'])"
    )
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not marker.exists()  # not selected: not imported
    assert "['osm']" in r.stdout and "plugin sat not selected" in r.stdout
