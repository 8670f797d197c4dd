"""Augmentations of the scale objectives' graphs, driven by the step's ``rng``."""

from __future__ import annotations

import torch
from torch import Tensor


def feature_dropout(x: Tensor, p: float, rng: torch.Generator) -> Tensor:
    """Inverted dropout of ``x``'s entries with rate ``p``, the mask drawn from ``rng``
    (not the global RNG, so that a resumed run draws the same masks)."""
    if p <= 0:
        return x
    keep = (torch.rand(x.shape, generator=rng) >= p).to(x.device, x.dtype)
    return x * keep / (1 - p)
