"""The bundle's rules: its layers (id column, columns, geometry types), the keys of
``city.toml`` and of a ``[labels.*]`` table, and the label spec they declare."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mfm.core.constants import (
    GEOMETRY,
    OD_COLUMNS,
    POI_ID,
    REGION_ID,
    ROAD_ID,
    SVI_DIRECTIONS,
    SVI_ID,
    TAGS,
    TRAJ_ID,
)

IMAGE = "image"
TIME = "t"
_MANIFEST_KEYS = ("name", "crs", "layers", "labels")
_LABEL_KEYS = ("path", "level", "kind", "unit")
_POINT = ("Point",)
_LINE = ("LineString", "MultiLineString")
_POLYGON = ("Polygon", "MultiPolygon")


@dataclass(frozen=True)
class _LayerRule:
    id: str
    columns: tuple[str, ...]
    geom: tuple[str, ...] | None
    unique_ids: bool = True


LAYER_RULES: dict[str, _LayerRule] = {
    "pois": _LayerRule(POI_ID, (POI_ID, GEOMETRY, TAGS), _POINT),
    "roads": _LayerRule(ROAD_ID, (ROAD_ID, GEOMETRY, TAGS), _LINE),
    "regions": _LayerRule(REGION_ID, (REGION_ID, GEOMETRY), _POLYGON),
    "svi": _LayerRule(SVI_ID, (SVI_ID, GEOMETRY, *SVI_DIRECTIONS), _POINT),
    "satellite": _LayerRule(REGION_ID, (REGION_ID, IMAGE), None),
    "trajectories": _LayerRule(TRAJ_ID, (TRAJ_ID, TIME, GEOMETRY), _POINT, unique_ids=False),
    "od": _LayerRule(OD_COLUMNS[0], OD_COLUMNS, None, unique_ids=False),
}


@dataclass(frozen=True)
class LabelSpec:
    """A labelled task declared under ``[labels.<name>]`` in ``city.toml``."""

    name: str
    path: Path
    level: Literal["region", "poi"]
    kind: Literal["regression", "classification"]
    unit: str = ""
    """Unit of the values (``unit = "people"``), shown by ``mfm report``; "" when not given."""
