"""POI text features: OSM tags serialized "k: v, k: v" through a frozen encoder, cached.

Shared by the ``osm`` plugin (its POI view) and by ``mfm.eval`` (the text baseline), so
both read the same cache entry and nothing is encoded twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from mfm.core.encoders import (
    DEFAULT_TEXT_MODEL,
    TextPrecision,
    encode_texts,
    resolve_precision,
)

if TYPE_CHECKING:
    from mfm.core.bundle.city import City
    from mfm.core.cache import FeatureCache

SERIALIZER = "kv-v1"


class TextOptions(BaseModel):
    """How POI texts are encoded (``[plugin.osm]`` in the run config)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(DEFAULT_TEXT_MODEL, description="Hugging Face id or local path")
    pooling: Literal["mean", "cls"] = "mean"
    max_length: int = Field(64, gt=4)
    batch_size: int = Field(128, gt=0)
    precision: TextPrecision = Field(
        "auto",
        description=(
            "encoder arithmetic: fp32; bf16 (per-POI cosine >= 0.9999 to fp32, ~3-4x faster "
            "on CPUs with AMX or AVX512-BF16, slower on CPUs without; also used on CUDA); "
            "auto: bf16 where the device computes bf16 natively, fp32 elsewhere and when "
            "fine-tuning. No int8: dynamic int8 (CPU-only) fell to cosine 0.85 on MiniLM"
        ),
    )


def serialize_tags(tags: dict[str, str]) -> str:
    """``{"amenity": "cafe", "name": "Roast"}`` -> ``"amenity: cafe, name: Roast"``."""
    return ", ".join(f"{k}: {v}" for k, v in tags.items())


def text_precision(
    opts: TextOptions, device: torch.device | str = "cpu"
) -> Literal["fp32", "bf16"]:
    """The arithmetic of the frozen features: ``opts.precision`` resolved for ``device``;
    ``auto`` is fp32 when the encoder is fine-tuned (``finetune_layers`` of the osm plugin),
    whose live fp32 forward must reproduce the cached features at init."""
    return resolve_precision(opts.precision, device, bool(getattr(opts, "finetune_layers", 0)))


def text_cache_key(
    city: City, opts: TextOptions, device: torch.device | str = "cpu"
) -> dict[str, object]:
    """What determines the frozen text features of a city's POIs (``auto`` precision is
    resolved for ``device``, so fp32 and bf16 features never share an entry)."""
    return {
        "model": opts.model,
        "pooling": opts.pooling,
        "max_length": opts.max_length,
        "precision": text_precision(opts, device),
        "serializer": SERIALIZER,
        "pois": city.fingerprint("pois"),
    }


def poi_text_features(
    city: City,
    opts: TextOptions,
    cache: FeatureCache,
    device: torch.device | str = "cpu",
    quiet: bool = False,
) -> torch.Tensor:
    """Frozen text embeddings of every POI ``[N, hidden]``: from the cache or encoded once."""

    def compute() -> dict[str, torch.Tensor]:
        texts = [serialize_tags(t) for t in city.poi_tags()]
        feats = encode_texts(
            texts,
            opts.model,
            opts.pooling,
            opts.batch_size,
            opts.max_length,
            device,
            quiet,
            text_precision(opts, device),
        )
        return {"features": feats}

    key = text_cache_key(city, opts, device)
    return cache.get_or_compute("text", key, compute)["features"].float()
