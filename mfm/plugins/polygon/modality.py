"""POI footprints (paper Eq. 4): rasterized shape through a frozen ResNet18, plus area.

Eq. 4 reads ``E_p = 1/2 (ResNet18(Raster(p.n)) + Surface(p.n) / max_a)``: a 512-d image
feature plus a scalar area ratio (broadcast), averaged. Here the frozen ResNet18 feature
and the area ratio are concatenated and a trainable projection head maps them to the
common width ``d``: ``E_p = head([ResNet18(Raster(p.n)), Surface(p.n) / max_a])``. Its first
linear layer computes ``W_r f + w_a a + b``, which contains Eq. 4's fixed ``1/2 (f + a)``
as one setting of the weights, so the head is the learnable version of the 1/2 sum (and
also brings the 512-d feature to width ``d``, which Eq. 4 leaves implicit).

``Raster`` fits each footprint to its own bounding box (aspect kept, centred), so the
image carries the shape only; the size lives in the area ratio. ``Surface`` is the area
in m2 in the city's metric CRS and ``max_a`` the largest footprint area of the city.
POIs without a footprint have zero features and ``mask = False`` in their view.
"""

from __future__ import annotations

import numpy as np
import shapely
import torch
from pydantic import Field
from torch import Tensor

from mfm.core.bundle.city import City
from mfm.core.constants import FOOTPRINT
from mfm.core.encoders import (
    PRECISION_HELP,
    RESNET_DIM,
    ImagePrecision,
    Precision,
    encode_images,
    resolve_precision,
    warn_random_init,
)
from mfm.core.errors import MfmError
from mfm.core.heads import ProjectionHead
from mfm.core.image_tail import FINETUNE_HELP, ResNetTail, cached_prefix
from mfm.core.modality import Context, Modality, Options, PoiView, View
from mfm.plugins.polygon.raster import RASTER_VERSION, MaskImages, rasterize_footprints


class PolygonOptions(Options):
    """Options of the ``polygon`` plugin (``[plugin.polygon]`` in the run config)."""

    image_size: int = Field(64, ge=16, le=512, description="raster side in pixels")
    weights: str = Field("none", description="ResNet18 weights: none, imagenet or a file path")
    batch_size: int = Field(256, gt=0)
    finetune_blocks: int = Field(0, ge=0, le=2, description=FINETUNE_HELP)
    precision: Precision = Field("auto", description=PRECISION_HELP)


def footprint_features(
    footprints: np.ndarray,
    image_size: int,
    weights: str,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    quiet: bool = False,
    precision: ImagePrecision = "fp32",
) -> dict[str, Tensor]:
    """Frozen footprint features of every POI.

    Args:
        footprints: ``[N]`` shapely geometries in a metric CRS; None/empty = no footprint.

    Returns:
        ``features`` float32 ``[N, 512]`` (ResNet18 of the raster, zero without footprint),
        ``area`` float32 ``[N]`` (Surface / max_a in [0, 1]) and ``has_footprint`` bool ``[N]``.
    """
    n = len(footprints)
    has = ~(shapely.is_missing(footprints) | shapely.is_empty(footprints))
    rows = np.flatnonzero(has)
    features = torch.zeros(n, RESNET_DIM)
    area = torch.zeros(n)
    if len(rows):
        geoms = footprints[rows]
        surface = shapely.area(geoms)
        area[rows] = torch.as_tensor(surface / max(surface.max(), 1e-9), dtype=torch.float32)
        masks = rasterize_footprints(geoms, image_size)
        features[rows] = encode_images(
            MaskImages(masks),
            weights,
            batch_size,
            device,
            quiet=quiet,
            label="encode footprints",
            precision=precision,
        )
    return {"features": features, "area": area, "has_footprint": torch.as_tensor(has)}


