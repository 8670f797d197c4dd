"""L_local (paper IV-B2, Eq. 15-16): local spatial graphs and the triplet inter-modal contrast.

Each POI is the centre of a star graph joined to its neighbours within ``max_dist``
(nearest ``max_neighbours``), edges weighted by inverse distance. ``G`` carries every
node's anchor (text) view; the positive ``G+`` replaces each node's text by one of that
POI's other available views (polygon, street view, any third-party POI view), picked
at random, and drops neighbour nodes with probability ``drop_prob``. Both go through
the same GAT (Eq. 5) and InfoNCE pulls ``E_G`` and ``E_G+`` together (Eq. 16).

With text as the only POI view (a bundle without footprints or street view) there is
nothing to swap in; rather than skip the scale, both graphs then carry the text views
through independent feature dropout (``feature_drop``, as SimCSE does for sentences)
and ``G+`` drops neighbours as above, so the GAT still learns each POI's neighbourhood.
The run plan names the variant.

This module is also the plugin that registers the objective (always on; skipped when
the POI views are missing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from mfm.core.bundle.city import City
from mfm.core.errors import MfmError
from mfm.core.graphs import radius_neighbours
from mfm.core.hookspecs import hookimpl
from mfm.core.losses import DEFAULT_TAU
from mfm.core.modality import Context, Modality, Options
from mfm.core.objective import Objective
from mfm.core.scales import Scale
from mfm.scales.augment import feature_dropout
from mfm.scales.graph_encoder import GraphEncoder, inverse_distance_weights, star_graphs


class LocalOptions(Options):
    """Options of ``[objective.local]``."""

    max_dist: float = Field(1000.0, gt=0, description="neighbour radius in metres (Eq. 15)")
    max_neighbours: int = Field(8, ge=1, description="nearest neighbours kept per POI")
    drop_prob: float = Field(0.1, ge=0, lt=1, description="neighbour drop rate in G+")
    feature_drop: float = Field(0.2, ge=0, lt=1, description="text-only runs: feature dropout")
    tau: float = Field(DEFAULT_TAU, gt=0)
    heads: int = Field(2, ge=1, description="GAT attention heads")
    layers: int = Field(1, ge=1, description="GAT layers")
    conv: Literal["gat", "gatv2"] = "gat"
    chunk: int = Field(2048, ge=1, description="POIs per chunk when exporting embeddings")


class LocalObjective(Objective):
    """Items are POIs; a batch contrasts their text graphs with their multi-view graphs."""

    name = "local"
    scale = Scale.LOCAL
    Options = LocalOptions
    options: LocalOptions

    def skip_reason(self, city: City) -> str | None:
        anchor = self.views.anchor
        if anchor is None:
            return "needs the POI text view to anchor the graphs: add osm"
        return None

    def plan_note(self, city: City) -> str:
        if len(self.views.poi) < 2:
            return "text/text (text is the only POI view: dropout copies are positives)"
        return "text/multi-view"

    def prepare(self, ctx: Context) -> None:
        opts = self.options
        xy = ctx.city.xy("pois")
        nb = radius_neighbours(xy, xy, opts.max_dist, opts.max_neighbours, exclude_self=True)
        k = max(1, int(nb.counts().max(initial=0)))
        idx, dist, mask = nb.padded(np.arange(len(xy)), k)
        # Graph structure stays on the CPU (where batch indices and rng live); only the
        # node indices of a batch travel to the features' device.
        self.nbr, self.nbr_mask = idx, mask
        self.nbr_weight = inverse_distance_weights(dist, mask)
        self.gat = GraphEncoder(ctx.dim, opts.heads, opts.layers, opts.conv)

    def num_items(self) -> int:
        return len(self.nbr)

    # -- graphs --------------------------------------------------------------------------
    def _graph_nodes(self, idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Padded nodes ``[B, 1+K]`` (centre first), their mask and the edge weights ``[B, K]``."""
        idx = idx.cpu().long()
        nodes = torch.cat([idx[:, None], self.nbr[idx]], 1)
        mask = torch.cat([torch.ones(len(idx), 1, dtype=torch.bool), self.nbr_mask[idx]], 1)
        return nodes, mask, self.nbr_weight[idx]

    def loss(self, idx: Tensor, rng: torch.Generator) -> Tensor:
        opts = self.options
        nodes, mask, weight = self._graph_nodes(idx)
        keep = torch.rand(mask.shape, generator=rng) >= opts.drop_prob
        keep[:, 0] = True  # never drop the centre
        uniq, inv = torch.unique(nodes[mask], return_inverse=True)
        device = self.views.device
        views = self.views.poi_views(uniq.to(device))
        anchor = self._anchor()
        text = views[anchor.name].emb
        others = [v for name, v in views.items() if name != anchor.name]
        inv_d = inv.to(device)
        g = star_graphs(mask, weight).to(device)
        g_pos = star_graphs(mask & keep, weight).to(device)
        if not others:  # text/text: two dropout copies of the text graph
            x_g = feature_dropout(text[inv_d], self.options.feature_drop, rng)
            x_pos = feature_dropout(text[inv_d], self.options.feature_drop, rng)[
                keep[mask].to(device)
            ]
            return self.contrast(self.gat(x_g, g), self.gat(x_pos, g_pos))

        # G+: per node (not per POI: a POI in two graphs may pick differently), one of
        # that POI's other available views, uniformly; text where it has none.
        avail = torch.stack([v.mask for v in others], 1)[inv_d]  # [n_nodes, V]
        score = torch.rand(avail.shape, generator=rng).to(device).masked_fill(~avail, -1.0)
        stacked = torch.stack([v.emb for v in others], 1)  # [U, V, d]
        pos = stacked[inv_d, score.argmax(1)]
        x_pos = torch.where(avail.any(1, keepdim=True), pos, text[inv_d])

        x_pos = x_pos[keep[mask].to(device)]
        e_g = self.gat(text[inv_d], g)
        e_pos = self.gat(x_pos, g_pos)
        return self.contrast(e_g, e_pos)

    def _anchor(self) -> Modality:
        anchor = self.views.anchor
        if anchor is None:
            raise MfmError("L_local runs only with a POI text view (see skip_reason)")
        return anchor

    def trainable(self) -> list[nn.Module]:
        return [self.gat, *self.views.poi]

    @torch.no_grad()
    def poi_embeddings(self) -> Tensor:
        """``E_G`` of every POI's text graph (the exported POI embedding), ``[N, d]`` on CPU."""
        opts = self.options
        anchor = self._anchor()
        device = self.views.device
        n = self.num_items()
        chunks = [torch.arange(i, min(n, i + opts.chunk)) for i in range(0, n, opts.chunk)]
        text = torch.cat([anchor.poi_view(c.to(device)).emb for c in chunks])
        out = []
        for idx in chunks:
            nodes, mask, weight = self._graph_nodes(idx)
            g = star_graphs(mask, weight).to(device)
            out.append(self.gat(text[nodes[mask].to(device)], g).float().cpu())
        return torch.cat(out)


@hookimpl
def register_objectives(register: Callable[[type[Objective]], None]) -> None:
    """Register the objective (the hook of :mod:`mfm.core.hookspecs`)."""
    register(LocalObjective)
