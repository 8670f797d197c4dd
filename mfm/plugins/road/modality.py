"""Road network: a region-level macro view from the roads layer.

Every city extracted from OSM has roads, most have few POIs in some districts: where a
region has one bus stop and no shop, its streets still say whether people live there.
The descriptors of :mod:`.features` (length density by road class, crossings, dead ends,
orientation entropy) are computed once at prepare and cached; a trainable MLP head maps
them to width ``d``, and the global scale aligns this macro view with the POI (micro)
views of the same region (L_global's macro/micro variant). Not in the paper, whose macro
views are satellite images and trajectories (docs/model.md, "Road view").
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from mfm.core.constants import TAGS
from mfm.core.heads import ProjectionHead
from mfm.core.modality import Context, Modality, Options, View
from mfm.plugins.road.features import feature_names, road_class, road_features

FEATURES_VERSION = "roads-v1"


class RoadOptions(Options):
    """Options of the ``road`` plugin (``[plugin.road]`` in the run config)."""

    orientation_bins: int = Field(18, ge=2, le=180, description="bearing bins over 180 deg")


class RoadModality(Modality):
    """Region macro view E_road = MLP(road descriptors of the region)."""

    name = "road"
    layers = ("roads", "regions")
    views = frozenset({View.REGION})
    Options = RoadOptions
    options: RoadOptions

    def prepare(self, ctx: Context) -> None:
        opts = self.options
        city = ctx.city
        key = {
            "features": FEATURES_VERSION,
            "options": opts.model_dump(mode="json"),
            "crs": city.crs,
            "roads": city.fingerprint("roads"),
            "regions": city.fingerprint("regions"),
        }

        def compute() -> dict[str, Tensor]:
            roads = city.layer("roads")
            classes = np.fromiter((road_class(t) for t in roads[TAGS]), np.int64, len(roads))
            feats = road_features(
                roads.geometry.to_crs(city.crs).to_numpy(),
                classes,
                city.regions.geometry.to_crs(city.crs).to_numpy(),
                city.region_area_m2(),
                opts.orientation_bins,
            )
            return {"features": torch.from_numpy(feats)}

        feats = ctx.cache.get_or_compute("road", key, compute)["features"].float()
        self.register_buffer("features", feats, persistent=False)
        self.feature_names = feature_names()
        self.head = ProjectionHead(feats.shape[1], ctx.dim, inputs=feats)

    def region_view(self, idx: Tensor) -> Tensor:
        """Macro embeddings ``[B, d]`` of regions ``idx``."""
        return self.head(self.features[idx.to(self.features.device)])
