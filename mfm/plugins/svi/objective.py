"""L_svi (Eq. 9): two directions of one street-view group, with its scene, are a positive pair.

For a batch of groups, each group ``i`` picks directions ``alpha != beta`` at random; the
anchor is ``[E_alpha^i, E_scene^i]`` and the positive ``[E_beta^i, E_scene^i]``
(concatenation, as the paper's ``[., .]``). Eq. 9's denominator sums over every direction
``gamma`` of every group ``j`` in the batch, so the logits are taken against all ``4B``
views ``[E_gamma^j, E_scene^j]`` (the anchor's own view excluded: its similarity to itself
is always 1 and carries no signal). The group's two remaining directions stay in the
denominator, as in Eq. 9.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from mfm.core.errors import MfmError
from mfm.core.losses import DEFAULT_TAU
from mfm.core.modality import Context, Options
from mfm.core.objective import Objective
from mfm.core.scales import Scale
from mfm.plugins.svi.modality import N_DIRECTIONS, SviModality


def info_nce_multi(
    anchor: Tensor,
    candidates: Tensor,
    positive: Tensor,
    mask: Tensor | None = None,
    tau: float = DEFAULT_TAU,
) -> Tensor:
    """InfoNCE over an explicit candidate set with cosine similarity (Eq. 9).

    ``L = -1/B sum_i log exp(sim(a_i, c_{i,p_i})/tau) / sum_{k: mask_ik} exp(sim(a_i, c_ik)/tau)``

    Args:
        anchor: ``[B, d]`` anchors.
        candidates: ``[M, d]`` shared by every anchor, or ``[B, K, d]`` per anchor.
        positive: int64 ``[B]``: the column of each anchor's positive among its candidates.
        mask: bool ``[B, M]`` / ``[B, K]``: False drops a candidate from the denominator.
            The positive must stay in.
        tau: temperature (0.5 in the paper).

    Returns:
        The scalar mean loss.
    """
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    a = F.normalize(anchor.float(), dim=-1)
    c = F.normalize(candidates.float(), dim=-1)
    if c.dim() == 2:
        logits = a @ c.T
    elif c.dim() == 3 and c.shape[0] == a.shape[0]:
        logits = torch.einsum("bd,bkd->bk", a, c)
    else:
        raise ValueError(f"candidates must be [M, d] or [B, K, d], got {tuple(candidates.shape)}")
    logits = logits / tau
    positive = positive.to(logits.device)
    if mask is not None:
        mask = mask.to(logits.device)
        if not bool(mask.gather(1, positive[:, None]).all()):
            raise ValueError("the mask drops a positive from its own denominator")
        logits = logits.masked_fill(~mask, float("-inf"))
    return F.cross_entropy(logits, positive)


def sample_directions(n: int, rng: torch.Generator) -> tuple[Tensor, Tensor]:
    """Directions ``alpha != beta`` (indices in E, S, W, N) for ``n`` groups, uniform over
    the 12 ordered pairs; int64 ``[n]`` each, on the CPU."""
    alpha = torch.randint(N_DIRECTIONS, (n,), generator=rng)
    beta = (alpha + 1 + torch.randint(N_DIRECTIONS - 1, (n,), generator=rng)) % N_DIRECTIONS
    return alpha, beta


class SviLossOptions(Options):
    """Options of ``[objective.svi]``."""

    tau: float = Field(DEFAULT_TAU, gt=0)


class SviObjective(Objective):
    """Items are street-view groups; two random directions of a group are a positive pair."""

    name = "svi"
    scale = Scale.MICRO
    Options = SviLossOptions
    options: SviLossOptions
    modality = "svi"
    layers = ("svi",)
    encoder: SviModality

    def prepare(self, ctx: Context) -> None:
        n = self.encoder.num_groups
        if n < 2:
            raise MfmError(
                f"L_svi: the city has {n} street-view group(s), it needs 2+ for negatives; "
                "add svi groups or drop svi from --plugins"
            )
        self.groups = n

    def num_items(self) -> int:
        return self.groups

    def candidates(self, batch: int) -> int:
        """Every image of the batch but the anchor itself."""
        return batch * N_DIRECTIONS - 1

    def loss(self, idx: Tensor, rng: torch.Generator) -> Tensor:
        svi = self.encoder
        b = len(idx)
        alpha, beta = sample_directions(b, rng)
        views = svi.group_views(idx)  # [B, 4, d]
        scene = svi.scene_embedding(idx, views)
        head = getattr(self, "contrast_head", None)  # as Objective.contrast, for Eq. 9
        if head is not None:
            views, scene = head(views), None if scene is None else head(scene)
        if scene is not None:
            views = torch.cat([views, scene[:, None, :].expand_as(views)], dim=-1)
        dev = views.device
        rows = torch.arange(b, device=dev)
        alpha, beta = alpha.to(dev), beta.to(dev)
        anchor = views[rows, alpha]
        candidates = views.reshape(b * N_DIRECTIONS, -1)
        mask = torch.ones(b, b * N_DIRECTIONS, dtype=torch.bool, device=dev)
        mask[rows, rows * N_DIRECTIONS + alpha] = False
        return info_nce_multi(
            anchor,
            candidates,
            rows * N_DIRECTIONS + beta,
            mask,
            self.options.tau,
        )

    def trainable(self) -> list[nn.Module]:
        """The image head and scene encoder; the Eq. 12 gate trains in LOCAL and GLOBAL."""
        return [self.encoder.head, self.encoder.scene]
