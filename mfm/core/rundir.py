"""The run directory: what a run is (its identity), how ``--out`` is claimed, and how a
finished run is read (:class:`RunDir` over the typed :class:`RunManifest`).

``run.json`` records the city (absolute path and layer hashes), the resolved config and
the modalities and objectives that train. ``--resume`` continues only the same run,
and a folder that holds something else is never written into without ``--overwrite``.
``manifest.json`` is written by the pipeline (and ``mfm embed``) as a ``RunManifest``;
eval, report and ablate read it only through ``RunDir``.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mfm.core.atomic import write_json
from mfm.core.bundle.city import City
from mfm.core.cache import FeatureCache
from mfm.core.config import RunConfig
from mfm.core.constants import LAYERS, POI_EMBEDDINGS, RUN_MANIFEST
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


# --------------------------------------------------------------------------- the manifest


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")  # newer runs may say more; older readers keep it


class CityRecord(_Record):
    """The city a run was trained on (or embedded): absolute root, CRS, layer hashes."""

    name: str
    root: str
    crs: str
    hashes: dict[str, str] = Field(default_factory=dict)


class OutputsRecord(_Record):
    """The files a run wrote into its directory, and the embedding widths."""

    poi_embeddings: str | None = POI_EMBEDDINGS
    region_embeddings: str | None = None
    dim: int
    region_dim: int | None = None
    baselines: str | None = None
    model: str | None = None


class CacheRecord(_Record):
    """The feature cache the run read and filled."""

    dir: str
    hits: int = 0
    misses: int = 0


class RunManifest(_Record):
    """``manifest.json``: what a finished run (or ``mfm embed``) did and wrote."""

    mfm_version: str
    created: str
    config: dict[str, Any]
    city: CityRecord
    outputs: OutputsRecord
    feature_cache: CacheRecord
    plugins: list[dict[str, Any]] = Field(default_factory=list)
    modalities: dict[str, dict[str, Any]] = Field(default_factory=dict)
    backbones: dict[str, dict[str, Any]] = Field(default_factory=dict)
    plan: list[dict[str, Any]] = Field(default_factory=list)
    stages: list[dict[str, Any]] = Field(default_factory=list)
    objective_stats: dict[str, Any] = Field(default_factory=dict)
    device: dict[str, Any] = Field(default_factory=dict)
    wall_seconds: float | None = None
    embedded_with: dict[str, Any] | None = None
    """For ``mfm embed``: the source run (``run``) and the city it was trained on."""
    objectives: list[str] | None = None


class RunDir:
    """A finished run directory, read through its typed manifest (eval, report, ablate)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        file = self.path / RUN_MANIFEST
        if not file.is_file():
            raise MfmError(f"{path} has no {RUN_MANIFEST}; pass a directory written by `mfm run`")
        try:
            self.manifest = RunManifest.model_validate_json(file.read_text())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise MfmError(
                f"{file} is not a run manifest ({where}: {first['msg']}); re-run `mfm run`"
            ) from None

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r}, city={self.manifest.city.name!r})"

    def city(self, override: Path | str | None = None) -> City:
        """The bundle the run was trained on (``city.root``), or ``override`` (it moved)."""
        root = Path(override) if override is not None else Path(self.manifest.city.root)
        if not (root / "city.toml").is_file():
            where = "--city" if override is not None else f"city.root in {RUN_MANIFEST}"
            raise MfmError(
                f"the city of run {self.path} ({root}, {where}) is not there; "
                "put the bundle back at that path or pass --city DIR"
            )
        return City.load(root)

    def embeddings_file(self, level: str) -> Path:
        """The run's ``poi`` or ``region`` embeddings file; MfmError when it wrote none."""
        name = getattr(self.manifest.outputs, f"{level}_embeddings", None)
        path = self.path / name if name else None
        if path is None or not path.is_file():
            layer = "pois" if level == "poi" else "regions"
            raise MfmError(
                f"run {self.path} has no {level} embeddings; a {level}-level task needs a run "
                f"on a city with {layer}"
            )
        return path

    @property
    def cache(self) -> FeatureCache:
        """The feature cache the run used (so its features are found, not recomputed)."""
        where = self.manifest.feature_cache.dir or self.manifest.config.get("cache_dir")
        return FeatureCache(Path(where) if where else None)

    @property
    def config(self) -> RunConfig:
        """The run's resolved config."""
        return RunConfig.model_validate(self.manifest.config)

    @property
    def text_options(self) -> dict[str, Any]:
        """The osm plugin's text options (for the ``text`` baseline), ``{}`` without it."""
        return dict(self.manifest.modalities.get("osm", {}))
