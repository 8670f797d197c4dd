"""Fusion modules of the global objective: RMHA (Eq. 23) and gated fusion (Eq. 24-25).

The micro representation of a POI folds its views one by one (text, then each other
POI view in ``UrbanModel.offering`` order), each fold an RMHA followed by a gated
fusion; the macro representation of a region folds its region views with gated
fusion alone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RMHA(nn.Module):
    """Residual multi-head attention between two views of one item (Eq. 23).

    The two views form a 2-token sequence; ``layers`` (2 in the paper) multi-head
    self-attention layers run over it and one residual connection adds the input back:
    ``(a', b') = (a, b) + MHA_2(MHA_1((a, b)))``.
    """

    def __init__(self, dim: int, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.layers = nn.ModuleList(
            nn.MultiheadAttention(dim, heads, batch_first=True) for _ in range(layers)
        )

    def forward(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        """``a``, ``b``: ``[N, d]`` -> the two attended views ``[N, d]`` each."""
        x = torch.stack([a, b], 1)
        h = x
        for attn in self.layers:
            h = attn(h, h, h, need_weights=False)[0]
        out = x + h
        return out[:, 0], out[:, 1]


class GatedFusion(nn.Module):
    """``g = sigmoid(relu([a, b] W + b))``, ``E = g * a + (1 - g) * b`` (Eq. 24-25).

    The gate is per dimension (``W: 2d -> d``). As written in the paper the ReLU keeps
    ``g >= 0.5``, so the first input (the running fusion) always keeps at least half.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gate = nn.Linear(2 * dim, dim)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """``a``, ``b``: ``[N, d]`` -> ``[N, d]``."""
        g = torch.sigmoid(torch.relu(self.gate(torch.cat([a, b], -1))))
        return g * a + (1 - g) * b


class AttentiveFusion(nn.Module):
    """RMHA then gated fusion: one fold step of the micro representation (Eq. 23-25)."""

    def __init__(self, dim: int, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.rmha = RMHA(dim, heads, layers)
        self.gated = GatedFusion(dim)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """``a`` (running fusion), ``b`` (next view): ``[N, d]`` -> ``[N, d]``."""
        a2, b2 = self.rmha(a, b)
        return self.gated(a2, b2)


def fold_views(
    views: list[tuple[str, Tensor, Tensor | None]], fusers: nn.ModuleDict
) -> tuple[Tensor, Tensor]:
    """Fuse views left to right: ``E = fusers[name](E, view)`` where the view exists.

    Args:
        views: ``(name, emb [N, d], mask [N] bool or None = all present)``, in fold
            order; the first starts ``E``.
        fusers: one fusion module per name of ``views[1:]``.

    Returns:
        ``([N, d], [N] bool)``: the fused embeddings and whether an item had any view.
        Where a view is missing ``E`` is kept; where ``E`` has no view yet, the next
        present view starts it unfused.
    """
    _, out, mask = views[0]
    have = torch.ones(out.shape[0], dtype=torch.bool, device=out.device) if mask is None else mask
    for name, emb, mask in views[1:]:
        fused = torch.where(have[:, None], fusers[name](out, emb), emb)
        if mask is None:
            out, have = fused, torch.ones_like(have)
        else:
            out, have = torch.where(mask[:, None], fused, out), have | mask
    return out, have
