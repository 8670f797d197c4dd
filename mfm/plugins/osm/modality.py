"""POI text: OSM tags serialized "k: v, k: v", a frozen transformers encoder, a trainable head."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from mfm.core.encoders import load_text_encoder, pool, text_backbone
from mfm.core.errors import ConfigError
from mfm.core.heads import ProjectionHead
from mfm.core.modality import Context, Modality, PoiView, View, freeze
from mfm.core.progress import log
from mfm.core.text import SERIALIZER, TextOptions, poi_text_features, serialize_tags
from mfm.plugins.osm.finetune import (
    SELF_CHECK_ATOL,
    SELF_CHECK_TEXTS,
    can_split,
    encode_micro_batched,
    encode_prefix,
    frozen_part,
    gather_packed,
    length_mask,
    run_layers,
    transformer_layers,
)


class OsmOptions(TextOptions):
    """Options of the ``osm`` plugin (``[plugin.osm]`` in the run config)."""

    finetune_layers: int = Field(
        0, ge=0, description="0: frozen encoder, cached features; k: train its last k layers"
    )
    micro_batch: int = Field(
        64,
        ge=0,
        description=(
            "fine-tuning: POIs per encoder forward; each micro-batch is recomputed in the "
            "backward (activation checkpointing), so memory is set by it, not by the batch, "
            "and gradients are the whole batch's; 0: one forward keeping every activation"
        ),
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
        self._trainable: list[nn.Module] = []  # its last finetune_layers layers
        self._frozen = 0  # layers below them
        self._split = False  # layers run one by one (BERT-like), the frozen part cached

    def backbone(self) -> dict[str, object] | None:
        return dict(text_backbone(self.options.model))

    def prepare(self, ctx: Context) -> None:
        opts = self.options
        feats = poi_text_features(ctx.city, opts, ctx.cache, ctx.device, ctx.quiet)
        self.register_buffer("features", feats.float(), persistent=False)
        self.head = ProjectionHead(feats.shape[1], ctx.dim, inputs=feats)
        if opts.finetune_layers:
            self._prepare_finetuning(ctx, opts)

    def _prepare_finetuning(self, ctx: Context, opts: OsmOptions) -> None:
        """Keep the encoder in the model; only its last ``finetune_layers`` layers train.

        The rest runs as a fixed function (eval mode, no autograd); on a BERT-like encoder
        its output for every POI is computed once (``mfm.plugins.osm.finetune``)."""
        tokenizer, encoder = load_text_encoder(opts.model)
        layers = transformer_layers(encoder)
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
        tokenizer.padding_side = "right"  # the packed prefix and length masks assume it
        tokens = tokenizer(
            [serialize_tags(t) for t in ctx.city.poi_tags()],
            padding="max_length",
            truncation=True,
            max_length=opts.max_length,
            return_tensors="pt",
        )
        self.register_buffer("input_ids", tokens["input_ids"], persistent=False)
        self.register_buffer("lengths", tokens["attention_mask"].sum(1), persistent=False)
        self.encoder = encoder.to(ctx.device)
        self._trainable = list(layers[-opts.finetune_layers :])
        self._frozen = len(layers) - opts.finetune_layers
        self._split = can_split(encoder) and self._split_matches(ctx.device)
        if not self._split and not ctx.quiet:
            log(f"[plugin.osm] {opts.model}: not BERT-like, its frozen layers run every step")
        if self._split and self._frozen:
            self.register_buffer("prefix", self._cached_prefix(ctx), persistent=False)
            offsets = torch.cumsum(self.lengths, 0) - self.lengths
            self.register_buffer("offsets", offsets, persistent=False)

    def _split_matches(self, device: torch.device) -> bool:
        """Whether running the layers one by one reproduces the encoder's own forward."""
        assert self.encoder is not None
        rows = torch.arange(min(SELF_CHECK_TEXTS, len(self.lengths)))
        width = int(self.lengths[rows].max())
        ids = self.input_ids[rows, :width].to(device)
        mask = length_mask(self.lengths[rows], width).to(device)
        with torch.no_grad():
            whole = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            try:
                hidden = frozen_part(self.encoder, self._frozen, ids, mask)
                split = run_layers(self.encoder, self._trainable, hidden, mask)
            except (TypeError, AttributeError, ValueError, RuntimeError):
                return False
        real = mask.bool()
        return bool(torch.allclose(split[real], whole[real], atol=SELF_CHECK_ATOL))

    def _cached_prefix(self, ctx: Context) -> Tensor:
        """The frozen part's output for every POI, packed (through the feature cache)."""
        opts = self.options
        assert self.encoder is not None
        encoder, frozen = self.encoder, self._frozen

        def compute() -> dict[str, Tensor]:
            packed = encode_prefix(encoder, frozen, self.input_ids, self.lengths, opts.batch_size)
            return {"prefix": packed}

        parts = {
            "model": opts.model,
            "weights": text_backbone(opts.model)["sha256"],
            "max_length": opts.max_length,
            "serializer": SERIALIZER,
            "pois": ctx.city.fingerprint("pois"),
            "frozen_layers": frozen,
        }
        return ctx.cache.get_or_compute("text-prefix", parts, compute)["prefix"].float()

    def train(self, mode: bool = True) -> OsmText:
        """Only the trainable layers follow ``mode`` (dropout); the frozen part stays eval."""
        super().train(mode)
        if self.encoder is not None:
            self.encoder.eval()
            for layer in self._trainable:
                layer.train(mode)
        return self

    def _encode_rows(self, rows: Tensor) -> Tensor:
        """Pooled features ``[b, hidden]`` of POIs ``rows`` through the live encoder."""
        assert self.encoder is not None
        lengths = self.lengths[rows]
        width = int(lengths.max())
        mask = length_mask(lengths, width)
        if not self._split:
            ids = self.input_ids[rows, :width]
            hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        else:
            if self._frozen:
                hidden = gather_packed(self.prefix, self.offsets[rows], lengths, width)
            else:
                hidden = frozen_part(self.encoder, 0, self.input_ids[rows, :width], mask)
            hidden = run_layers(self.encoder, self._trainable, hidden, mask)
        return pool(hidden, mask, self.options.pooling)

    def poi_view(self, idx: Tensor, query: Tensor | None = None) -> PoiView:
        idx = idx.to(self.features.device)
        if self.encoder is None:
            feats = self.features[idx]
        else:
            feats = encode_micro_batched(
                self._encode_rows, idx, self.lengths[idx], self.options.micro_batch
            )
        emb = self.head(feats)
        return PoiView(emb, torch.ones(len(idx), dtype=torch.bool, device=emb.device))
