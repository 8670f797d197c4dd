"""L_sate (paper Eq. 17-22): regions alike in POI distribution and road layout are positives.

Prepare (once): POI-distribution features F_p (DBSCAN per region and category, Eq.
17-19), road features F_r (Eq. 20) and the positive pairs where both cosines reach the
thresholds (Eq. 21); see :mod:`mfm.plugins.sat.features` for units.

Loss (Eq. 22): items are the regions that have a satellite tile. Each step pairs region
``i`` with one of its mined positives drawn at random and applies InfoNCE to their
satellite views (in-batch negatives). A region with no mined positive is paired with an
augmented copy of its own tile instead (one of the modality's precomputed dihedral
transforms, drawn at random): the paper does not say what such regions do; this keeps
every tile in training, SimCLR-style, rather than silently dropping it.

Without a roads layer, positives use F_p alone (the roads half of Eq. 21 is skipped).
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from mfm.core.errors import MfmError
from mfm.core.losses import DEFAULT_TAU
from mfm.core.modality import Context, Options
from mfm.core.objective import Objective
from mfm.core.progress import log
from mfm.core.scales import Scale
from mfm.plugins.sat.features import (
    mine_positive_pairs,
    poi_distribution_features,
    road_features,
    scale_blocks,
    top_categories,
)
from mfm.plugins.sat.modality import SatModality


class SateOptions(Options):
    """Options of ``[objective.sate]``."""

    categories: int = Field(32, ge=1, description="the K most frequent POI categories")
    eps: float = Field(0.05, gt=0, description="DBSCAN eps, in region equivalent radii")
    min_pts: int = Field(2, ge=1, description="DBSCAN MinPts (the point itself included)")
    threshold_poi: float = Field(0.95, ge=-1, le=1, description="cosine threshold on F_p")
    threshold_road: float = Field(0.95, ge=-1, le=1, description="cosine threshold on F_r")
    min_degree: int = Field(3, ge=3, description="road vertices of this degree are crossings")
    area_unit_m2: float = Field(1e4, gt=0, description="area unit of the density features")
    scale_features: bool = Field(True, description="divide same-unit columns by their mean")
    max_positives: int | None = Field(None, ge=1, description="cap on positives per region")
    block: int = Field(1024, ge=1, description="rows per block when mining pairs")
    tau: float = Field(DEFAULT_TAU, gt=0)


class SateObjective(Objective):
    """Macro-scale contrast of satellite views between similar regions (Eq. 22)."""

    name = "sate"
    scale = Scale.MACRO
    Options = SateOptions
    options: SateOptions
    modality = "sat"
    layers = ("regions", "satellite")
    encoder: SatModality

    def region_features(self, ctx: Context) -> tuple[np.ndarray, np.ndarray | None]:
        """F_p ``[R, 2K]`` and F_r ``[R, 2]`` (None without roads), scaled if configured."""
        opts = self.options
        city = ctx.city
        area = city.region_area_m2()
        category, names = top_categories(city.poi_tags(), opts.categories)
        fp = poi_distribution_features(
            city.xy("pois"),
            city.poi_region(),
            category,
            city.xy("regions"),
            area,
            len(names),
            opts.eps,
            opts.min_pts,
            opts.area_unit_m2,
        )
        fr = None
        if city.has("roads"):
            fr = road_features(
                city.roads.geometry.to_crs(city.crs).to_numpy(),
                city.regions.geometry.to_crs(city.crs).to_numpy(),
                area,
                opts.min_degree,
                opts.area_unit_m2,
            )
        if opts.scale_features:
            fp = scale_blocks(fp, np.arange(fp.shape[1]) % 2)  # radii | densities
            fr = None if fr is None else scale_blocks(fr, np.arange(fr.shape[1]))
        return fp, fr

    def prepare(self, ctx: Context) -> None:
        opts = self.options
        has_image = self.encoder.has_image.cpu().numpy()
        fp, fr = self.region_features(ctx)
        pairs = mine_positive_pairs(
            fp, fr, opts.threshold_poi, opts.block, opts.threshold_road, opts.max_positives
        )
        pairs = pairs[has_image[pairs[:, 0]] & has_image[pairs[:, 1]]]
        counts = np.bincount(pairs[:, 0], minlength=len(has_image))
        self.ptr = torch.as_tensor(np.r_[0, np.cumsum(counts)], dtype=torch.long)
        self.members = torch.as_tensor(pairs[:, 1].copy(), dtype=torch.long)
        self.items = torch.as_tensor(np.flatnonzero(has_image), dtype=torch.long)
        self.pair_stats = {
            "regions": len(self.items),
            "pairs": len(pairs),
            "with_positive": int((counts[has_image] > 0).sum()),
        }
        if self.pair_stats["with_positive"] < len(self.items) / 2:
            log(
                f"warning: L_sate found positives for {self.pair_stats['with_positive']} of "
                f"{len(self.items)} regions; the others contrast augmented copies of their own "
                "tile (lower [objective.sate] threshold_poi / threshold_road to mine more)"
            )
        if len(self.items) < 2:
            raise MfmError(
                f"L_sate: only {len(self.items)} regions have a satellite tile; add tiles to "
                "the satellite layer or drop the sat plugin"
            )

    def stats(self) -> dict[str, object]:
        """Regions with a tile, mined pairs, and regions with at least one positive."""
        return dict(self.pair_stats)

    def num_items(self) -> int:
        return len(self.items)

    def positives(self, regions: Tensor, rng: torch.Generator) -> Tensor:
        """Positive views ``[B, d]`` of ``regions``: the satellite view of a random mined
        partner, or of a random augmented copy of the region's own tile when it has none."""
        sat = self.encoder
        start = self.ptr[regions]
        count = self.ptr[regions + 1] - start
        u = torch.rand(len(regions), generator=rng)
        v = torch.rand(len(regions), generator=rng)
        has_pos = count > 0
        pick = torch.where(has_pos, start + (u * count).long(), 0)
        partner = self.members[pick] if len(self.members) else torch.zeros_like(regions)
        aug = (v * sat.num_augmentations).long()
        pos = sat.region_view(partner)
        return torch.where(has_pos.to(pos.device)[:, None], pos, sat.augmented_view(regions, aug))

    def loss(self, idx: Tensor, rng: torch.Generator) -> Tensor:
        regions = self.items[idx]
        anchor = self.encoder.region_view(regions)
        positive = self.positives(regions, rng)
        return self.contrast(anchor, positive)

    @torch.no_grad()
    def region_embeddings(self) -> Tensor:
        """Satellite views of every region (a later GLOBAL stage's embeddings take priority)."""
        sat = self.encoder
        n = len(sat.features)
        return torch.cat(
            [sat.region_view(torch.arange(s, min(s + 4096, n))) for s in range(0, n, 4096)]
        )
