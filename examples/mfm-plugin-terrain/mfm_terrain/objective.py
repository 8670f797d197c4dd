"""The ``terrain`` objective (MACRO): regions with similar terrain profiles are positives.

Prepare (once): items are the regions that lie on the DEM (``has_data``). Two items are
positives when the cosine of their standardized terrain statistics (elevation and slope
columns; the coverage flags describe the DEM, not the terrain, and are left out) is at
least ``threshold``. Cosines are computed ``block`` rows at a time by one matrix product
each (memory ``O(block * N)``), never with a Python loop over pairs.

Loss: each region ``i`` of the batch is paired with one of its mined positives drawn at
random, and InfoNCE (tau 0.5, in-batch negatives) is applied to their terrain views. A
region with no mined positive is paired with itself seen through small Gaussian noise on
its standardized profile, ``head(x_i + noise * N(0, I))`` (SimCLR-style feature
augmentation), so every region on the DEM keeps training instead of being dropped. All
randomness comes from the ``rng`` argument.
"""

from __future__ import annotations

import numpy as np
import torch
from mfm import DEFAULT_TAU, Context, MfmError, Objective, Options, Scale, info_nce
from pydantic import Field
from torch import Tensor

from mfm_terrain.modality import TerrainModality

TERRAIN = "terrain"


def mine_similar_pairs(
    features: np.ndarray,
    threshold: float,
    block: int = 1024,
    max_per_row: int | None = None,
) -> np.ndarray:
    """Pairs ``(i, j)``, ``i != j``, with ``cos(features_i, features_j) >= threshold``.

    Rows that are all zero have no direction and get no pairs.

    Args:
        features: ``[N, F]`` feature rows.
        threshold: cosine threshold in [-1, 1].
        block: rows per matrix-product block.
        max_per_row: keep at most this many partners per row, most similar first.

    Returns:
        int64 ``[E, 2]`` directed pairs sorted by ``(i, j)``; without ``max_per_row`` both
        ``(i, j)`` and ``(j, i)`` are present.
    """
    x = np.asarray(features, dtype=np.float64)
    n = len(x)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    valid = norm[:, 0] > 1e-12
    unit = np.divide(x, norm, out=np.zeros_like(x), where=norm > 1e-12)
    out = [np.zeros((0, 2), dtype=np.int64)]
    for start in range(0, n, block):
        stop = min(start + block, n)
        sim = unit[start:stop] @ unit.T
        ok = (sim >= threshold) & valid[start:stop, None] & valid[None, :]
        ok[np.arange(stop - start), np.arange(start, stop)] = False
        if max_per_row is not None and max_per_row < n:
            top = np.argpartition(-np.where(ok, sim, -np.inf), max_per_row - 1, axis=1)
            keep = np.zeros_like(ok)
            np.put_along_axis(keep, top[:, :max_per_row], True, axis=1)
            ok &= keep
        rows, cols = np.nonzero(ok)
        out.append(np.stack([rows + start, cols], axis=1).astype(np.int64))
    return np.concatenate(out)


class TerrainObjectiveOptions(Options):
    """Options of ``[objective.terrain]``."""

    threshold: float = Field(0.9, ge=-1, le=1, description="cosine threshold for positives")
    noise: float = Field(
        0.1, ge=0, description="std of the Gaussian feature noise of the fallback positive"
    )
    max_positives: int | None = Field(None, ge=1, description="cap on positives per region")
    block: int = Field(1024, ge=1, description="rows per block when mining pairs")
    tau: float = Field(DEFAULT_TAU, gt=0)


class TerrainObjective(Objective):
    """Macro-scale contrast of terrain views between regions with similar terrain."""

    name = TERRAIN
    scale = Scale.MACRO
    Options = TerrainObjectiveOptions
    options: TerrainObjectiveOptions
    modality = TERRAIN
    layers = ("regions",)
    encoder: TerrainModality

    def prepare(self, ctx: Context) -> None:
        opts = self.options
        terrain = self.encoder
        items = np.flatnonzero(terrain.has_data.cpu().numpy())
        if len(items) < 2:
            raise MfmError(
                f"terrain objective: only {len(items)} region(s) lie on the DEM; it needs 2 or "
                "more (use a DEM that covers the city, or drop terrain from --plugins)"
            )
        profile = terrain.profile.cpu().double().numpy()[items]
        pairs = mine_similar_pairs(profile, opts.threshold, opts.block, opts.max_positives)
        counts = np.bincount(pairs[:, 0], minlength=len(items))
        # CSR over item positions; members hold region indices
        self.items = torch.as_tensor(items, dtype=torch.long)
        self.ptr = torch.as_tensor(np.r_[0, np.cumsum(counts)], dtype=torch.long)
        self.members = torch.as_tensor(items[pairs[:, 1]], dtype=torch.long)
        self.pair_stats = {
            "regions": len(items),
            "pairs": len(pairs),
            "with_positive": int((counts > 0).sum()),
        }

    def stats(self) -> dict[str, object]:
        """Mined pairs, for the run manifest."""
        return dict(self.pair_stats)

    def num_items(self) -> int:
        return len(self.items)

    def positives(self, pos: Tensor, rng: torch.Generator) -> Tensor:
        """Positive views ``[B, d]`` of items at positions ``pos``: a random mined partner,
        or the item's own profile with Gaussian noise when it has none."""
        opts = self.options
        terrain = self.encoder
        regions = self.items[pos]
        start = self.ptr[pos]
        count = self.ptr[pos + 1] - start
        u = torch.rand(len(pos), generator=rng)
        noise = torch.randn(len(pos), terrain.features.shape[1], generator=rng)
        has_pos = count > 0
        pick = torch.where(has_pos, start + (u * count).long(), 0)
        partner = self.members[pick] if len(self.members) else regions
        device = terrain.features.device
        noisy = terrain.features[regions.to(device)] + opts.noise * noise.to(device)
        mined = terrain.region_view(partner)
        return torch.where(has_pos.to(device)[:, None], mined, terrain.project(noisy))

    def loss(self, idx: Tensor, rng: torch.Generator) -> Tensor:
        pos = idx.cpu().long()
        anchor = self.encoder.region_view(self.items[pos])
        positive = self.positives(pos, rng)
        return info_nce(anchor, positive, self.options.tau)

    @torch.no_grad()
    def region_embeddings(self) -> Tensor:
        """Terrain views of every region (a later GLOBAL stage's embeddings take priority)."""
        terrain = self.encoder
        n = len(terrain.features)
        return torch.cat(
            [
                terrain.region_view(torch.arange(s, min(s + 4096, n))).float().cpu()
                for s in range(0, n, 4096)
            ]
        )
