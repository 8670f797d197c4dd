"""POI text: OSM tags serialized "k: v, k: v", a frozen transformers encoder, a trainable head."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from mfm.core.encoders import DEFAULT_TEXT_MODEL, encode_texts
from mfm.core.heads import ProjectionHead
from mfm.core.modality import Context, Modality, Options, PoiView, View

SERIALIZER = "kv-v1"


def serialize_tags(tags: dict[str, str]) -> str:
    """``{"amenity": "cafe", "name": "Roast"}`` -> ``"amenity: cafe, name: Roast"``."""
    return ", ".join(f"{k}: {v}" for k, v in tags.items())


class OsmOptions(Options):
    """Options of the ``osm`` plugin (``[plugin.osm]`` in the run config)."""

    model: str = Field(DEFAULT_TEXT_MODEL, description="Hugging Face id or local path")
    pooling: Literal["mean", "cls"] = "mean"
    max_length: int = Field(64, gt=4)
    batch_size: int = Field(128, gt=0)


class OsmText(Modality):
    """The POI text view E_t (Eq. 3): the anchor every other POI view is compared with."""

    name = "osm"
    layers = ("pois",)
    views = frozenset({View.POI})
    anchor = True
    Options = OsmOptions

    def prepare(self, ctx: Context) -> None:
        opts: OsmOptions = self.options  # type: ignore[assignment]
        city = ctx.city
        texts = [serialize_tags(t) for t in city.poi_tags()]
        key = {
            "model": opts.model,
            "pooling": opts.pooling,
            "max_length": opts.max_length,
            "serializer": SERIALIZER,
            "pois": city.fingerprint("pois"),
        }
        feats = ctx.cache.get_or_compute(
            "text",
            key,
            lambda: {
                "features": encode_texts(
                    texts,
                    opts.model,
                    opts.pooling,
                    opts.batch_size,
                    opts.max_length,
                    ctx.device,
                    ctx.quiet,
                )
            },
        )["features"]
        self.register_buffer("features", feats.float(), persistent=False)
        self.head = ProjectionHead(feats.shape[1], ctx.dim)

    def poi_view(self, idx: Tensor, query: Tensor | None = None) -> PoiView:
        emb = self.head(self.features[idx.to(self.features.device)])
        return PoiView(emb, torch.ones(len(idx), dtype=torch.bool, device=emb.device))
