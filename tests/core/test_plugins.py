import json
import subprocess
import sys
import types

import pytest

from mfm.core.errors import PluginError
from mfm.core.hookspecs import hookimpl
from mfm.core.modality import Modality
from mfm.core.objective import Objective
from mfm.core.plugins import load_registry
from mfm.core.scales import Scale


def _plugin(name, modality_name=None, objective=None):
    mod = types.ModuleType(name)
    if modality_name:
        cls = type("M", (Modality,), {"name": modality_name})

        @hookimpl
        def register_modalities(register):
            register(cls)

        mod.register_modalities = register_modalities
    if objective:
        ocls = type("O", (Objective,), {"name": objective, "scale": Scale.MACRO})

        @hookimpl
        def register_objectives(register):
            register(ocls)

        mod.register_objectives = register_objectives
    return mod


def test_builtin_osm_is_listed_with_micro_objective():
    out = subprocess.run(
        [sys.executable, "-m", "mfm", "plugins", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    records = {r["name"]: r for r in json.loads(out.stdout)}
    assert records["osm"]["package"] == "urban-mfm"
    assert {"name": "poi", "scale": "micro"} in records["osm"]["objectives"]


def test_fake_plugin_registers_and_selection():
    reg = load_registry(
        extra={
            "fake": _plugin("fake", "fakemod", "fakeobj"),
            "scaleonly": _plugin("scaleonly", objective="so"),
        }
    )
    assert reg.plugins["fake"].modalities["fakemod"].name == "fakemod"
    names = [p.name for p in reg.select(["fake"])]
    assert "fake" in names and "scaleonly" in names and "osm" not in names
    with pytest.raises(PluginError, match="unknown plugin 'nosuch'"):
        reg.select(["nosuch"])


def test_duplicate_names_are_one_line_errors():
    with pytest.raises(PluginError, match="registered by both plugin 'osm' and plugin 'dup'"):
        load_registry(extra={"dup": _plugin("dup", "osm")})


def test_misspelt_hook_fails_check_pending():
    mod = types.ModuleType("bad")

    @hookimpl
    def register_modality(register):  # missing "s"
        pass

    mod.register_modality = register_modality
    with pytest.raises(PluginError, match="'bad' implements an unknown hook"):
        load_registry(extra={"bad": mod})


def test_raising_hook_names_plugin():
    mod = types.ModuleType("boom")

    @hookimpl
    def register_modalities(register):
        raise RuntimeError("kaputt")

    mod.register_modalities = register_modalities
    with pytest.raises(PluginError, match="plugin 'boom' raised in register_modalities"):
        load_registry(extra={"boom": mod})


def test_load_env_limits_distributions(monkeypatch):
    monkeypatch.setenv("MFM_LOAD_PLUGINS", "some-other-dist")
    assert load_registry().plugins == {}
    monkeypatch.setenv("MFM_LOAD_PLUGINS", "urban-mfm")
    assert "osm" in load_registry().plugins


def test_core_import_stays_light():
    code = (
        "import sys, mfm.core.plugins, mfm.core.config, mfm.core.bundle; "
        "print([m for m in ('torch_geometric', 'transformers', 'torchvision') "
        "if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_hooks_are_called_through_pluggy_so_fewer_arguments_are_fine():
    called = []
    mod = types.ModuleType("lean")

    @hookimpl
    def register_modalities():  # takes none of the spec's arguments
        called.append(True)

    mod.register_modalities = register_modalities
    load_registry(extra={"lean": mod})
    assert called == [True]


def _broken_distribution(site):
    """A distribution ``mfm-broken`` whose entry point ``broken`` fails to import."""
    (site / "mfm_broken.py").write_text("raise ImportError('missing dependency frobnicate')\n")
    info = site / "mfm_broken-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mfm-broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mfm]\nbroken = mfm_broken\n")


def test_a_broken_unselected_plugin_warns_in_one_line(tmp_path, tiny_city, monkeypatch):
    _broken_distribution(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("MFM_LOAD_PLUGINS", raising=False)
    reg = load_registry(require=["osm"])  # a run that selects osm only
    assert "broken" not in reg.plugins and "osm" in reg.plugins
    with pytest.raises(PluginError, match=r"plugin 'broken' failed to import.*mfm-broken"):
        load_registry(require=["osm", "broken"])
    with pytest.raises(PluginError, match="plugin 'broken' failed to import"):
        load_registry()  # a run that selects every plugin
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    r = subprocess.run(
        [sys.executable, "-m", "mfm", "city", "validate", str(tiny_city)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if "broken" in ln]
    assert len(warnings) == 1 and "Traceback" not in r.stderr


def test_trace_env_prints_every_hook_call(monkeypatch):
    env = {**__import__("os").environ, "MFM_TRACE_PLUGINS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "mfm", "plugins", "--json"], capture_output=True, text=True, env=env
    )
    assert r.returncode == 0, r.stderr
    assert "register_modalities" in r.stderr and "register_objectives" in r.stderr
