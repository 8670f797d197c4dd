"""Terrain: a region-level macro view from a DEM GeoTIFF.

Each region's terrain profile (elevation mean / std / min / max / range / percentiles,
slope mean / std, coverage, has_data; :mod:`mfm_terrain.dem`) is computed once in
``prepare``, cached with ``ctx.cache`` and standardized; a trainable MLP head
(:class:`mfm.ProjectionHead`) maps it to width ``d``. The view is ``View.REGION``,
so the GLOBAL objective fuses it into its macro representation like ``sat`` and
``trajectory``; the ``terrain`` objective (:mod:`mfm_terrain.objective`) trains it at MACRO.

The DEM is ``[plugin.terrain] dem`` or, by default, ``dem.tif`` in the city bundle root
(a City bundle has no DEM layer). Regions outside the DEM get a zero profile and
``has_data = 0``.
"""

from __future__ import annotations

import torch
from mfm import City, Context, MfmError, Modality, Options, ProjectionHead, View, log
from pydantic import Field, field_validator
from torch import Tensor

from mfm_terrain.dem import (
    DEFAULT_PERCENTILES,
    FLAG_COLUMNS,
    feature_names,
    file_digest,
    resolve_dem,
    standardize,
    terrain_features,
)

FEATURES_VERSION = "terrain-v1"


class TerrainOptions(Options):
    """Options of the ``terrain`` plugin (``[plugin.terrain]`` in the run config)."""

    dem: str | None = Field(
        None, description="DEM GeoTIFF path (default: dem.tif in the city bundle root)"
    )
    band: int = Field(1, ge=1, description="raster band holding elevations")
    percentiles: tuple[float, ...] = Field(
        DEFAULT_PERCENTILES, description="elevation percentiles (0-100) in the profile"
    )
    max_cells: int = Field(
        50_000_000, ge=1, description="read the DEM window decimated beyond this many cells"
    )

    @field_validator("percentiles")
    @classmethod
    def _in_range(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(not 0 <= p <= 100 for p in value) or len(set(value)) != len(value):
            raise ValueError("percentiles must be distinct values in [0, 100], e.g. [10, 50, 90]")
        return value


class TerrainModality(Modality):
    """Region macro view ``E_terrain = MLP(standardized terrain profile)``."""

    name = "terrain"
    layers = ("regions",)
    views = frozenset({View.REGION})
    Options = TerrainOptions
    options: TerrainOptions

    def unavailable(self, city: City) -> str | None:
        """No DEM: a default run drops terrain; ``--plugins ...,terrain`` reports why."""
        try:
            resolve_dem(self.options.dem, city.root)
        except MfmError as exc:
            return str(exc)
        return None

    def prepare(self, ctx: Context) -> None:
        opts = self.options
        city = ctx.city
        dem = resolve_dem(opts.dem, city.root)
        digest = file_digest(dem)
        self.dem_info = {"file": str(dem.resolve()), "sha256": digest}
        key = {
            "features": FEATURES_VERSION,
            "dem": digest,
            "band": opts.band,
            "percentiles": list(opts.percentiles),
            "max_cells": opts.max_cells,
            "crs": city.crs,
            "regions": city.fingerprint("regions"),
        }

        def compute() -> dict[str, Tensor]:
            raw = terrain_features(
                dem,
                city.layer("regions").geometry,
                city.region_area_m2(),
                opts.percentiles,
                opts.band,
                opts.max_cells,
            )
            return {"raw": torch.from_numpy(raw)}

        raw = ctx.cache.get_or_compute("terrain", key, compute)["raw"].double().numpy()
        has = raw[:, -1] > 0
        if not has.any():
            raise MfmError(
                f"terrain plugin: the DEM {dem} covers none of the {len(raw)} regions of city "
                f"{city.name!r}; check that it covers the city and that its CRS is set correctly"
            )
        self.feature_names = feature_names(opts.percentiles)
        self.register_buffer("raw", torch.from_numpy(raw).float(), persistent=False)
        self.register_buffer(
            "features", torch.from_numpy(standardize(raw)).float(), persistent=False
        )
        self.register_buffer("has_data", torch.from_numpy(has), persistent=False)
        self.head = ProjectionHead(raw.shape[1], ctx.dim)
        log(f"terrain: {int(has.sum())}/{len(has)} regions lie on the DEM {dem}")

    @property
    def profile(self) -> Tensor:
        """``[R, F - 2]`` standardized terrain statistics (the coverage flags dropped)."""
        return self.features[:, : -len(FLAG_COLUMNS)]

    def project(self, features: Tensor) -> Tensor:
        """The head applied to (possibly perturbed) standardized profiles ``[B, F]``."""
        return self.head(features)

    def region_view(self, idx: Tensor) -> Tensor:
        return self.head(self.features[idx.to(self.features.device)])

    def fingerprint(self) -> dict[str, object]:
        """Options plus the DEM actually used (path and content hash), once prepared."""
        info = getattr(self, "dem_info", None)
        return {**self.options.model_dump(mode="json"), **({"dem_used": info} if info else {})}
