"""Small fake modalities for the scale tests, so they need no other plugin than osm.

Each fake offers a POI or a REGION view with a tiny trainable head (or none, for the
hand-built cases). They are defined here, not registered anywhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from mfm.core.bundle.city import City
from mfm.core.cache import FeatureCache
from mfm.core.config import RunConfig
from mfm.core.modality import Context, Modality, PoiView, View

DIM = 32


def make_ctx(city_root: Path, cache_dir: Path, dim: int = DIM) -> Context:
    """A CPU context on a city bundle with the shared feature cache."""
    city = City.load(city_root)
    return Context(
        city, RunConfig(city=city_root), FeatureCache(cache_dir), torch.device("cpu"), dim
    )


class FakePoiView(Modality):
    """A POI view of random frozen features through a Linear head; present on even POIs."""

    name = "fakepoi"
    views = frozenset({View.POI})

    def prepare(self, ctx: Context) -> None:
        n = len(ctx.city.pois)
        gen = torch.Generator().manual_seed(1)
        self.register_buffer("features", torch.randn(n, 8, generator=gen), persistent=False)
        self.register_buffer("present", torch.arange(n) % 2 == 0, persistent=False)
        self.head = nn.Linear(8, ctx.dim)

    def poi_view(self, idx: Tensor, query: Tensor | None = None) -> PoiView:
        idx = idx.to(self.features.device)
        mask = self.present[idx]
        return PoiView(self.head(self.features[idx]) * mask[:, None], mask)


class AbsentPoiView(Modality):
    """A POI view that no POI has: random embeddings, mask all False (must never be used)."""

    name = "absent"
    views = frozenset({View.POI})

    def prepare(self, ctx: Context) -> None:
        self.dim = ctx.dim

    def poi_view(self, idx: Tensor, query: Tensor | None = None) -> PoiView:
        gen = torch.Generator().manual_seed(7)
        emb = 100 * torch.randn(len(idx), self.dim, generator=gen)
        return PoiView(emb, torch.zeros(len(idx), dtype=torch.bool))


class MirrorView(Modality):
    """A POI view equal to the anchor (text) view, or the anchor of another POI in the batch.

    ``shuffle=False`` makes every node's other view identical to its text (G+ == G);
    ``shuffle=True`` gives each POI the text of a different POI (misaligned positives).
    """

    name = "mirror"
    views = frozenset({View.POI})

    def __init__(self, shuffle: bool = False) -> None:
        super().__init__()
        self.shuffle = shuffle

    def prepare(self, ctx: Context) -> None:
        """Nothing to prepare: the view is built from the query."""

    def poi_view(self, idx: Tensor, query: Tensor | None = None) -> PoiView:
        assert query is not None, "the mirror needs the anchor view as query"
        rows = torch.arange(len(idx))
        if self.shuffle:
            rows = rows.roll(1)
        return PoiView(query[rows], torch.ones(len(idx), dtype=torch.bool))


class FakeRegionView(Modality):
    """A region (macro) view of random frozen features through a Linear head."""

    name = "fakeregion"
    views = frozenset({View.REGION})
    seed = 2

    def prepare(self, ctx: Context) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        feats = torch.randn(len(ctx.city.regions), 8, generator=gen)
        self.register_buffer("features", feats, persistent=False)
        self.head = nn.Linear(8, ctx.dim)

    def region_view(self, idx: Tensor) -> Tensor:
        return self.head(self.features[idx.to(self.features.device)])


class FakeRegionView2(FakeRegionView):
    """A second region view (to exercise the macro gated fusion)."""

    name = "fakeregion2"
    seed = 3


class PoiMeanRegionView(Modality):
    """A region view equal to the mean text view of a region's POIs (the micro view).

    ``perm`` maps each region to the region whose POI mean it returns: identity makes
    macro == micro (G+ == G), a derangement misaligns them.
    """

    name = "poimean"
    views = frozenset({View.REGION})

    def __init__(self, text: Modality, perm: Tensor | None = None) -> None:
        super().__init__()
        self._text = [text]  # a list, so the text modality is not registered twice
        self.perm = perm

    def prepare(self, ctx: Context) -> None:
        region = torch.as_tensor(np.array(ctx.city.poi_region()))
        self.region = region
        self.n_regions = len(ctx.city.regions)

    def region_view(self, idx: Tensor) -> Tensor:
        text = self._text[0]
        emb = text.poi_view(torch.arange(len(self.region))).emb
        sums = torch.zeros(self.n_regions, emb.shape[1]).index_add(0, self.region, emb)
        counts = torch.bincount(self.region, minlength=self.n_regions).clamp_min(1)
        means = sums / counts[:, None]
        rows = idx.cpu() if self.perm is None else self.perm[idx.cpu()]
        return means[rows]


def fresh_text(ctx, text):
    """A new text view sharing ``text``'s frozen features, with a freshly seeded head."""
    from mfm.plugins.osm.modality import OsmText

    torch.manual_seed(0)
    fresh = OsmText()
    fresh.register_buffer("features", text.features, persistent=False)
    fresh.head = type(text.head)(text.features.shape[1], ctx.dim)
    return fresh
