"""Trajectories: a region-level macro view from mobility features (paper V-D, Table VIII).

The paper adds trajectory data "into the Global Contrastive Objective": it brings no
objective of its own. Region features (trip origins and destinations per km2, time-of-day
profiles, OD-distance profile, in/out ratio, stay points; :mod:`.features`) are computed
once at prepare and cached; a trainable MLP head maps them to width ``d``, and the global
scale fuses this view with the other macro views (satellite).
"""

from __future__ import annotations

from itertools import pairwise
from typing import TYPE_CHECKING

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import Tensor

from mfm.core.heads import ProjectionHead
from mfm.core.modality import Context, Modality, Options, View
from mfm.plugins.trajectory.features import (
    DEFAULT_DISTANCE_EDGES,
    feature_names,
    mobility_features,
)
from mfm.plugins.trajectory.flows import flow_features, od_pairs

if TYPE_CHECKING:
    from mfm.core.bundle.city import City

FEATURES_VERSION = "mobility-v1"
FLOWS_VERSION = "flows-v1"


class TrajectoryOptions(Options):
    """Options of the ``trajectory`` plugin (``[plugin.trajectory]`` in the run config)."""

    time_bins: int = Field(6, ge=1, le=96, description="time-of-day bins over 24 h")
    distance_edges: tuple[float, ...] = Field(
        DEFAULT_DISTANCE_EDGES, description="inner edges (m) of the trip-distance bins"
    )
    stay_speed: float = Field(0.5, gt=0, description="m/s below which a point is a stay")

    @field_validator("distance_edges")
    @classmethod
    def _increasing(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(v <= 0 for v in value) or any(b <= a for a, b in pairwise(value)):
            raise ValueError("distance_edges must be positive and increasing, e.g. [500, 1000]")
        return value


class TrajectoryModality(Modality):
    """Region macro view E_traj = MLP(mobility features of the region)."""

    name = "trajectory"
    layers = ("trajectories", "regions")
    views = frozenset({View.REGION})
    Options = TrajectoryOptions
    options: TrajectoryOptions

    def prepare(self, ctx: Context) -> None:
        opts = self.options
        city = ctx.city
        trajectories, regions = city.layer("trajectories"), city.layer("regions")
        key = {
            "features": FEATURES_VERSION,
            "options": opts.model_dump(mode="json"),
            "crs": city.crs,
            "trajectories": city.fingerprint("trajectories"),
            "regions": city.fingerprint("regions"),
        }

        def compute() -> dict[str, Tensor]:
            feats = mobility_features(
                trajectories,
                regions,
                city.crs,
                time_bins=opts.time_bins,
                distance_edges=opts.distance_edges,
                stay_speed=opts.stay_speed,
            )
            return {"features": torch.from_numpy(feats)}

        feats = ctx.cache.get_or_compute("trajectory", key, compute)["features"].float()
        self.register_buffer("features", feats, persistent=False)
        self.feature_names = feature_names(opts.time_bins, opts.distance_edges)
        self.head = ProjectionHead(feats.shape[1], ctx.dim, inputs=feats)

    def region_view(self, idx: Tensor) -> Tensor:
        """Macro embeddings ``[B, d]`` of regions ``idx``."""
        return self.head(self.features[idx.to(self.features.device)])


class FlowOptions(Options):
    """Options of the ``flows`` modality (``[plugin.flows]`` in the run config)."""


class FlowModality(Modality):
    """Region macro view E_flow = MLP(flow features): where the region's trips go and come
    from (:mod:`.flows`), from the ``od`` layer or else the trajectories' end points."""

    name = "flows"
    layers = ("regions",)
    views = frozenset({View.REGION})
    Options = FlowOptions
    options: FlowOptions

    def unavailable(self, city: City) -> str | None:
        if not (city.has("od") or city.has("trajectories")):
            return f"{city.root} has neither an od nor a trajectories layer"
        return None

    def prepare(self, ctx: Context) -> None:
        city = ctx.city
        source = "od" if city.has("od") else "trajectories"
        key = {
            "features": FLOWS_VERSION,
            "source": source,
            "crs": city.crs,
            source: city.fingerprint(source),
            "regions": city.fingerprint("regions"),
        }

        def compute() -> dict[str, Tensor]:
            o, d, w = od_pairs(city)
            feats = flow_features(o, d, w, city.xy("regions"))
            return {
                "features": torch.from_numpy(feats),
                "pairs": torch.from_numpy(np.stack([o, d])),
                "counts": torch.from_numpy(w),
            }

        cached = ctx.cache.get_or_compute("flows", key, compute)
        feats = cached["features"].float()
        self.register_buffer("features", feats, persistent=False)
        self.pairs, self.counts = cached["pairs"].long(), cached["counts"].double()
        self.head = ProjectionHead(feats.shape[1], ctx.dim, inputs=feats)

    def region_view(self, idx: Tensor) -> Tensor:
        """Macro embeddings ``[B, d]`` of regions ``idx``."""
        return self.head(self.features[idx.to(self.features.device)])
