"""Every hook a plugin can implement, and the markers to implement them with.

A plugin module implements hooks as plain functions decorated with ``@hookimpl``::

    import mfm

    @mfm.hookimpl
    def register_modalities(register):
        register(TerrainModality)

The host calls every hook through pluggy (``pm.hook.<name>(...)``), so an
implementation may take fewer arguments than its spec. ``MFM_TRACE_PLUGINS=1`` prints
every hook call and its result to stderr.

Downstream tasks are not a hook: they are data (``[labels.*]`` in a bundle's
``city.toml``), so a new task needs a label file, not code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import typer

    from mfm.core.modality import Modality
    from mfm.core.objective import Objective
    from mfm.core.scene import SceneEncoder

PROJECT = "mfm"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_modalities(register: Callable[[type[Modality]], None]) -> None:
    """Register the modalities this plugin brings.

    Args:
        register: call ``register(ModalityClass)`` once per ``mfm.Modality`` subclass.
            Its ``name`` must be unique across all installed plugins.

    Returns:
        Nothing; registrations happen through ``register``.
    """


@hookspec
def register_objectives(register: Callable[[type[Objective]], None]) -> None:
    """Register the contrastive objectives this plugin brings.

    Args:
        register: call ``register(ObjectiveClass)`` once per ``mfm.Objective`` subclass.
            Its ``name`` must be unique and its ``scale`` says which slot it fills.
            A plugin that registers objectives but no modalities (a scale objective
            such as ``local``) is always on; it is skipped when its views are missing.

    Returns:
        Nothing; registrations happen through ``register``.
    """


@hookspec
def register_scene_encoders(register: Callable[[type[SceneEncoder]], None]) -> None:
    """Register street-view scene encoders (the paper's E_scene, Eq. 8).

    Args:
        register: call ``register(SceneEncoderClass)`` once per ``mfm.SceneEncoder``
            subclass; ``[plugin.svi] scene = "<its name>"`` selects it.

    Returns:
        Nothing; registrations happen through ``register``.
    """


@hookspec
def register_commands(app: typer.Typer) -> None:
    """Add sub-commands to the ``mfm`` command line.

    Args:
        app: the root Typer application; call ``app.command()(fn)`` or
            ``app.add_typer(sub_app, name=...)``.

    Returns:
        Nothing.
    """


def hook_names() -> list[str]:
    """Names of every hook defined here (used by the docs meta-test)."""
    return [name for name, value in globals().items() if _is_hookspec(value)]


def _is_hookspec(value: Any) -> bool:
    return callable(value) and hasattr(value, f"{PROJECT}_spec")
