"""Fine-tuning the last blocks of a ResNet18 image backbone, in bounded memory.

With ``finetune_blocks = k`` (k = 1: ``layer4``; k = 2: ``layer3`` and ``layer4``) an
image modality keeps the output of the frozen rest of the network (the stem and the
first ``4 - k`` stages) for every image, computed once and stored in the feature cache as
float16, and trains only the last ``k`` stages (and the pooling) on them. A step then
runs ``k`` stages on the batch's images only: no image is decoded again, no activation of
the frozen part is kept for backward, and memory grows with the batch, not the city.
At 64 x 64 pixels the cached activation is 256 x 4 x 4 values per image for k = 1 and
128 x 8 x 8 for k = 2 (8 KB and 16 KB in float16).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from mfm.core.encoders import build_resnet18, normalize_images
from mfm.core.errors import MfmError
from mfm.core.progress import progress_bar

if TYPE_CHECKING:
    from mfm.core.modality import Context

STAGES = ("layer1", "layer2", "layer3", "layer4")
FINETUNE_HELP = (
    "0: frozen, cached features; k = 1 or 2: train ResNet18's last k stages on cached "
    "activations of the frozen rest (mfm.core.image_tail; meant for GPUs)"
)


def _check(blocks: int) -> None:
    if blocks not in (1, 2):
        raise MfmError(f"finetune_blocks must be 0, 1 or 2, not {blocks}")


def resnet_prefix(weights: str, blocks: int) -> nn.Module:
    """The frozen part of ResNet18 before its last ``blocks`` stages (uint8-normalized
    ``[B, 3, H, W]`` -> ``[B, C, h, w]``)."""
    _check(blocks)
    net = build_resnet18(weights)
    keep = STAGES[: len(STAGES) - blocks]
    layers = [net.conv1, net.bn1, net.relu, net.maxpool, *(getattr(net, s) for s in keep)]
    return nn.Sequential(*layers).eval()


class ResNetTail(nn.Module):
    """The last ``blocks`` stages of ResNet18 and its pooling: ``[B, C, h, w] -> [B, 512]``.

    Its batch norms stay in eval mode (running statistics of the backbone), so that a small
    contrastive batch does not rewrite them and its output at init equals the frozen
    features exactly.
    """

    def __init__(self, weights: str, blocks: int) -> None:
        super().__init__()
        _check(blocks)
        net = build_resnet18(weights)
        self.stages = nn.Sequential(*(getattr(net, s) for s in STAGES[len(STAGES) - blocks :]))

    def train(self, mode: bool = True) -> ResNetTail:
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        param = next(self.parameters())
        return self.stages(x.to(param.device, param.dtype)).mean(dim=(2, 3))


@torch.inference_mode()
def encode_prefix(
    images: torch.utils.data.Dataset,
    weights: str,
    blocks: int,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    quiet: bool = False,
    label: str = "encode images (frozen part)",
) -> Tensor:
    """Activations of :func:`resnet_prefix` for a dataset of uint8 ``[H, W, 3]`` images,
    float16 ``[N, C, h, w]``."""
    net = resnet_prefix(weights, blocks).to(device)
    loader = torch.utils.data.DataLoader(images, batch_size=batch_size, num_workers=num_workers)
    out = []
    with progress_bar(label, len(images), quiet, unit="img") as bar:
        for batch in loader:
            out.append(net(normalize_images(batch.to(device))).half().cpu())
            bar.advance(len(batch))
    return torch.cat(out)


def cached_prefix(
    ctx: Context,
    kind: str,
    key: dict[str, object],
    images: Callable[[], torch.utils.data.Dataset],
    weights: str,
    blocks: int,
    batch_size: int,
    label: str,
) -> Tensor:
    """:func:`encode_prefix` of ``images()`` through the feature cache (``<kind>-prefix``,
    ``key`` plus ``blocks``): float16 ``[N, C, h, w]``."""

    def compute() -> dict[str, Tensor]:
        act = encode_prefix(
            images(), weights, blocks, batch_size, ctx.device, ctx.config.num_workers, ctx.quiet,
            label,
        )  # fmt: skip
        return {"prefix": act}

    parts = key | {"finetune_blocks": blocks}
    return ctx.cache.get_or_compute(f"{kind}-prefix", parts, compute)["prefix"]
