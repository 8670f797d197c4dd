"""L_global (paper IV-B4, Eq. 23-27): global spatial graphs, macro vs. micro contrast.

Each region is the centre of a star graph joined to its adjacent regions (touching
polygons, nearest ``max_neighbours`` by centroid distance), edges weighted by inverse
centroid distance. In ``G`` every node carries the region's *macro* representation
(the region views: satellite, trajectories, fused by gated fusion). In the positive
``G+`` the centre, and each neighbour with probability ``swap_prob``, carries the
*micro* representation instead: the mean over the region's POIs (at most
``max_pois_per_region`` sampled per step) of the POI views folded by RMHA + gated
fusion (Eq. 23-26). Both go through the same GAT and InfoNCE aligns them (Eq. 27).

This module is also the plugin that registers the objective (always on; skipped when
there is no region view, no POI view or no regions layer).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from mfm.core.errors import MfmError
from mfm.core.graphs import Neighbours, group_members, polygon_adjacency
from mfm.core.hookspecs import hookimpl
from mfm.core.losses import DEFAULT_TAU, info_nce
from mfm.core.modality import Context, Modality, Objective, Options, View
from mfm.core.model import UrbanModel
from mfm.core.scales import Scale
from mfm.scales.fusion import AttentiveFusion, GatedFusion, fold_views
from mfm.scales.graph_encoder import GraphEncoder, inverse_distance_weights, star_graphs


class GlobalOptions(Options):
    """Options of ``[objective.global]``."""

    max_neighbours: int = Field(12, ge=1, description="adjacent regions kept (nearest first)")
    adjacency_tolerance: float = Field(1.0, ge=0, description="metres; gap still 'adjacent'")
    max_pois_per_region: int = Field(32, ge=1, description="POIs sampled per region per step")
    swap_prob: float = Field(0.5, ge=0, le=1, description="neighbour macro->micro rate in G+")
    swap_centre: bool = Field(True, description="always give the centre its micro view in G+")
    tau: float = Field(DEFAULT_TAU, gt=0)
    heads: int = Field(2, ge=1, description="GAT attention heads")
    layers: int = Field(1, ge=1, description="GAT layers")
    conv: Literal["gat", "gatv2"] = "gat"
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
    """Items are regions holding POIs; a batch contrasts macro graphs with swapped ones."""

    name = "global"
    scale = Scale.GLOBAL
    Options = GlobalOptions

    def skip_reason(self, model: UrbanModel, ctx: Context) -> str | None:
        if not ctx.city.has("regions"):
            return "needs a regions layer in the city: add layers.regions to city.toml"
        if not model.offering(View.REGION):
            return "needs a macro view: add sat or trajectory"
        if not model.offering(View.POI):
            return "needs a POI view for the micro representation: add osm"
        return None

    def prepare(self, model: UrbanModel, ctx: Context) -> None:
        opts: GlobalOptions = self.options  # type: ignore[assignment]
        if ctx.dim % opts.rmha_heads:
            raise MfmError(
                f"[objective.global] rmha_heads={opts.rmha_heads} does not divide dim={ctx.dim}; "
                "set rmha_heads to a divisor of dim"
            )
        n = len(ctx.city.regions)
        adj = _adjacency(ctx, opts.max_neighbours, opts.adjacency_tolerance)
        k = max(1, int(adj.counts().max(initial=0)))
        idx, dist, mask = adj.padded(np.arange(n), k)
        self.nbr, self.nbr_mask = idx, mask  # CPU: graph structure, indexed with CPU batches
        self.nbr_weight = inverse_distance_weights(dist, mask)
        ptr, members = group_members(ctx.city.poi_region(), n)
        self.ptr, self.members = torch.as_tensor(ptr), torch.as_tensor(members)
        self.counts = self.ptr[1:] - self.ptr[:-1]
        self.items = torch.nonzero(self.counts > 0).flatten()
        if len(self.items) < 2:
            raise MfmError(
                f"L_global: only {len(self.items)} region(s) hold POIs; it needs 2 or more "
                "(use finer regions or drop the global scale with --scales)"
            )
        poi_names = [m.name for m in model.offering(View.POI)]
        region_names = [m.name for m in model.offering(View.REGION)]
        self.gat = GraphEncoder(ctx.dim, opts.heads, opts.layers, opts.conv)
        self.poi_fusion = nn.ModuleDict(
            {
                name: AttentiveFusion(ctx.dim, opts.rmha_heads, opts.rmha_layers)
                for name in poi_names[1:]
            }
        )
        self.macro_fusion = nn.ModuleDict({name: GatedFusion(ctx.dim) for name in region_names[1:]})

    def num_items(self) -> int:
        return len(self.items)

    # -- representations -----------------------------------------------------------------
    def macro(self, model: UrbanModel, regions: Tensor) -> Tensor:
        """``E_macro`` ``[R, d]`` of regions (CPU or device index): the region views fused."""
        views = model.region_views(regions.to(model.device))
        return fold_views([(n, v, None) for n, v in views.items()], self.macro_fusion)[0]

    def poi_fused(self, model: UrbanModel, pois: Tensor) -> tuple[Tensor, Tensor]:
        """Per POI ``E_j`` (Eq. 23-25), folding the POI views in offering order.

        Returns:
            ``([P, d], [P] bool)``: the fused embedding and whether the POI had any view.
        """
        views = model.poi_views(pois.to(model.device))
        return fold_views([(n, v.emb, v.mask) for n, v in views.items()], self.poi_fusion)

    def micro(self, model: UrbanModel, regions: Tensor, rng: torch.Generator) -> Tensor:
        """``E_micro`` ``[R, d]`` (Eq. 26): mean of ``E_j`` over <= max_pois_per_region POIs."""
        opts: GlobalOptions = self.options  # type: ignore[assignment]
        regions = regions.cpu()
        count = self.counts[regions]
        seg, offset = _segments(count)
        members = self.members[self.ptr[regions][seg] + offset]
        # sample without replacement: random order inside each region, keep the first M
        order = torch.argsort(
            seg.double() + torch.rand(len(seg), generator=rng, dtype=torch.float64)
        )
        keep = offset < opts.max_pois_per_region  # offsets of the (still contiguous) rows
        seg, members = seg[keep], members[order][keep]
        emb, have = self.poi_fused(model, members)
        seg_d = seg.to(emb.device)
        w = have.to(emb.dtype)[:, None]
        total = torch.zeros(len(regions), emb.shape[1], device=emb.device, dtype=emb.dtype)
        total = total.index_add(0, seg_d, emb * w)
        n = torch.zeros(len(regions), 1, device=emb.device, dtype=emb.dtype).index_add(0, seg_d, w)
        return total / n.clamp_min(1)

    # -- graphs --------------------------------------------------------------------------
    def _graph_nodes(self, regions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Padded nodes ``[B, 1+K]`` (centre first), their mask and the edge weights ``[B, K]``."""
        regions = regions.cpu().long()
        nodes = torch.cat([regions[:, None], self.nbr[regions]], 1)
        mask = torch.cat([torch.ones(len(regions), 1, dtype=torch.bool), self.nbr_mask[regions]], 1)
        return nodes, mask, self.nbr_weight[regions]

    def loss(self, model: UrbanModel, idx: Tensor, rng: torch.Generator) -> Tensor:
        opts: GlobalOptions = self.options  # type: ignore[assignment]
        nodes, mask, weight = self._graph_nodes(self.items[idx.cpu()])
        swap = torch.rand(mask.shape, generator=rng) < opts.swap_prob
        if opts.swap_centre:
            swap[:, 0] = True
        swap &= mask & (self.counts[nodes] > 0)  # a region without POIs has no micro view
        device = model.device
        uniq, inv = torch.unique(nodes[mask], return_inverse=True)
        x_g = self.macro(model, uniq)[inv.to(device)]
        x_pos = x_g
        if bool(swap.any()):
            swapped, slot = torch.unique(nodes[swap], return_inverse=True)
            micro = self.micro(model, swapped, rng)[slot.to(device)]
            at = torch.nonzero(swap[mask]).flatten().to(device)
            x_pos = x_g.index_put((at,), micro.to(x_g.dtype))
        g = star_graphs(mask, weight).to(device)
        return info_nce(self.gat(x_g, g), self.gat(x_pos, g), opts.tau)

    def trainable(self, model: UrbanModel) -> list[nn.Module]:
        mods: list[nn.Module] = [self.gat]
        mods += [f for f in (self.poi_fusion, self.macro_fusion) if len(f)]
        seen: set[int] = set()
        views: list[Modality] = [*model.offering(View.REGION), *model.offering(View.POI)]
        for m in views:
            if id(m) not in seen:
                seen.add(id(m))
                mods.append(m)
        return mods

    @torch.no_grad()
    def region_embeddings(self, model: UrbanModel) -> Tensor:
        """``E_G`` of every region's macro graph (the exported region embedding), on CPU."""
        opts: GlobalOptions = self.options  # type: ignore[assignment]
        n = len(self.nbr)
        macro = torch.cat(
            [
                self.macro(model, torch.arange(i, min(n, i + opts.chunk)))
                for i in range(0, n, opts.chunk)
            ]
        )
        out = []
        for start in range(0, n, opts.chunk):
            nodes, mask, weight = self._graph_nodes(torch.arange(start, min(n, start + opts.chunk)))
            x = macro[nodes[mask].to(macro.device)]
            out.append(self.gat(x, star_graphs(mask, weight).to(macro.device)).float().cpu())
        return torch.cat(out)


@hookimpl
def register_objectives(register: Callable[[type[Objective]], None]) -> None:
    """Register the objective (the hook of :mod:`mfm.core.hookspecs`)."""
    register(GlobalObjective)
