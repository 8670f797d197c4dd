"""The run plan: which objectives run, and why the others are skipped."""

import types

import pytest

from mfm.core.bundle.city import City
from mfm.core.config import make_config
from mfm.core.errors import PluginError
from mfm.core.hookspecs import hookimpl
from mfm.core.modality import Modality, View
from mfm.core.pipeline import plan_run
from mfm.core.plugins import load_registry


class NeedsAFile(Modality):
    name = "needsfile"
    views = frozenset({View.REGION})

    def unavailable(self, city):
        return f"no needsfile.tif in {city.root}; pass [plugin.needsfile] path"

    def prepare(self, ctx):
        raise AssertionError("an unavailable modality is never prepared")


def _registry():
    plugin = types.ModuleType("needsfile")

    @hookimpl
    def register_modalities(register):
        register(NeedsAFile)

    plugin.register_modalities = register_modalities
    return load_registry(extra={"needsfile": plugin})


def test_unavailable_modality_is_dropped_from_default_runs(tiny_city):
    plan = plan_run(make_config(city=tiny_city), City.load(tiny_city), _registry())
    assert "needsfile" not in [m.name for m in plan.modalities]
    assert any("needsfile.tif" in note for note in plan.notes)


def test_unavailable_modality_named_in_plugins_is_an_error(tiny_city):
    with pytest.raises(PluginError, match=r"plugin 'needsfile': no needsfile\.tif"):
        plan_run(
            make_config(city=tiny_city, plugins="osm,needsfile"), City.load(tiny_city), _registry()
        )


def test_ablation_plan_says_why_macro_is_skipped_and_how_global_runs(tiny_city):
    plan = plan_run(make_config(city=tiny_city, plugins="osm,polygon"), City.load(tiny_city))
    skips = {e.objective: e.skip for e in plan.entries}
    assert plan.objectives == ["poi", "local", "global"]
    assert "add it to --plugins" in skips["sate"] and "sat" in skips["sate"]
    notes = {e.objective: e.note for e in plan.entries}
    assert notes["global"].startswith("micro/micro (no macro view")
    assert notes["local"] == "text/multi-view" and notes["poi"] == "POIs grouped by nearest road"
    dropped = plan_run(make_config(city=tiny_city, scales="micro,macro"), City.load(tiny_city))
    assert {e.objective: e.skip for e in dropped.entries}["local"] == "slot dropped by --scales"