class PolygonModality(Modality):
    """The POI polygon view E_p (Eq. 4) for POIs that have a building footprint."""

    name = "polygon"
    layers = ("pois",)
    views = frozenset({View.POI})
    order = 20  # fused after text and svi (paper Eq. 23-26)
    Options = PolygonOptions
    options: PolygonOptions

    def unavailable(self, city: City) -> str | None:
        pois = city.pois
        if FOOTPRINT not in pois.columns or not bool(pois[FOOTPRINT].notna().any()):
            return (
                f"the pois layer of {city.root} has no footprint polygons; add a "
                f"'{FOOTPRINT}' column (DESIGN §5) or drop the polygon plugin"
            )
        return None

    def backbone(self) -> dict[str, object] | None:
        from mfm.core.encoders import resnet_backbone

        return dict(resnet_backbone(self.options.weights))

    def prepare(self, ctx: Context) -> None:
        opts = self.options
        city = ctx.city
        warn_random_init(opts.weights)
        key = {
            "weights": opts.weights,
            "image_size": opts.image_size,
            "raster": RASTER_VERSION,
            "crs": city.crs,
            "pois": city.fingerprint("pois"),
        }
        precision = resolve_precision(opts.precision, ctx.device, bool(opts.finetune_blocks))
        if precision != "fp32":  # fp32 keys stay as they were: caches remain valid
            key["precision"] = precision

        def compute() -> dict[str, Tensor]:
            if FOOTPRINT in city.pois.columns:
                geoms = city.pois[FOOTPRINT].to_crs(city.crs).to_numpy()
            else:
                geoms = np.full(len(city.pois), None, dtype=object)
            return footprint_features(
                geoms,
                opts.image_size,
                opts.weights,
                opts.batch_size,
                ctx.device,
                ctx.quiet,
                precision,
            )

        feats = ctx.cache.get_or_compute("polygon", key, compute)
        if not bool(feats["has_footprint"].any()):
            raise MfmError(
                f"the pois layer of {city.root} has no footprint polygons; add a "
                f"'{FOOTPRINT}' column (DESIGN §5) or drop the polygon plugin"
            )
        self.register_buffer("features", feats["features"].float(), persistent=False)
        self.register_buffer("area", feats["area"].float()[:, None], persistent=False)
        self.register_buffer("has_footprint", feats["has_footprint"].bool(), persistent=False)
        self.head = ProjectionHead(
            RESNET_DIM + 1, ctx.dim, inputs=self.raw_features()[self.has_footprint]
        )
        self.tail: ResNetTail | None = None
        if opts.finetune_blocks:  # the last ResNet stages train on cached activations
            rows = torch.nonzero(self.has_footprint).flatten()

            def masks() -> MaskImages:
                geoms = city.pois[FOOTPRINT].to_crs(city.crs).to_numpy()[rows.numpy()]
                return MaskImages(rasterize_footprints(geoms, opts.image_size))

            act = cached_prefix(
                ctx,
                "polygon",
                key,
                masks,
                opts.weights,
                opts.finetune_blocks,
                opts.batch_size,
                "encode footprints (frozen part)",
            )
            prefix = torch.zeros(len(city.pois), *act.shape[1:], dtype=act.dtype)
            prefix[rows] = act
            self.register_buffer("prefix", prefix, persistent=False)
            self.tail = ResNetTail(opts.weights, opts.finetune_blocks)

    def raw_features(self) -> Tensor:
        """Footprint features and area, zero for POIs without a footprint."""
        x = torch.cat([self.features, self.area], dim=1)
        return x * self.has_footprint[:, None].to(x.dtype)

    def poi_view(self, idx: Tensor, query: Tensor | None = None) -> PoiView:
        idx = idx.to(self.features.device)
        mask = self.has_footprint[idx]
        feats = self.features[idx] if self.tail is None else self.tail(self.prefix[idx].float())
        x = torch.cat([feats, self.area[idx]], dim=1)
        emb = self.head(x) * mask[:, None].to(x.dtype)
        return PoiView(emb, mask)
