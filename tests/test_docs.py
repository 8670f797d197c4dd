"""Every hook is documented under its exact signature in docs/plugins.md and has a test."""

import inspect
import io
import re
import sys
import types
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from mfm.core import hookspecs
from mfm.core.errors import PluginError
from mfm.core.hookspecs import hookimpl
from mfm.core.plugins import load_registry
from mfm.core.plugins import register_commands as add_plugin_commands

ROOT = Path(__file__).resolve().parents[1]
DOCS = (ROOT / "docs" / "plugins.md").read_text()
TESTS = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))


@pytest.mark.parametrize("name", hookspecs.hook_names())
def test_hook_is_documented_under_its_signature(name):
    params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
    assert f"### `{name}({params})`" in DOCS, f"docs/plugins.md lacks a section for {name}"


@pytest.mark.parametrize("name", hookspecs.hook_names())
def test_hook_has_a_test(name):
    assert re.search(rf"def test_hook_{name}\b", TESTS), f"no test_hook_{name} in tests/"


def test_hook_register_modalities():
    reg = load_registry()
    assert reg.plugins["osm"].modalities["osm"].name == "osm"


def test_hook_register_objectives():
    reg = load_registry()
    assert reg.plugins["osm"].objectives["poi"].scale.label == "micro"


def test_hook_register_commands():
    import typer

    plugin = types.ModuleType("hello")

    @hookimpl
    def register_commands(app):
        @app.command()
        def hello(name: str):
            print(f"hello {name}")

    plugin.register_commands = register_commands
    app = typer.Typer()

    @app.callback()
    def _root():
        pass

    add_plugin_commands(load_registry(extra={"hello": plugin}), app)
    out = io.StringIO()
    argv, sys.argv = sys.argv, ["mfm", "hello", "city"]
    try:
        with redirect_stdout(out):
            app(standalone_mode=False)
    finally:
        sys.argv = argv
    assert out.getvalue().strip() == "hello city"


def test_hook_register_scene_encoders():
    from mfm import SceneEncoder
    from mfm.core.scene import build_scene_encoder

    class Constant(SceneEncoder):
        name = "constant"

        def forward(self, groups, views):
            return views.new_ones(views.shape[0], views.shape[-1])

    plugin = types.ModuleType("captions")

    @hookimpl
    def register_scene_encoders(register):
        register(Constant)

    plugin.register_scene_encoders = register_scene_encoders
    reg = load_registry(extra={"captions": plugin})
    assert {"mean", "none", "constant"} <= set(reg.scene_encoders)
    assert isinstance(build_scene_encoder("constant", reg.scene_encoders), Constant)
    with pytest.raises(PluginError, match="scene encoder 'constant' is registered by both"):
        load_registry(extra={"captions": plugin, "again": plugin_copy(plugin)})


def plugin_copy(plugin):
    copy = types.ModuleType("again")
    copy.register_scene_encoders = plugin.register_scene_encoders
    return copy


def test_readme_and_docs_link_only_inside_the_repository():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        text = page.read_text()
        assert "../shared" not in text, f"{page.name} points outside the repository"
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            assert (page.parent / target).exists(), f"{page.name}: broken link {target}"
