"""Street-view imagery: four direction views per sampling group (Eq. 2) and the POI view
by spatial-aware semantic consistency (Eq. 10-14).

Each group ``sv`` has images east, south, west and north; a frozen ResNet18 encodes each
(cached ``[G, 4, 512]``, order E, S, W, N) and one trainable projection head, shared by
the directions, maps them to width ``d``.

The scene embedding E_scene of Eq. 8 comes from a scene encoder registered through the
``register_scene_encoders`` hook (built-ins in :mod:`mfm.plugins.svi.scene`). The paper's
is LLaMA2 captions of the image features, encoded as text; the offline default
``scene = "mean"`` stands in for it with the mean of the group's four projected views,
and ``"none"`` drops it.

The POI view (Eq. 10-14): for each POI, the groups within ``max_dist`` metres (nearest
``max_groups``); per group the *anchor* image is the direction facing the POI from the
group's point and the *context* is the mean of the other three (Eq. 11); a learnable
2-way gate fuses them (Eq. 12); the POI's street-view embedding is the attention over its
groups with weights ``softmax(sim(E_t, E_sv^i) * b_i / tau)``, ``b_i = max_dist /
(dist_i + max_dist)`` (Eq. 13-14). Distances are Euclidean in the city's metric CRS (the
paper uses haversine; within 1 km they agree to well under a metre).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from mfm.core.cache import files_signature
from mfm.core.constants import SVI_DIRECTIONS
from mfm.core.encoders import (
    PRECISION_HELP,
    RESNET_DIM,
    ImageFiles,
    Precision,
    encode_images,
    resolve_precision,
    warn_random_init,
)
from mfm.core.graphs import radius_neighbours
from mfm.core.heads import ProjectionHead
from mfm.core.image_tail import FINETUNE_HELP, ResNetTail, cached_prefix
from mfm.core.losses import DEFAULT_TAU
from mfm.core.modality import Context, Modality, Options, PoiView, View
from mfm.core.scene import build_scene_encoder

N_DIRECTIONS = len(SVI_DIRECTIONS)  # E, S, W, N
_SECTOR_TO_DIRECTION = np.array([0, 3, 2, 1])  # angle sectors E, N, W, S -> indices in E,S,W,N


class SviOptions(Options):
    """Options of the ``svi`` plugin (``[plugin.svi]`` in the run config)."""

    image_size: int = Field(64, ge=16, description="images are resized to this square size")
    weights: str = Field("none", description="ResNet18 weights: none, imagenet or a file path")
    batch_size: int = Field(128, gt=0, description="images per ResNet18 batch")
    scene: str = Field("mean", description="scene encoder for Eq. 8: mean (offline) or none")
    max_dist: float = Field(1000.0, gt=0, description="metres from a POI to its groups")
    max_groups: int = Field(8, ge=1, description="nearest groups kept per POI")
    tau: float = Field(DEFAULT_TAU, gt=0, description="attention temperature (Eq. 13)")
    finetune_blocks: int = Field(0, ge=0, le=2, description=FINETUNE_HELP)
    precision: Precision = Field("auto", description=PRECISION_HELP)


def facing_direction(from_xy: np.ndarray, to_xy: np.ndarray) -> np.ndarray:
    """Index in (E, S, W, N) of the camera direction from ``from_xy`` that faces ``to_xy``.

    Args:
        from_xy: ``[..., 2]`` metric (x east, y north) positions of the sampling points.
        to_xy: ``[..., 2]`` positions of the targets (broadcast against ``from_xy``).

    Returns:
        int64 ``[...]``: 0 east, 1 south, 2 west, 3 north (90-degree sectors).
    """
    delta = np.asarray(to_xy, np.float64) - np.asarray(from_xy, np.float64)
    angle = np.arctan2(delta[..., 1], delta[..., 0])
    sector = np.floor((angle + math.pi / 4) / (math.pi / 2)).astype(np.int64) % 4
    return _SECTOR_TO_DIRECTION[sector]


@dataclass
class PoiLinks:
    """Each POI's street-view groups, padded to ``K``: all tensors are ``[N_poi, K]``."""

    group: Tensor  # int64 index into the svi layer (0 where padded)
    dist: Tensor  # float32 metres
    direction: Tensor  # int64 anchor direction (E, S, W, N) facing the POI
    mask: Tensor  # bool: a real group


