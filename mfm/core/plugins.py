"""Plugin loading and selection: the one place that talks to pluggy and entry points.

Order (pluggy's advice): add hookspecs, block what must not load, load the entry
points of group ``mfm``, ``check_pending()``, then collect registrations.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

import pluggy
from pluggy import HookCaller

from mfm.core import hookspecs
from mfm.core.errors import PluginError
from mfm.core.hookspecs import PROJECT
from mfm.core.progress import log

if TYPE_CHECKING:
    import typer

    from mfm.core.modality import Modality
    from mfm.core.objective import Objective
    from mfm.core.scene import SceneEncoder

LOAD_ENV = "MFM_LOAD_PLUGINS"
TRACE_ENV = "MFM_TRACE_PLUGINS"  # set to 1: print every hook call and its result to stderr


@dataclass
class PluginInfo:
    """One loaded plugin and what it registered."""

    name: str
    version: str
    package: str
    modalities: dict[str, type[Modality]] = field(default_factory=dict)
    objectives: dict[str, type[Objective]] = field(default_factory=dict)
    scene_encoders: dict[str, type[SceneEncoder]] = field(default_factory=dict)

    @property
    def is_modality_plugin(self) -> bool:
        """Selected by ``--plugins``; scale-objective plugins are always on."""
        return bool(self.modalities)

    def as_json(self) -> dict[str, object]:
        """The ``mfm plugins --json`` record."""
        return {
            "name": self.name,
            "version": self.version,
            "package": self.package,
            "modalities": sorted(self.modalities),
            "objectives": [
                {"name": n, "scale": o.scale.label}
                for n, o in sorted(self.objectives.items(), key=lambda kv: kv[1].scale)
            ],
        }


class Registry:
    """All installed plugins and the modalities and objectives they registered."""

    def __init__(
        self,
        pm: pluggy.PluginManager,
        infos: dict[str, PluginInfo],
        unloaded: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.pm = pm
        self.plugins = infos
        self.unloaded = unloaded or {}
        """Modality plugins a run did not select, left unimported: their index records."""

    @property
    def modality_plugins(self) -> list[str]:
        """Names that ``--plugins`` accepts."""
        return [n for n, p in self.plugins.items() if p.is_modality_plugin]

    def select(self, names: list[str] | None) -> list[PluginInfo]:
        """The plugins a run uses: the named modality plugins plus every scale plugin."""
        if names is None:
            names = self.modality_plugins
        known = set(self.modality_plugins) | set(self.unloaded)
        for name in names:
            if name not in known:
                hint = ", ".join(sorted(known)) or "none installed"
                raise PluginError(
                    f"unknown plugin {name!r} in --plugins; installed modality plugins: {hint}"
                )
        chosen = set(names)
        return [p for n, p in self.plugins.items() if n in chosen or not p.is_modality_plugin]

    @property
    def scene_encoders(self) -> dict[str, type[SceneEncoder]]:
        """Every registered street-view scene encoder, by name."""
        return {n: c for p in self.plugins.values() for n, c in p.scene_encoders.items()}


def _entry_points() -> list[EntryPoint]:
    eps = list(entry_points(group=PROJECT))
    allowed = os.environ.get(LOAD_ENV)
    if allowed is not None:
        wanted = {d.strip().lower() for d in allowed.split(",") if d.strip()}
        eps = [ep for ep in eps if ep.dist is not None and ep.dist.name.lower() in wanted]
    return sorted(eps, key=lambda ep: (ep.dist.name != "urban-mfm" if ep.dist else True, ep.name))


def load_registry(
    extra: dict[str, object] | None = None, require: Iterable[str] | None = None
) -> Registry:
    """Load every installed plugin (or those ``MFM_LOAD_PLUGINS`` allows) and collect them.

    Args:
        extra: plugin objects (modules or instances) to register besides the entry
            points, by name; tests use this for fake plugins.
        require: entry-point names that must import; one that fails to is an error. Any
            other that fails is skipped with a one-line warning, so a broken plugin that
            a run does not select cannot stop it. None requires every plugin. When the
            plugin index knows them, modality plugins outside ``require`` are not imported
            at all (``Registry.unloaded``).
    """
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    if os.environ.get(TRACE_ENV):
        pm.trace.root.setwriter(lambda text: print(text, end="", file=sys.stderr))
        pm.enable_tracing()
    required = None if require is None else set(require)
    unloaded = _unselected(required)
    infos: dict[str, PluginInfo] = {}
    for ep in _entry_points():
        if ep.name in unloaded:
            continue
        if ep.name in infos:
            raise PluginError(
                f"plugin {ep.name!r} is installed twice ({infos[ep.name].package} and "
                f"{ep.dist.name if ep.dist else '?'}); uninstall one"
            )
        try:
            module = ep.load()
        except Exception as exc:
            message = (
                f"plugin {ep.name!r} failed to import ({type(exc).__name__}: {exc}); "
                f"fix or uninstall {ep.dist.name if ep.dist else ep.value}"
            )
            if required is None or ep.name in required:
                raise PluginError(message) from None
            log(f"warning: {message}")
            continue
        pm.register(module, name=ep.name)
        dist = ep.dist
        infos[ep.name] = PluginInfo(
            ep.name, dist.version if dist else "?", dist.name if dist else "?"
        )
    for name, plugin in (extra or {}).items():
        if name in infos:
            raise PluginError(f"plugin {name!r} is registered twice; rename one")
        module = importlib.import_module(plugin) if isinstance(plugin, str) else plugin
        pm.register(module, name=name)
        infos[name] = PluginInfo(name, "0", "(registered in code)")
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) if exc.plugin is not None else "?"
        raise PluginError(f"plugin {name!r} implements an unknown hook: {exc}") from None
    _collect(pm, infos)
    return Registry(pm, infos, unloaded)


def _unselected(required: set[str] | None) -> dict[str, dict[str, Any]]:
    """Index records of the modality plugins a run that selects ``required`` can leave
    unimported (none without a fresh plugin index, or when nothing is selected)."""
    if not required:
        return {}
    from mfm.core.plugin_index import read_index

    index = read_index()
    if index is None:
        return {}
    return {p["name"]: p for p in index["plugins"] if p["modalities"] and p["name"] not in required}


def _each_plugin(pm: pluggy.PluginManager, hook: str) -> Iterator[tuple[str, HookCaller]]:
    """(plugin name, a caller of ``hook`` that reaches only that plugin) for every plugin
    implementing it: calls go through pluggy, so an implementation may take fewer
    arguments than the spec, and each result has an owner."""
    for impl in getattr(pm.hook, hook).get_hookimpls():
        others = [p for p in pm.get_plugins() if p is not impl.plugin]
        yield impl.plugin_name, pm.subset_hook_caller(hook, remove_plugins=others)


def _collect(pm: pluggy.PluginManager, infos: dict[str, PluginInfo]) -> None:
    """Call the register_* hooks plugin by plugin, so each registration has an owner."""
    owners: dict[tuple[str, str], str] = {}

    for hook, attr in (
        ("register_modalities", "modalities"),
        ("register_objectives", "objectives"),
        ("register_scene_encoders", "scene_encoders"),
    ):
        for owner, call in _each_plugin(pm, hook):

            def register(cls: type, _owner: str = owner, _attr: str = attr) -> None:
                name = getattr(cls, "name", None)
                if not isinstance(name, str) or not name:
                    raise PluginError(f"plugin {_owner!r} registered {cls!r} without a name")
                key = (_attr, name)
                if key in owners:
                    what = _attr[:-1].replace("_", " ")
                    raise PluginError(
                        f"{what} {name!r} is registered by both plugin {owners[key]!r} "
                        f"and plugin {_owner!r}; rename one or uninstall a plugin"
                    )
                owners[key] = _owner
                getattr(infos[_owner], _attr)[name] = cls

            try:
                call(register=register)
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"plugin {owner!r} raised in {hook} ({type(exc).__name__}: {exc})"
                ) from None


def register_commands(registry: Registry, app: typer.Typer) -> dict[str, list[dict[str, str]]]:
    """Let every plugin add CLI commands; returns each plugin's ``{"name", "help"}`` list."""
    added: dict[str, list[dict[str, str]]] = {}
    for owner, call in _each_plugin(registry.pm, "register_commands"):
        before = len(app.registered_commands), len(app.registered_groups)
        try:
            call(app=app)
        except Exception as exc:
            raise PluginError(
                f"plugin {owner!r} raised in register_commands ({type(exc).__name__}: {exc})"
            ) from None
        new = app.registered_commands[before[0] :] + app.registered_groups[before[1] :]
        added[owner] = [_command_record(info) for info in new]
    return added


def _command_record(info: Any) -> dict[str, str]:
    """Name and first help line of a typer CommandInfo / TyperInfo."""
    callback = info.callback or getattr(getattr(info, "typer_instance", None), "info", None)
    name = info.name or (getattr(info.callback, "__name__", "?").replace("_", "-"))
    text = info.help or (getattr(callback, "__doc__", None) if callable(callback) else None) or ""
    return {"name": name, "help": text.strip().splitlines()[0] if text.strip() else ""}
