"""Small trainable modules shared by modalities and scales."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ContrastHead(nn.Sequential):
    """Linear -> GELU -> Linear, ``d -> d``: where an objective's InfoNCE is computed.

    SimCLR (Chen et al., 2020) found that a contrastive loss imposed on the representation
    itself makes it discard what the augmentations vary, and that a small head between the
    representation and the loss keeps more of it. Each objective contrasts through its own
    head; what a run exports is taken before it.
    """

    def __init__(self, dim: int) -> None:
        super().__init__(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))


class ProjectionHead(nn.Sequential):
    """Standardize -> Linear -> GELU -> Linear: frozen backbone features to width ``d``.

    ``inputs`` (rows of the features this head will see, e.g. the whole city's) fixes a
    per-dimension mean and std that the head subtracts and divides by before its first
    layer. Frozen image features from a random-init ResNet are nearly constant (mean
    pairwise cosine 0.98-0.995): unnormalised, every item looks the same to the head.
    The statistics are buffers, so they travel with the checkpoint.
    """

    def __init__(
        self, in_dim: int, dim: int, hidden: int | None = None, inputs: Tensor | None = None
    ) -> None:
        hidden = hidden or max(dim, min(in_dim, 2 * dim))
        super().__init__(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        mean, std = torch.zeros(in_dim), torch.ones(in_dim)
        if inputs is not None and len(inputs) > 1:
            x = inputs.detach().reshape(-1, in_dim).double()
            mean, std = x.mean(dim=0).float(), x.std(dim=0).float()
            std = torch.where(std > 1e-6 * std.max().clamp_min(1e-12), std, torch.ones_like(std))
        self.register_buffer("input_mean", mean)
        self.register_buffer("input_std", std)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward((x - self.input_mean) / self.input_std)
