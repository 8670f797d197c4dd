"""The composed model: the selected modalities and objectives in one module tree."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mfm.core.modality import Modality, Objective, PoiView, View


class UrbanModel(nn.Module):
    """Modalities (encoders and heads) and objectives (their own modules, e.g. GATs).

    ``forward(objective, idx, rng)`` returns that objective's loss on a batch, so a
    single module can be wrapped by DistributedDataParallel for every stage.
    """

    def __init__(self, modalities: list[Modality], objectives: list[Objective], dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.modalities = nn.ModuleDict({m.name: m for m in modalities})
        self.objectives = nn.ModuleDict({o.name: o for o in objectives})

    def forward(self, objective: str, idx: Tensor, rng: torch.Generator) -> Tensor:
        return self.objectives[objective].loss(self, idx, rng)

    @property
    def device(self) -> torch.device:
        return next((p.device for p in self.parameters()), torch.device("cpu"))

    def offering(self, view: View) -> list[Modality]:
        """Modalities that offer ``view``: the anchor (text) first, then by ``order``."""
        mods = [m for m in self.modalities.values() if view in m.views]
        return sorted(mods, key=lambda m: (not m.anchor, m.order))

    def anchor(self) -> Modality | None:
        """The POI view the others are compared with: text when present."""
        mods = self.offering(View.POI)
        return mods[0] if mods else None

    def poi_views(self, idx: Tensor) -> dict[str, PoiView]:
        """Every POI view of POIs ``idx``, anchor first; others get the anchor as query."""
        views: dict[str, PoiView] = {}
        query = None
        for mod in self.offering(View.POI):
            views[mod.name] = mod.poi_view(idx, query=query)
            if query is None:
                query = views[mod.name].emb
        return views

    def region_views(self, idx: Tensor) -> dict[str, Tensor]:
        """Every region-level macro view of regions ``idx``."""
        return {m.name: m.region_view(idx) for m in self.offering(View.REGION)}
