"""POI text: OSM tags serialized "k: v, k: v", a frozen transformers encoder, a trainable head."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from mfm.core.encoders import load_text_encoder, pool
from mfm.core.errors import ConfigError
from mfm.core.heads import ProjectionHead
from mfm.core.modality import Context, Modality, PoiView, View, freeze
from mfm.core.text import TextOptions, poi_text_features, serialize_tags


class OsmOptions(TextOptions):
    """Options of the ``osm`` plugin (``[plugin.osm]`` in the run config)."""

    finetune_layers: int = Field(
        0, ge=0, description="0: frozen encoder, cached features; k: train its last k layers"
    )


class OsmText(Modality):
    """The POI text view E_t (Eq. 3): the anchor every other POI view is compared with."""

    name = "osm"
    layers = ("pois",)
    views = frozenset({View.POI})
    anchor = True
    Options = OsmOptions
    options: OsmOptions

    def __init__(self, options: OsmOptions | None = None) -> None:
        super().__init__(options)
        self.encoder: nn.Module | None = None  # the transformer, only when fine-tuning

    def backbone(self) -> dict[str, object] | None:
        from mfm.core.encoders import text_backbone

        return dict(text_backbone(self.options.model))

    def prepare(self, ctx: Context) -> None:
        opts = self.options
        feats = poi_text_features(ctx.city, opts, ctx.cache, ctx.device, ctx.quiet)
        self.register_buffer("features", feats.float(), persistent=False)
        self.head = ProjectionHead(feats.shape[1], ctx.dim, inputs=feats)
        if opts.finetune_layers:
            self._prepare_finetuning([serialize_tags(t) for t in ctx.city.poi_tags()], opts)

    def _prepare_finetuning(self, texts: list[str], opts: OsmOptions) -> None:
        """Keep the encoder in the model; only its last ``finetune_layers`` layers train."""
        tokenizer, encoder = load_text_encoder(opts.model)
        layers = _transformer_layers(encoder)
        if opts.finetune_layers > len(layers):
            raise ConfigError(
                f"[plugin.osm] finetune_layers={opts.finetune_layers}: {opts.model} has "
                f"{len(layers)} layers"
            )
        freeze(encoder)
        for layer in layers[-opts.finetune_layers :]:
            for p in layer.parameters():
                p.mfm_frozen = False
                p.requires_grad_(True)
        tokens = tokenizer(
            texts,
            padding="max_length",
            truncation=True,
            max_length=opts.max_length,
            return_tensors="pt",
        )
        self.register_buffer("input_ids", tokens["input_ids"], persistent=False)
        self.register_buffer("attention_mask", tokens["attention_mask"], persistent=False)
        self.encoder = encoder

    def poi_view(self, idx: Tensor, query: Tensor | None = None) -> PoiView:
        idx = idx.to(self.features.device)
        if self.encoder is None:
            feats = self.features[idx]
        else:
            mask = self.attention_mask[idx]
            width = int(mask.sum(1).max())  # trim padding shared by the whole batch
            mask = mask[:, :width]
            hidden = self.encoder(input_ids=self.input_ids[idx, :width], attention_mask=mask)
            feats = pool(hidden.last_hidden_state, mask, self.options.pooling)
        emb = self.head(feats)
        return PoiView(emb, torch.ones(len(idx), dtype=torch.bool, device=emb.device))


def _transformer_layers(encoder: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks of a BERT-like encoder."""
    for path in ("encoder.layer", "transformer.layer", "layers"):
        module: object = encoder
        for part in path.split("."):
            module = getattr(module, part, None)
        if isinstance(module, nn.ModuleList):
            return module
    raise ConfigError("[plugin.osm] finetune_layers: cannot find the encoder's layers")
