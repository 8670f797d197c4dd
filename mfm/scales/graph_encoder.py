"""The graph encoder of Eq. 5: a GAT over many small star graphs, batched as one graph.

A *star graph* is a centre node (a POI or a region) joined to its neighbours in both
directions, each edge carrying a normalized inverse-distance weight as a 1-d edge
attribute, plus a self loop on every node. A batch of ``B`` star graphs is given in
padded form (``mask [B, 1 + K]``, column 0 the centre) and turned into one disjoint
graph, so a single ``GATConv`` call encodes the whole batch; the graph embedding
``E_G`` is the centre node's output.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MIN_EDGE_DIST = 1.0  # metres; co-located points would otherwise get an infinite weight
SELF_LOOP_WEIGHT = 1.0  # a node is as close to itself as its nearest neighbour


def inverse_distance_weights(dist: Tensor, mask: Tensor, min_dist: float = MIN_EDGE_DIST) -> Tensor:
    """Edge weights ``1 / dist`` scaled per row so the nearest neighbour gets 1.

    Args:
        dist: ``[N, K]`` distances in metres.
        mask: ``[N, K]`` bool, False on padding.
        min_dist: distances are clamped to at least this (metres).

    Returns:
        ``[N, K]`` weights in (0, 1], 0 on padding.
    """
    inv = torch.where(mask, 1.0 / dist.clamp_min(min_dist), torch.zeros_like(dist))
    top = inv.amax(dim=1, keepdim=True).clamp_min(torch.finfo(inv.dtype).tiny)
    return inv / top


@dataclass
class StarGraphs:
    """A batch of star graphs as one disjoint graph (PyG layout).

    Nodes are numbered row-major over the ``True`` entries of the padded mask, so node
    features are ``x_padded[mask]`` (or any tensor gathered in that order).
    """

    edge_index: Tensor  # [2, E] source, target
    edge_attr: Tensor  # [E, 1] normalized inverse distance (self loops: 1)
    into_centre: Tensor  # [E] bool: edges whose target is a centre (all the last layer needs)
    centre: Tensor  # [B] node index of each graph's centre
    num_nodes: int

    def to(self, device: torch.device | str) -> StarGraphs:
        """The same graphs on ``device`` (build on the CPU, move once)."""
        return StarGraphs(
            self.edge_index.to(device),
            self.edge_attr.to(device),
            self.into_centre.to(device),
            self.centre.to(device),
            self.num_nodes,
        )


def star_graphs(mask: Tensor, weight: Tensor) -> StarGraphs:
    """Build the disjoint batch graph of ``B`` star graphs.

    Args:
        mask: ``[B, 1 + K]`` bool; column 0 is the centre and must be True, columns
            1.. the (possibly dropped or padded) neighbours.
        weight: ``[B, K]`` edge weight of each neighbour to its centre.

    Returns:
        The batch graph: centre<->neighbour edges both ways plus a self loop per node.
    """
    if mask.dim() != 2 or weight.shape != (mask.shape[0], mask.shape[1] - 1):
        raise ValueError(
            f"expected mask [B, 1+K] and weight [B, K], got {mask.shape}, {weight.shape}"
        )
    if not bool(mask[:, 0].all()):
        raise ValueError("every star graph needs its centre (mask[:, 0] must be True)")
    b, k1 = mask.shape
    node_id = (torch.cumsum(mask.reshape(-1).long(), 0) - 1).reshape(b, k1)
    n = int(mask.sum())
    centre = node_id[:, 0]
    nb = mask[:, 1:]
    leaf = node_id[:, 1:][nb]
    hub = centre[:, None].expand(b, k1 - 1)[nb]
    w = weight[nb].float()
    loops = torch.arange(n, device=mask.device)
    edge_index = torch.cat(
        [torch.stack([leaf, hub]), torch.stack([hub, leaf]), torch.stack([loops, loops])], 1
    )
    edge_attr = torch.cat([w, w, torch.full((n,), SELF_LOOP_WEIGHT, device=w.device)])[:, None]
    is_centre = torch.zeros(n, dtype=torch.bool, device=mask.device)
    is_centre[centre] = True
    return StarGraphs(edge_index, edge_attr, is_centre[edge_index[1]], centre, n)


class GraphEncoder(nn.Module):
    """``E_G = GAT(G)`` (Eq. 5): stacked GATConv / GATv2Conv with a 1-d edge attribute.

    Heads are averaged (``concat=False``) so every layer keeps the width ``dim``; ELU
    between layers. Built once (in an objective's ``prepare``) and trained end to end.

    ``residual`` adds a learned linear term of each node's own input to its output (PyG's
    ``GATConv(residual=True)``). Without it the centre is one of ``1 + K`` attended nodes,
    so ``E_G`` is mostly its neighbourhood's mean and its own view is diluted ``~1/(1+K)``.
    """

    def __init__(
        self,
        dim: int,
        heads: int = 4,
        layers: int = 1,
        conv: Literal["gat", "gatv2"] = "gat",
        residual: bool = False,
    ) -> None:
        super().__init__()
        with warnings.catch_warnings():  # torch_geometric still calls torch.jit.script
            warnings.simplefilter("ignore", FutureWarning)
            from torch_geometric.nn import GATConv, GATv2Conv  # heavy import: only when built

        if layers < 1 or heads < 1:
            raise ValueError(f"layers and heads must be >= 1, got {layers}, {heads}")
        kinds = {"gat": GATConv, "gatv2": GATv2Conv}
        if conv not in kinds:
            raise ValueError(f"conv must be one of {sorted(kinds)}, got {conv!r}")
        self.convs = nn.ModuleList(
            kinds[conv](
                dim,
                dim,
                heads=heads,
                concat=False,
                edge_dim=1,
                add_self_loops=False,
                residual=residual,
            )
            for _ in range(layers)
        )

    def forward(self, x: Tensor, graphs: StarGraphs) -> Tensor:
        """Encode a batch of star graphs.

        Args:
            x: ``[num_nodes, dim]`` node features in the order of ``graphs``.
            graphs: from :func:`star_graphs`.

        Returns:
            ``[B, dim]``: the centre node's output per graph.
        """
        if x.shape[0] != graphs.num_nodes:
            raise ValueError(f"x has {x.shape[0]} rows for {graphs.num_nodes} nodes")
        h = x
        last = len(self.convs) - 1
        for i, conv in enumerate(self.convs):
            if i:
                h = F.elu(h)
            ei, ea = graphs.edge_index, graphs.edge_attr.to(h.dtype)
            if i == last:  # only the centres' outputs are read: skip the other targets
                ei, ea = ei[:, graphs.into_centre], ea[graphs.into_centre]
            h = conv(h, ei, ea)
        return h[graphs.centre]
