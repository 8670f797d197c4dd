"""Fine-tuning the text encoder's last layers in bounded memory (``finetune_layers = k``).

A batch of L_poi touches every POI of its roads (~3,200 for 256 roads of the medium
synthetic city), so autograd through the whole encoder for all of them at once costs
tens of GB. Three things bound a step by the micro-batch instead of the contrastive batch:

- The frozen part (the embeddings and the first ``n - k`` of ``n`` layers) is a fixed
  function: it always runs without dropout and without autograd. For ``k < n`` its output
  for every POI is computed once and kept in the feature cache (float32, real tokens
  only, packed), so a step runs only the ``k`` trainable layers.
- A batch's POIs are sorted by token count and encoded ``micro_batch`` at a time, each
  micro-batch trimmed to its own longest text (POI texts are short: mean 13 tokens, max 37
  on the medium city).
- Each micro-batch runs under non-reentrant activation checkpointing
  (``torch.utils.checkpoint``): its forward keeps only its row indices, and the backward
  recomputes it (with the same dropout masks) and backpropagates through it, one
  micro-batch at a time. Peak memory is one micro-batch's activations plus the ``[B,
  hidden]`` pooled features, and the gradients are those of the whole batch at once: the
  bound of GradCache (Gao et al. 2021) without its extra pass and hand-written backward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mfm.core.errors import ConfigError

SELF_CHECK_TEXTS = 16  # POIs on which the split encoder is compared with the whole one
SELF_CHECK_ATOL = 1e-4


def transformer_layers(encoder: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks of a BERT-like encoder."""
    for path in ("encoder.layer", "transformer.layer", "layers"):
        module: object = encoder
        for part in path.split("."):
            module = getattr(module, part, None)
        if isinstance(module, nn.ModuleList):
            return module
    raise ConfigError("[plugin.osm] finetune_layers: cannot find the encoder's layers")


def can_split(encoder: nn.Module) -> bool:
    """Whether the encoder is BERT-like (``embeddings`` then ``encoder.layer``), so that
    its layers can run one by one on cached inputs."""
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    return hasattr(encoder, "embeddings") and isinstance(layers, nn.ModuleList)


def layer_mask(encoder: nn.Module, hidden: Tensor, mask: Tensor) -> Tensor | None:
    """The attention mask the encoder's layers expect, as its own forward builds it."""
    try:
        from transformers.masking_utils import create_bidirectional_mask
    except ImportError:  # transformers < 5: the additive [B, 1, 1, L] mask
        return encoder.get_extended_attention_mask(mask, mask.shape)  # type: ignore[operator]
    return create_bidirectional_mask(
        config=encoder.config, inputs_embeds=hidden, attention_mask=mask
    )


def run_layers(encoder: nn.Module, layers: list[nn.Module], hidden: Tensor, mask: Tensor) -> Tensor:
    """``hidden`` ``[B, L, H]`` through ``layers`` of ``encoder`` (``mask`` ``[B, L]``)."""
    if not layers:
        return hidden
    extended = layer_mask(encoder, hidden, mask)
    for layer in layers:
        out = layer(hidden, extended)
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


def frozen_part(encoder: nn.Module, frozen: int, input_ids: Tensor, mask: Tensor) -> Tensor:
    """Output ``[B, L, H]`` of the embeddings and the first ``frozen`` layers (no autograd;
    the caller keeps these modules in eval mode)."""
    with torch.no_grad():
        hidden = encoder.embeddings(input_ids=input_ids)  # type: ignore[operator]
        layers = list(transformer_layers(encoder)[:frozen])
        return run_layers(encoder, layers, hidden, mask)


def encode_prefix(
    encoder: nn.Module, frozen: int, input_ids: Tensor, lengths: Tensor, batch_size: int
) -> Tensor:
    """:func:`frozen_part` of every text, packed: ``[sum(lengths), H]`` float32, the real
    tokens of text 0, then of text 1, ... (right padding, as the tokenizer is set up)."""
    device = next(encoder.parameters()).device
    input_ids, lengths = input_ids.cpu(), lengths.cpu()
    order = torch.argsort(lengths, stable=True)
    offsets = torch.cumsum(lengths, 0) - lengths
    packed = torch.empty(int(lengths.sum()), encoder.config.hidden_size)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = int(lengths[rows].max())
        mask = length_mask(lengths[rows], width)
        ids = input_ids[rows, :width].to(device)
        hidden = frozen_part(encoder, frozen, ids, mask.to(device)).float().cpu()
        real = mask.bool()
        packed[(offsets[rows, None] + torch.arange(width))[real]] = hidden[real]
    return packed


def gather_packed(packed: Tensor, offsets: Tensor, lengths: Tensor, width: int) -> Tensor:
    """Rows of :func:`encode_prefix` as a padded ``[B, width, H]`` batch (zeros in the
    padding, which the attention mask hides)."""
    mask = length_mask(lengths, width).bool()
    pos = offsets[:, None] + torch.arange(width, device=offsets.device)
    out = packed.new_zeros(len(lengths), width, packed.shape[1])
    out[mask] = packed[pos[mask]]
    return out


def length_mask(lengths: Tensor, width: int) -> Tensor:
    """The attention mask ``[B, width]`` (1 on real tokens) of right-padded texts."""
    return (torch.arange(width, device=lengths.device) < lengths[:, None]).long()


def micro_batches(lengths: Tensor, size: int) -> tuple[list[Tensor], Tensor]:
    """Positions ``0..B-1`` sorted by ``lengths`` and cut into chunks of ``size`` (one
    chunk when ``size`` is 0), and the permutation that restores the original order."""
    order = torch.argsort(lengths, stable=True)
    chunks = [order] if size <= 0 else list(torch.split(order, size))
    return chunks, torch.argsort(order)


def encode_micro_batched(
    fn: Callable[[Tensor], Tensor], rows: Tensor, lengths: Tensor, size: int
) -> Tensor:
    """``fn`` (rows -> ``[b, H]``) over ``rows`` in length-sorted micro-batches of ``size``,
    each checkpointed when autograd records (``size`` > 0); ``[B, H]`` in ``rows``' order."""
    chunks, restore = micro_batches(lengths, size)
    record = size > 0 and torch.is_grad_enabled()
    outs = [checkpoint(fn, rows[c], use_reentrant=False) if record else fn(rows[c]) for c in chunks]
    return torch.cat(outs)[restore.to(rows.device)]
