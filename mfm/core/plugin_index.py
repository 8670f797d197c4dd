"""What the installed plugins offer, remembered, so that ``mfm --help`` and ``mfm plugins``
need not import them (the built-in ones import torch: seconds and hundreds of MB).

Every command that loads the plugins anyway writes ``$MFM_CACHE/plugins.json``: the
plugins' records (``mfm plugins --json``) and the CLI commands each one adds. It is used
only while its signature matches the installed entry points of group ``mfm``: name,
target, distribution and version, and the newest modification time of the plugin's
source files, so installing, removing, upgrading or editing a plugin invalidates it.
"""

from __future__ import annotations

import importlib.util
import json
import os
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from mfm.core.atomic import write_json
from mfm.core.cache import default_cache_dir
from mfm.core.hookspecs import PROJECT
from mfm.core.plugins import TRACE_ENV

INDEX_FILE = "plugins.json"


def _source_mtime(module: str) -> int:
    """Newest mtime (ns) of the module's files (all ``.py`` of its package), 0 if unknown."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return 0
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        return 0
    origin = Path(spec.origin)
    files = origin.parent.rglob("*.py") if origin.name == "__init__.py" else [origin]
    return max((f.stat().st_mtime_ns for f in files), default=0)


def signature() -> list[list[Any]]:
    """What the index must have been written for (see the module docstring)."""
    rows = []
    for ep in sorted(entry_points(group=PROJECT), key=lambda e: e.name):
        dist = ep.dist
        rows.append(
            [
                ep.name,
                ep.value,
                dist.name if dist else "?",
                dist.version if dist else "?",
                _source_mtime(ep.module),
            ]
        )
    return rows


def read_index(root: Path | None = None) -> dict[str, Any] | None:
    """The remembered index when it is still true of the installed plugins, else None
    (also None while ``MFM_TRACE_PLUGINS`` asks to see the hooks called)."""
    if os.environ.get(TRACE_ENV):
        return None
    path = (root or default_cache_dir()) / INDEX_FILE
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return index if index.get("signature") == signature() else None


def write_index(
    plugins: list[dict[str, Any]],
    commands: dict[str, list[dict[str, str]]],
    root: Path | None = None,
) -> None:
    """Remember the plugins' records and commands (best effort: a read-only cache is fine)."""
    data = {"signature": signature(), "plugins": plugins, "commands": commands}
    try:
        (root or default_cache_dir()).mkdir(parents=True, exist_ok=True)
        write_json((root or default_cache_dir()) / INDEX_FILE, data)
    except OSError:
        pass
