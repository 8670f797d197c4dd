"""Satellite tiles (paper Eq. 1): one image per region, frozen ResNet18, a trainable head.

The region view is ``E_s = head(ResNet18(image))``. Regions without a satellite tile
have zero features and ``has_image = False``; their view is ``head(0)`` (the same
vector for all of them), so objectives should not use them as items; ``sate`` skips them.

For L_sate's fallback positive (a region with no mined positive is paired with an
augmented copy of its own tile), ``augmentations`` fixed dihedral transforms of each tile
(rotations by 90/180/270 degrees, then flips) are encoded once at prepare time and
cached beside the plain features; :meth:`SatModality.augmented_view` projects them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from pydantic import Field
from torch import Tensor

from mfm.core.cache import files_signature
from mfm.core.constants import REGION_ID
from mfm.core.encoders import (
    PRECISION_HELP,
    RESNET_DIM,
    ImageFiles,
    Precision,
    encode_images,
    resolve_precision,
    warn_random_init,
)
from mfm.core.heads import ProjectionHead
from mfm.core.image_tail import FINETUNE_HELP, ResNetTail, cached_prefix
from mfm.core.modality import Context, Modality, Options, View

IMAGE = "image"
AUGMENT_VERSION = "dihedral-v1"


def dihedral(img: Tensor, k: int) -> Tensor:
    """Transform ``k`` (0..7) of the square's symmetry group on ``[H, W, C]``; 0 = identity.

    ``k`` 1-3 rotate by 90/180/270 degrees, 4 flips left-right, 5-7 flip then rotate.
    """
    if k >= 4:
        img = torch.flip(img, dims=[1])
    return torch.rot90(img, k % 4, dims=[0, 1])


class AugmentedImages(torch.utils.data.Dataset):
    """Every image of ``base`` followed by its transforms 1..``n_aug`` (``1 + n_aug`` per image).

    Item ``i`` is transform ``i % (1 + n_aug)`` of image ``i // (1 + n_aug)``; the last
    decoded image is kept, so each file is read once with a sequential loader.
    """

    def __init__(self, base: torch.utils.data.Dataset, n_aug: int) -> None:
        self.base, self.per = base, 1 + n_aug
        self._last: tuple[int, Tensor] | None = None

    def __len__(self) -> int:
        return len(self.base) * self.per

    def __getitem__(self, i: int) -> Tensor:
        j, k = divmod(i, self.per)
        if self._last is None or self._last[0] != j:
            self._last = (j, self.base[j])
        return dihedral(self._last[1], k).contiguous()


class SatOptions(Options):
    """Options of the ``sat`` plugin (``[plugin.sat]`` in the run config)."""

    image_size: int = Field(64, ge=16, le=1024, description="tiles are resized to this side")
    weights: str = Field("none", description="ResNet18 weights: none, imagenet or a file path")
    batch_size: int = Field(128, gt=0)
    augmentations: int = Field(4, ge=1, le=7, description="augmented copies per tile (L_sate)")
    finetune_blocks: int = Field(0, ge=0, le=2, description=FINETUNE_HELP)
    precision: Precision = Field("auto", description=PRECISION_HELP)


class SatModality(Modality):
    """The region macro view E_s from satellite tiles (Eq. 1)."""

    name = "sat"
    layers = ("regions", "satellite")
    views = frozenset({View.REGION})
    Options = SatOptions
    options: SatOptions

    def backbone(self) -> dict[str, object] | None:
        from mfm.core.encoders import resnet_backbone

        return dict(resnet_backbone(self.options.weights))

    def prepare(self, ctx: Context) -> None:
        opts = self.options
        city = ctx.city
        warn_random_init(opts.weights)
        regions = city.layer("regions")[REGION_ID].astype(str)
        sat = city.layer("satellite")
        row = _row_of(regions.to_numpy(), sat[REGION_ID].astype(str).to_numpy())
        has = row >= 0
        paths = [city.path(p) for p in sat[IMAGE].to_numpy()[row[has]]]
        key = {
            "weights": opts.weights,
            "image_size": opts.image_size,
            "augmentations": opts.augmentations,
            "augment": AUGMENT_VERSION,
            "regions": city.fingerprint("regions"),
            "satellite": city.fingerprint("satellite"),
            "images": files_signature(paths),
        }
        precision = resolve_precision(opts.precision, ctx.device, bool(opts.finetune_blocks))
        if precision != "fp32":  # fp32 keys stay as they were: caches remain valid
            key["precision"] = precision

        def compute() -> dict[str, Tensor]:
            per = 1 + opts.augmentations
            feats = torch.zeros(len(regions), per, RESNET_DIM)
            if len(paths):
                images = AugmentedImages(ImageFiles(paths, opts.image_size), opts.augmentations)
                enc = encode_images(
                    images,
                    opts.weights,
                    opts.batch_size,
                    ctx.device,
                    num_workers=ctx.config.num_workers,
                    quiet=ctx.quiet,
                    label="encode satellite tiles",
                    precision=precision,
                )
                feats[torch.as_tensor(np.flatnonzero(has))] = enc.view(len(paths), per, -1)
            return {"features": feats[:, 0].contiguous(), "augmented": feats[:, 1:].contiguous()}

        feats = ctx.cache.get_or_compute("sat", key, compute)
        self.register_buffer("features", feats["features"].float(), persistent=False)
        self.register_buffer("augmented", feats["augmented"].float(), persistent=False)
        self.register_buffer("has_image", torch.as_tensor(has), persistent=False)
        self.head = ProjectionHead(RESNET_DIM, ctx.dim, inputs=self.features[self.has_image])
        self.tail: ResNetTail | None = None
        if opts.finetune_blocks:
            self._prepare_tail(ctx, key, paths, has)

    def _prepare_tail(
        self, ctx: Context, key: dict[str, object], paths: list, has: np.ndarray
    ) -> None:
        """Cache the frozen part's activations of every tile copy; train the last stages."""
        opts = self.options
        per = 1 + opts.augmentations
        act = cached_prefix(
            ctx,
            "sat",
            key,
            lambda: AugmentedImages(ImageFiles(paths, opts.image_size), opts.augmentations),
            opts.weights,
            opts.finetune_blocks,
            opts.batch_size,
            "encode satellite tiles (frozen part)",
        )
        prefix = torch.zeros(len(has), per, *act.shape[1:], dtype=act.dtype)
        prefix[torch.as_tensor(np.flatnonzero(has))] = act.view(len(paths), per, *act.shape[1:])
        self.register_buffer("prefix", prefix, persistent=False)
        self.tail = ResNetTail(opts.weights, opts.finetune_blocks)

    def _tiles(self, idx: Tensor, copy: Tensor | int) -> Tensor:
        """ResNet18 features ``[B, 512]`` of copy ``copy`` (0: the tile) of regions ``idx``."""
        if self.tail is None:
            if isinstance(copy, int) and copy == 0:
                return self.features[idx]
            return self.augmented[idx, torch.as_tensor(copy, device=idx.device) - 1]
        out = self.tail(self.prefix[idx, copy].float())
        return out * self.has_image[idx][:, None].to(out.dtype)

    @property
    def num_augmentations(self) -> int:
        """Augmented copies per region available to :meth:`augmented_view`."""
        return self.augmented.shape[1]

    def region_view(self, idx: Tensor) -> Tensor:
        return self.head(self._tiles(idx.to(self.features.device), 0))

    def augmented_view(self, idx: Tensor, aug: Tensor) -> Tensor:
        """``head`` of augmented copy ``aug[b]`` (0..num_augmentations-1) of region ``idx[b]``."""
        idx, aug = idx.to(self.augmented.device), aug.to(self.augmented.device)
        return self.head(self._tiles(idx, aug + 1))


def _row_of(keys: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Row of each ``keys[i]`` in ``table`` (unique values), -1 where absent."""
    return pd.Index(table).get_indexer(keys).astype(np.int64)