def link_pois(poi_xy: np.ndarray, svi_xy: np.ndarray, max_dist: float, max_groups: int) -> PoiLinks:
    """The groups within ``max_dist`` of each POI, nearest first (Eq. 10), and their anchors."""
    nb = radius_neighbours(poi_xy, svi_xy, max_dist, max_groups)
    k = max(1, int(nb.counts().max(initial=0)))
    group, dist, mask = nb.padded(np.arange(len(poi_xy)), k)
    direction = facing_direction(svi_xy[group.numpy()], poi_xy[:, None, :])
    return PoiLinks(group, dist, torch.as_tensor(direction), mask)


def gated_fusion(anchor: Tensor, context: Tensor, gate: nn.Linear) -> Tensor:
    """Eq. 12: ``softmax([E_a, E_c] W_g + b_g) . [E_a, E_c]``; shapes ``[..., d] -> [..., d]``."""
    w = torch.softmax(gate(torch.cat([anchor, context], dim=-1)), dim=-1)
    return w[..., :1] * anchor + w[..., 1:] * context


def spatial_attention(
    fused: Tensor,
    dist: Tensor,
    mask: Tensor,
    query: Tensor | None,
    max_dist: float,
    tau: float = DEFAULT_TAU,
) -> tuple[Tensor, Tensor]:
    """Eq. 13-14: attention over each POI's groups, weighted by similarity and nearness.

    Args:
        fused: ``[B, K, d]`` group embeddings E_sv.
        dist: ``[B, K]`` metres from the POI to each group.
        mask: ``[B, K]`` bool, False on padding.
        query: ``[B, d]`` the POI's text view E_t, or None to use ``sim = 1`` (weights then
            follow ``b_i`` alone).
        max_dist: the radius of Eq. 10 (metres).
        tau: temperature.

    Returns:
        ``([B, d] E_v, [B, K] weights)``; rows without a group are zero.
    """
    b = max_dist / (dist.to(fused.dtype) + max_dist)
    if query is None:
        sim = torch.ones_like(b)
    else:
        sim = F.cosine_similarity(query[:, None, :].to(fused.dtype), fused, dim=-1)
    logits = (sim * b / tau).masked_fill(~mask, torch.finfo(fused.dtype).min)
    weights = torch.softmax(logits, dim=1) * mask  # all-padding rows: uniform * 0 = 0
    return (weights[..., None] * fused).sum(dim=1), weights


