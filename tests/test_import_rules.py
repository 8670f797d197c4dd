"""The import rules of DESIGN.md section 9, checked on the package's import graph."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mfm"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """The mfm modules ``path`` imports (not under ``if TYPE_CHECKING``); with
    ``top_level_only``, only those imported when the module itself is imported."""
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("mfm"))
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mfm"):
                found.add(node.module)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and top_level_only:
                continue
            for field in ("body", "orelse", "finalbody", "handlers"):
                visit([n for n in getattr(node, field, []) if isinstance(n, ast.AST)])

    visit(ast.parse(path.read_text()).body)
    return found


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def test_core_never_imports_plugins_scales_cities_eval_or_cli():
    outside = ("mfm.plugins", "mfm.scales", "mfm.cities", "mfm.eval", "mfm.cli")
    bad = {
        name: sorted(i for i in _imports(path, top_level_only=False) if i.startswith(outside))
        for name, path in MODULES.items()
        if name.startswith("mfm.core")
    }
    assert not {k: v for k, v in bad.items() if v}


def test_no_circle_among_core_modules():
    graph = {
        name: {i for i in _imports(path, top_level_only=True) if i in MODULES and i != name}
        for name, path in MODULES.items()
        if name.startswith("mfm.core.")
    }
    done: set[str] = set()

    def walk(node: str, stack: list[str]) -> None:
        if node in stack:
            raise AssertionError("import circle: " + " -> ".join([*stack, node]))
        if node in done:
            return
        for nxt in graph.get(node, ()):
            walk(nxt, [*stack, node])
        done.add(node)

    for name in graph:
        walk(name, [])


def test_a_plugin_never_imports_another_plugin_or_the_cli():
    for name, path in MODULES.items():
        if not name.startswith("mfm.plugins."):
            continue
        own = ".".join(name.split(".")[:3])
        for i in _imports(path, top_level_only=False):
            assert not i.startswith("mfm.cli"), f"{name} imports {i}"
            if i.startswith("mfm.plugins."):
                assert i.startswith(own), f"{name} imports another plugin: {i}"


def test_scales_never_import_plugins():
    for name, path in MODULES.items():
        if name.startswith("mfm.scales"):
            assert not any(i.startswith("mfm.plugins") for i in _imports(path, False)), name


def test_objective_sees_no_model():
    """The narrow interface: objectives import modality and views, never the model."""
    assert "mfm.core.model" not in _imports(MODULES["mfm.core.objective"], False)
    for name, path in MODULES.items():
        if name.startswith(("mfm.plugins", "mfm.scales")):
            assert "mfm.core.model" not in _imports(path, False), name


def test_cities_never_import_eval_and_plots_is_a_leaf():
    for name, path in MODULES.items():
        if name.startswith("mfm.cities"):
            imports = _imports(path, top_level_only=False)
            assert not any(i.startswith("mfm.eval") for i in imports), name
    assert all(i.startswith("mfm.core") for i in _imports(MODULES["mfm.plots"], False))
