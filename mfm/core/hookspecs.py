"""Every hook a plugin can implement, and the markers to implement them with.

A plugin module implements hooks as plain functions decorated with ``@hookimpl``::

    from mfm import hookimpl

    @hookimpl
    def register_modalities(register):
        register(TerrainModality)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import typer

    from mfm.core.modality import Modality, Objective

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