class SviModality(Modality):
    """Street-view groups: direction views for L_svi (Eq. 9) and a POI view (Eq. 10-14)."""

    name = "svi"
    layers = ("svi",)
    views = frozenset({View.POI})
    order = 10  # fused right after text (paper Eq. 23-25)
    Options = SviOptions
    options: SviOptions

    def backbone(self) -> dict[str, object] | None:
        from mfm.core.encoders import resnet_backbone

        return dict(resnet_backbone(self.options.weights))

    def prepare(self, ctx: Context) -> None:
        opts = self.options
        city = ctx.city
        warn_random_init(opts.weights)
        svi = city.layer("svi")
        rel = svi[list(SVI_DIRECTIONS)].to_numpy().reshape(-1)  # group-major: E,S,W,N
        paths = [city.path(p) for p in rel]
        key = {
            "model": "resnet18",
            "weights": _weights_key(opts.weights),
            "image_size": opts.image_size,
            "directions": list(SVI_DIRECTIONS),
            "svi": city.fingerprint("svi"),
            "images": files_signature(paths),
        }
        precision = resolve_precision(opts.precision, ctx.device, bool(opts.finetune_blocks))
        if precision != "fp32":  # fp32 keys stay as they were: caches remain valid
            key["precision"] = precision

        def compute() -> dict[str, Tensor]:
            feats = encode_images(
                ImageFiles(paths, opts.image_size),
                opts.weights,
                opts.batch_size,
                ctx.device,
                ctx.config.num_workers,
                ctx.quiet,
                "encode street view",
                precision=precision,
            )
            return {"features": feats.reshape(len(svi), N_DIRECTIONS, RESNET_DIM)}

        feats = ctx.cache.get_or_compute("svi", key, compute)["features"].float()
        links = link_pois(city.xy("pois"), city.xy("svi"), opts.max_dist, opts.max_groups)
        self.register_buffer("features", feats, persistent=False)
        self.register_buffer("poi_group", links.group, persistent=False)
        self.register_buffer("poi_dist", links.dist, persistent=False)
        self.register_buffer("poi_direction", links.direction, persistent=False)
        self.register_buffer("poi_mask", links.mask, persistent=False)
        self.head = ProjectionHead(feats.shape[-1], ctx.dim, inputs=feats)
        self.gate = nn.Linear(2 * ctx.dim, 2)
        self.scene = build_scene_encoder(opts.scene, ctx.scene_encoders)
        self.scene.prepare(ctx, feats, ctx.dim)
        self.tail: ResNetTail | None = None
        if opts.finetune_blocks:  # the last ResNet stages train on cached activations
            act = cached_prefix(
                ctx,
                "svi",
                key,
                lambda: ImageFiles(paths, opts.image_size),
                opts.weights,
                opts.finetune_blocks,
                opts.batch_size,
                "encode street view (frozen part)",
            )
            prefix = act.view(len(svi), N_DIRECTIONS, *act.shape[1:])
            self.register_buffer("prefix", prefix, persistent=False)
            self.tail = ResNetTail(opts.weights, opts.finetune_blocks)

    @property
    def num_groups(self) -> int:
        """How many street-view groups the city has."""
        return self.features.shape[0]

    def group_views(self, groups: Tensor) -> Tensor:
        """Projected direction views ``[B, 4, d]`` (E, S, W, N) of groups ``groups`` ``[B]``."""
        groups = groups.to(self.features.device)
        if self.tail is None:
            return self.head(self.features[groups])
        act = self.prefix[groups]  # [B, 4, C, h, w]
        feats = self.tail(act.flatten(0, 1).float()).view(len(groups), N_DIRECTIONS, -1)
        return self.head(feats)

    def scene_embedding(self, groups: Tensor, views: Tensor) -> Tensor | None:
        """E_scene ``[B, d]`` (Eq. 8, via the configured scene encoder) or None."""
        return self.scene(groups.to(views.device), views)

    def raw_features(self) -> Tensor:
        """Per POI: the mean over its linked groups of the image facing it (zero if none)."""
        facing = self.features[self.poi_group, self.poi_direction]  # [P, K, f]
        w = self.poi_mask.to(facing.dtype)[..., None]
        return (facing * w).sum(dim=1) / w.sum(dim=1).clamp_min(1)

    def poi_view(self, idx: Tensor, query: Tensor | None = None) -> PoiView:
        """E_v of POIs ``idx`` (Eq. 11-14); mask: the POI has a group within ``max_dist``."""
        opts = self.options
        idx = idx.to(self.features.device)
        group, mask = self.poi_group[idx], self.poi_mask[idx]
        direction = self.poi_direction[idx]
        uniq, inv = torch.unique(group, return_inverse=True)  # project each group once
        views = self.group_views(uniq)  # [U, 4, d]
        anchor = views[inv, direction]  # [B, K, d] Eq. 11: the image facing the POI
        context = (views.sum(dim=1)[inv] - anchor) / (N_DIRECTIONS - 1)
        fused = gated_fusion(anchor, context, self.gate)
        emb, _ = spatial_attention(fused, self.poi_dist[idx], mask, query, opts.max_dist, opts.tau)
        return PoiView(emb, mask.any(dim=1))


def _weights_key(weights: str) -> str:
    """The weights name, or a file path with its size and mtime (so a new file re-encodes)."""
    if weights in ("none", "imagenet"):
        return weights
    path = Path(weights)
    if not path.exists():
        return weights  # build_resnet18 raises the user-facing error
    st = os.stat(path)
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
