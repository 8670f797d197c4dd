"""The run directory: what a run is (its identity) and how ``--out`` is claimed.

``run.json`` records the city (absolute path and layer hashes), the resolved config and
the modalities and objectives that train. ``--resume`` continues only the same run,
and a folder that holds something else is never written into without ``--overwrite``.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from mfm.core.atomic import write_json
from mfm.core.city import City
from mfm.core.config import RunConfig
from mfm.core.constants import LAYERS, RUN_MANIFEST
from mfm.core.errors import MfmError

IDENTITY = "run.json"
# settings that change where or how fast a run goes, not what it computes
VOLATILE = {"out", "quiet", "device", "num_workers", "cache_dir", "city", "plugins"}
CHECKPOINTS = "checkpoints"


def default_out() -> Path:
    """``runs/<timestamp>``: where a run goes without ``--out``."""
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def run_identity(
    config: RunConfig, city: City, modalities: list[str], objectives: list[str]
) -> dict[str, Any]:
    """What makes two runs the same run (``run.json``)."""
    return {
        "city": str(Path(city.root).resolve()),
        "layers": {layer: city.fingerprint(layer) for layer in LAYERS if city.has(layer)},
        "config": config.model_dump(mode="json", exclude=VOLATILE),
        "modalities": modalities,
        "objectives": objectives,
    }


def recorded_city(out: Path | str | None) -> Path | None:
    """The city a run in ``out`` was trained on (for ``--resume`` without ``--city``)."""
    path = Path(out) / IDENTITY if out is not None else None
    if path is None or not path.is_file():
        return None
    return Path(json.loads(path.read_text())["city"])


def _difference(old: Any, new: Any, key: str = "") -> str | None:
    """The first ``key: old -> new`` that differs between two JSON values, or None."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            found = _difference(old.get(k), new.get(k), f"{key}.{k}" if key else k)
            if found:
                return found
        return None
    return None if old == new else f"{key} was {old!r}, now {new!r}"


def _is_run(out: Path) -> bool:
    return any((out / name).exists() for name in (IDENTITY, RUN_MANIFEST, CHECKPOINTS))


def claim_out(out: Path, identity: dict[str, Any], resume: bool, overwrite: bool) -> bool:
    """Make ``out`` this run's folder; True when it was created (or emptied) now.

    Raises:
        MfmError: ``--resume`` of a different run, a finished run without ``--resume``
            or ``--overwrite``, a non-empty folder that is not a run, an uncreatable path.
    """
    recorded = out / IDENTITY
    if resume and recorded.is_file():
        diff = _difference(json.loads(recorded.read_text()), identity)
        if diff:
            raise MfmError(
                f"--resume: {out} is another run ({diff}); pass its settings or a new --out"
            )
        return False
    if out.exists() and not out.is_dir():
        raise MfmError(f"cannot create --out {out}: a file is there; pass another --out")
    if out.is_dir() and any(out.iterdir()) and not resume:
        if not overwrite:
            what = "a finished run" if (out / RUN_MANIFEST).exists() else "files"
            raise MfmError(f"{out} already holds {what}; pass a new --out, --resume or --overwrite")
        if not _is_run(out):
            raise MfmError(f"{out} is not an mfm run; --overwrite replaces only run folders")
        shutil.rmtree(out)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. a file where a parent folder should be
        raise MfmError(f"cannot create --out {out}: {exc.strerror}; pass another --out") from None
    write_json(recorded, identity)
    return created or not resume


def release_out(out: Path) -> None:
    """Remove the folder of a run that failed before its first checkpoint."""
    if not (out / CHECKPOINTS).exists():
        shutil.rmtree(out, ignore_errors=True)
