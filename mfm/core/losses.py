"""InfoNCE, the one contrastive loss every objective uses (paper Eq. 7, 9, 16, 22, 27)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DEFAULT_TAU = 0.5


def info_nce(
    anchor: Tensor,
    positive: Tensor,
    tau: float = DEFAULT_TAU,
    exclude: Tensor | None = None,
    weight: Tensor | None = None,
) -> Tensor:
    """InfoNCE with in-batch negatives and cosine similarity.

    ``L = -1/B sum_i log exp(sim(a_i, p_i)/tau) / sum_j exp(sim(a_i, p_j)/tau)`` (Eq. 7).

    Args:
        anchor: ``[B, d]`` anchor embeddings.
        positive: ``[B, d]`` positives; row ``i`` is the positive of anchor ``i`` and
            every other row is a negative for it.
        tau: temperature (0.5 in the paper).
        exclude: optional bool ``[B, B]``: True drops ``p_j`` from anchor ``i``'s
            denominator (a false negative, e.g. an overlapping graph); the diagonal is
            always kept.
        weight: optional ``[B]`` non-negative weights of the anchors' terms (a weighted
            mean instead of the mean).

    Returns:
        The scalar mean loss.
    """
    if anchor.shape != positive.shape or anchor.dim() != 2:
        raise ValueError(f"expected two [B, d] tensors, got {anchor.shape} and {positive.shape}")
    a = F.normalize(anchor.float(), dim=-1)
    p = F.normalize(positive.float(), dim=-1)
    logits = a @ p.T / tau
    target = torch.arange(a.shape[0], device=a.device)
    if exclude is not None:
        drop = exclude.to(logits.device, torch.bool) & ~torch.eye(
            len(a), dtype=torch.bool, device=logits.device
        )
        logits = logits.masked_fill(drop, float("-inf"))
    if weight is None:
        return F.cross_entropy(logits, target)
    terms = F.cross_entropy(logits, target, reduction="none")
    w = weight.to(terms.device, terms.dtype)
    return (terms * w).sum() / w.sum().clamp_min(1e-12)


class InfoNCE(nn.Module):
    """InfoNCE as a module (Eq. 7); ``forward(anchor [B, d], positive [B, d]) -> scalar``."""

    def __init__(self, tau: float = DEFAULT_TAU) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f"tau must be positive, got {tau}")
        self.tau = tau

    def forward(self, anchor: Tensor, positive: Tensor) -> Tensor:
        return info_nce(anchor, positive, self.tau)
