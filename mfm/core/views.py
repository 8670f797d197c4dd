"""Views: the run's modalities grouped by the kind of embedding they offer.

Cross-scale objectives (LOCAL, GLOBAL) see the modalities only through this object:
which ones offer POI or region views, and the views of a batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor

from mfm.core.modality import Modality, PoiView, View


class Views:
    """The selected modalities, by view: the anchor (text) first, then by ``order``."""

    def __init__(self, modalities: Iterable[Modality]) -> None:
        self._by_name = {m.name: m for m in modalities}
        self.poi = self._offering(View.POI)
        self.region = self._offering(View.REGION)

    def _offering(self, view: View) -> list[Modality]:
        mods = [m for m in self._by_name.values() if view in m.views]
        return sorted(mods, key=lambda m: (not m.anchor, m.order))

    def __iter__(self) -> Iterator[Modality]:
        return iter(self._by_name.values())

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str) -> Modality | None:
        """The modality called ``name``, or None when the run does not select it."""
        return self._by_name.get(name)

    @property
    def anchor(self) -> Modality | None:
        """The POI view the others are compared with (text), when one is selected."""
        return self.poi[0] if self.poi and self.poi[0].anchor else None

    @property
    def device(self) -> torch.device:
        """Where the modalities' parameters and buffers live."""
        for mod in self._by_name.values():
            for t in (*mod.parameters(), *mod.buffers()):
                return t.device
        return torch.device("cpu")

    def poi_views(self, idx: Tensor) -> dict[str, PoiView]:
        """Every POI view of POIs ``idx``, anchor first; the others get the first as query."""
        views: dict[str, PoiView] = {}
        query = None
        for mod in self.poi:
            views[mod.name] = mod.poi_view(idx, query=query)
            if query is None:
                query = views[mod.name].emb
        return views

    def region_views(self, idx: Tensor) -> dict[str, Tensor]:
        """Every macro view of regions ``idx``."""
        return {m.name: m.region_view(idx) for m in self.region}
