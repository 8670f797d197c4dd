"""Small trainable modules shared by modalities and scales."""

from __future__ import annotations

from torch import Tensor, nn


class ProjectionHead(nn.Sequential):
    """Linear -> GELU -> Linear: frozen backbone features to the common width ``d``."""

    def __init__(self, in_dim: int, dim: int, hidden: int | None = None) -> None:
        hidden = hidden or max(dim, min(in_dim, 2 * dim))
        super().__init__(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x)
