"""L_global (paper IV-B4, Eq. 23-27): global spatial graphs, macro vs. micro contrast.

Each region is the centre of a star graph joined to its adjacent regions (touching
polygons, nearest ``max_neighbours`` by centroid distance), edges weighted by inverse
centroid distance. A node carries the region's *macro* representation (the region views:
satellite, trajectories, fused by gated fusion) or its *micro* one: the mean over the
region's POIs (at most ``max_pois_per_region`` sampled per step) of the POI views folded
by RMHA + gated fusion (Eq. 23-26), plus a learned code of the region's size: its POI
count, area and POI density (a mean forgets them; they are the first-order signal of
population). Both graphs go
through the same GAT and InfoNCE aligns their centres (Eq. 27).

Which nodes carry which view (three variants; the run plan says which runs and why):

- ``macro/micro`` (the paper; macro and POI views present): in ``G+`` the centre carries
  its micro view; every neighbour carries micro in ``G`` with probability ``swap_prob``
  and then macro in ``G+``, or macro in ``G`` and micro in ``G+``. The paper swaps
  neighbours in ``G+`` only, so about half the neighbours were identical in both graphs
  and the pair matched without any macro/micro alignment; here no node with both views
  is the same in the two graphs, so matching needs the alignment.
- ``micro/micro`` (POI views, no macro view): both graphs carry micro views built from
  two independent random subsets of each region's POIs (``subsample`` of them) and drop
  neighbours with ``drop_prob``: positives keep a region's identity, the GAT learns its
  neighbourhood.
- ``macro/macro`` (macro views, no POI view): both graphs carry macro views with
  independent neighbour dropout and feature dropout (``feature_drop``).

The exported region embedding is ``E_G`` of the macro graph (when there is a macro view)
and of the micro graph over all POIs (when there is a POI view), side by side.

This module is also the plugin that registers the objective (always on; skipped when
there is no regions layer or no view at all).
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
from mfm.core.export import standardized
from mfm.core.graphs import Neighbours, group_members, polygon_adjacency
from mfm.core.hookspecs import hookimpl
from mfm.core.losses import DEFAULT_TAU
from mfm.core.modality import Context, Options
from mfm.core.objective import Objective
from mfm.core.scales import Scale
from mfm.scales.augment import feature_dropout
from mfm.scales.fusion import AttentiveFusion, GatedFusion, fold_views
from mfm.scales.graph_encoder import GraphEncoder, inverse_distance_weights, star_graphs


class GlobalOptions(Options):
    """Options of ``[objective.global]``."""

    max_neighbours: int = Field(12, ge=1, description="adjacent regions kept (nearest first)")
    adjacency_tolerance: float = Field(1.0, ge=0, description="metres; gap still 'adjacent'")
    max_pois_per_region: int = Field(32, ge=1, description="POIs sampled per region per step")
    swap_prob: float = Field(0.5, ge=0, le=1, description="neighbours micro in G (macro in G+)")
    swap_centre: bool = Field(True, description="centre macro in G and micro in G+")
    subsample: float = Field(0.5, gt=0, le=1, description="POI share per view (micro/micro)")
    drop_prob: float = Field(0.1, ge=0, lt=1, description="neighbour drop rate (one-view runs)")
    feature_drop: float = Field(0.2, ge=0, lt=1, description="feature dropout (macro/macro)")
    exclude_neighbours: bool = Field(
        False, description="adjacent regions are not negatives (their graphs share nodes)"
    )
    tau: float = Field(DEFAULT_TAU, gt=0)
    heads: int = Field(2, ge=1, description="GAT attention heads")
    layers: int = Field(1, ge=1, description="GAT layers")
    conv: Literal["gat", "gatv2"] = "gat"
    residual: bool = Field(True, description="GAT skip term: E_G keeps the region's own view")
    rmha_heads: int = Field(4, ge=1, description="RMHA heads; must divide dim")
    rmha_layers: int = Field(2, ge=1, description="attention layers in RMHA (2 in the paper)")
    chunk: int = Field(2048, ge=1, description="regions per chunk when exporting embeddings")


def _adjacency(ctx: Context, max_neighbours: int, tolerance: float) -> Neighbours:
    """Adjacent regions of every region, nearest (centroid distance) first, capped."""
    city = ctx.city
    geoms = city.regions.geometry.to_crs(city.crs).to_numpy()
    n = len(geoms)
    pairs = polygon_adjacency(geoms, tolerance)
    xy = city.xy("regions")
    dist = np.linalg.norm(xy[pairs[:, 0]] - xy[pairs[:, 1]], axis=1)
    order = np.lexsort((dist, pairs[:, 0]))
    pairs, dist = pairs[order], dist[order]
    start = np.concatenate([[0], np.cumsum(np.bincount(pairs[:, 0], minlength=n))])
    keep = np.arange(len(pairs)) - start[pairs[:, 0]] < max_neighbours
    pairs, dist = pairs[keep], dist[keep]
    ptr = np.concatenate([[0], np.cumsum(np.bincount(pairs[:, 0], minlength=n))]).astype(np.int64)
    return Neighbours(ptr, pairs[:, 1].astype(np.int64), dist)


def _segments(count: Tensor) -> tuple[Tensor, Tensor]:
    """For CSR rows of ``count`` items: (row of each item, offset of each item in its row)."""
    seg = torch.repeat_interleave(torch.arange(len(count)), count)
    first = torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
    return seg, torch.arange(int(count.sum())) - first


class GlobalObjective(Objective):
    """Items are regions; a batch contrasts each region's star graph with its swapped twin."""

    name = "global"
    scale = Scale.GLOBAL
    Options = GlobalOptions
    options: GlobalOptions

    @property
    def variant(self) -> str:
        """``macro/micro``, ``micro/micro`` or ``macro/macro``: which views the graphs carry."""
        macro, micro = bool(self.views.region), bool(self.views.poi)
        return "macro/micro" if macro and micro else "micro/micro" if micro else "macro/macro"

    def skip_reason(self, city: City) -> str | None:
        if not city.has("regions"):
            return "needs a regions layer in the city: add layers.regions to city.toml"
        if not (self.views.region or self.views.poi):
            return "needs a POI view (osm, polygon, svi) or a macro view (sat, trajectory)"
        return None

    def plan_note(self, city: City) -> str:
        why = {
            "macro/micro": "macro and POI views",
            "micro/micro": "no macro view: POI subsets of a region are positives",
            "macro/macro": "no POI view: dropout copies of a region are positives",
        }
        return f"{self.variant} ({why[self.variant]})"

    def prepare(self, ctx: Context) -> None:
        opts = self.options
        if ctx.dim % opts.rmha_heads:
            raise MfmError(
                f"[objective.global] rmha_heads={opts.rmha_heads} does not divide dim={ctx.dim}; "
                "set rmha_heads to a divisor of dim"
            )
        n = len(ctx.city.regions)
        adj = _adjacency(ctx, opts.max_neighbours, opts.adjacency_tolerance)
        k = max(1, int(adj.counts().max(initial=0)))
        idx, dist, mask = adj.padded(np.arange(n), k)
        self.nbr, self.nbr_weight = idx, inverse_distance_weights(dist, mask)
        ptr, members = group_members(ctx.city.poi_region(), n)
        self.ptr, self.members = torch.as_tensor(ptr), torch.as_tensor(members)
        self.counts = self.ptr[1:] - self.ptr[:-1]
        # a node exists where it has a view: every region for macro views, else its POIs
        self.present = torch.ones(n, dtype=torch.bool) if self.views.region else self.counts > 0
        self.nbr_mask = mask & self.present[idx]
        items = self.counts > 0 if self.views.poi else self.present
        self.items = torch.nonzero(items).flatten()
        if len(self.items) < 2:
            raise MfmError(
                f"L_global: only {len(self.items)} region(s) have a view; it needs 2 or more "
                "(use finer regions or drop the global scale with --scales)"
            )
        # the region's size (City.region_size), z-scored over the city's regions
        self.size_inputs = torch.as_tensor(standardized(ctx.city.region_size()))
        self.gat = GraphEncoder(ctx.dim, opts.heads, opts.layers, opts.conv, opts.residual)
        self.size = nn.Linear(self.size_inputs.shape[1], ctx.dim)
        self.poi_fusion = nn.ModuleDict(
            {
                m.name: AttentiveFusion(ctx.dim, opts.rmha_heads, opts.rmha_layers)
                for m in self.views.poi[1:]
            }
        )
        self.macro_fusion = nn.ModuleDict(
            {m.name: GatedFusion(ctx.dim) for m in self.views.region[1:]}
        )

    def num_items(self) -> int:
        return len(self.items)

    # -- representations -----------------------------------------------------------------
    def macro(self, regions: Tensor) -> Tensor:
        """``E_macro`` ``[R, d]`` of regions (CPU or device index): the region views fused."""
        views = self.views.region_views(regions.to(self.views.device))
        return fold_views([(n, v, None) for n, v in views.items()], self.macro_fusion)[0]

    def poi_fused(self, pois: Tensor) -> tuple[Tensor, Tensor]:
        """Per POI ``E_j`` (Eq. 23-25), folding the POI views in offering order.

        Returns:
            ``([P, d], [P] bool)``: the fused embedding and whether the POI had any view.
        """
        views = self.views.poi_views(pois.to(self.views.device))
        return fold_views([(n, v.emb, v.mask) for n, v in views.items()], self.poi_fusion)

    def micro(
        self, regions: Tensor, rng: torch.Generator | None = None, share: float = 1.0
    ) -> Tensor:
        """``E_micro`` ``[R, d]`` (Eq. 26): the mean of ``E_j`` over a random ``share`` of the
        region's POIs (at most ``max_pois_per_region``; all of them when ``rng`` is None),
        plus the code of the region's size (POI count, area, POI density)."""
        regions = regions.cpu()
        count = self.counts[regions]
        seg, offset = _segments(count)
        members = self.members[self.ptr[regions][seg] + offset]
        if rng is not None:  # sample without replacement: random order, keep the first M
            order = torch.argsort(
                seg.double() + torch.rand(len(seg), generator=rng, dtype=torch.float64)
            )
            take = torch.ceil(count * share).long().clamp(1, self.options.max_pois_per_region)
            keep = offset < take[seg]  # offsets of the (still contiguous) rows
            seg, members = seg[keep], members[order][keep]
        emb, have = self.poi_fused(members)
        seg_d = seg.to(emb.device)
        w = have.to(emb.dtype)[:, None]
        total = torch.zeros(len(regions), emb.shape[1], device=emb.device, dtype=emb.dtype)
        total = total.index_add(0, seg_d, emb * w)
        n = torch.zeros(len(regions), 1, device=emb.device, dtype=emb.dtype).index_add(0, seg_d, w)
        size = self.size(self.size_inputs[regions].to(emb.device, emb.dtype))
        return total / n.clamp_min(1) + size

    # -- graphs --------------------------------------------------------------------------
    def _graph_nodes(self, regions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Padded nodes ``[B, 1+K]`` (centre first), their mask and the edge weights ``[B, K]``."""
        regions = regions.cpu().long()
        nodes = torch.cat([regions[:, None], self.nbr[regions]], 1)
        mask = torch.cat([torch.ones(len(regions), 1, dtype=torch.bool), self.nbr_mask[regions]], 1)
        return nodes, mask, self.nbr_weight[regions]

    def _node_views(
        self, nodes: Tensor, micro_at: Tensor, rng: torch.Generator | None, share: float = 1.0
    ) -> Tensor:
        """Node features ``[n, d]`` of ``nodes`` ``[n]``: micro where ``micro_at``, else macro."""
        out = None
        if bool((~micro_at).any()):
            uniq, inv = torch.unique(nodes[~micro_at], return_inverse=True)
            macro = self.macro(uniq)[inv.to(self.views.device)]
            out = macro.new_zeros(len(nodes), macro.shape[1])
            out[(~micro_at).to(out.device)] = macro
        if bool(micro_at.any()):
            uniq, inv = torch.unique(nodes[micro_at], return_inverse=True)
            micro = self.micro(uniq, rng, share)[inv.to(self.views.device)]
            if out is None:
                out = micro.new_zeros(len(nodes), micro.shape[1])
            out[micro_at.to(out.device)] = micro.to(out.dtype)
        assert out is not None
        return out

    def loss(self, idx: Tensor, rng: torch.Generator) -> Tensor:
        opts = self.options
        nodes, mask, weight = self._graph_nodes(self.items[idx.cpu()])
        device = self.views.device
        g = star_graphs(mask, weight)
        flat = nodes[mask]
        if self.variant == "macro/micro":
            micro_g = torch.rand(mask.shape, generator=rng) < opts.swap_prob
            if opts.swap_centre:
                micro_g[:, 0] = False
            has_micro = self.counts[nodes] > 0
            micro_pos = (~micro_g & has_micro)[mask]  # the other view, where there is one
            micro_g = (micro_g & has_micro)[mask]
            x_g = self._node_views(flat, micro_g, rng)
            x_pos = self._node_views(flat, micro_pos, rng)
            g_pos = g
        else:
            keep_g = torch.rand(mask.shape, generator=rng) >= opts.drop_prob
            keep_pos = torch.rand(mask.shape, generator=rng) >= opts.drop_prob
            keep_g[:, 0] = keep_pos[:, 0] = True  # never drop the centre
            micro = torch.full((len(flat),), self.variant == "micro/micro")
            x_g = self._node_views(flat, micro, rng, opts.subsample)[keep_g[mask].to(device)]
            x_pos = self._node_views(flat, micro, rng, opts.subsample)[keep_pos[mask].to(device)]
            if self.variant == "macro/macro":
                x_g = feature_dropout(x_g, opts.feature_drop, rng)
                x_pos = feature_dropout(x_pos, opts.feature_drop, rng)
            g, g_pos = star_graphs(mask & keep_g, weight), star_graphs(mask & keep_pos, weight)
        exclude = self._adjacent(self.items[idx.cpu()]) if opts.exclude_neighbours else None
        e_g, e_pos = self.gat(x_g, g.to(device)), self.gat(x_pos, g_pos.to(device))
        return self.contrast(e_g, e_pos, exclude)

    def candidates(self, batch: int) -> int:
        """The batch less the anchor's expected neighbours in it (they are not negatives)."""
        if not self.options.exclude_neighbours or self.num_items() < 2:
            return batch
        degree = float(self.nbr_mask[self.items].sum(1).double().mean())
        expected = degree * (batch - 1) / (self.num_items() - 1)
        return max(2, round(batch - expected))

    def _adjacent(self, regions: Tensor) -> Tensor:
        """Bool ``[B, B]``: region ``j`` of the batch is a neighbour of region ``i``."""
        nbr = torch.where(self.nbr_mask[regions], self.nbr[regions], -1)  # [B, K]
        return (nbr[:, :, None] == regions[None, None, :]).any(1)

    def trainable(self) -> list[nn.Module]:
        mods: list[nn.Module] = [self.gat, self.size]
        mods += [f for f in (self.poi_fusion, self.macro_fusion) if len(f)]
        mods += [*self.views.region, *(m for m in self.views.poi if m not in self.views.region)]
        return mods

    @torch.no_grad()
    def region_embeddings(self) -> Tensor:
        """``E_G`` of every region's macro graph and of its micro graph (all POIs), side by
        side, each block with unit rows (zero for a region without that view), on CPU."""
        opts = self.options
        n = len(self.nbr)
        blocks = []
        kinds = [k for k, v in (("macro", self.views.region), ("micro", self.views.poi)) if v]
        for kind in kinds:
            feats = []
            for i in range(0, n, opts.chunk):
                regions = torch.arange(i, min(n, i + opts.chunk))
                if kind == "macro":
                    feats.append(self.macro(regions))
                    continue
                x = self.micro(regions)  # zero mean + size code where a region has no POI
                feats.append(torch.where((self.counts[regions] > 0)[:, None].to(x.device), x, 0))
            x_all = torch.cat(feats)
            out = []
            for start in range(0, n, opts.chunk):
                regions = torch.arange(start, min(n, start + opts.chunk))
                nodes, mask, weight = self._graph_nodes(regions)
                if kind == "micro":  # regions without POIs have no micro node
                    mask = mask & (self.counts[nodes] > 0)
                    mask[:, 0] = True
                x = x_all[nodes[mask].to(x_all.device)]
                out.append(self.gat(x, star_graphs(mask, weight).to(x.device)).float().cpu())
            e = torch.cat(out)
            if kind == "micro":
                e[self.counts == 0] = 0.0
            blocks.append(torch.nn.functional.normalize(e, dim=1))
        return torch.cat(blocks, dim=1)


@hookimpl
def register_objectives(register: Callable[[type[Objective]], None]) -> None:
    """Register the objective (the hook of :mod:`mfm.core.hookspecs`)."""
    register(GlobalObjective)
