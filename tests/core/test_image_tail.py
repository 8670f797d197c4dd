"""Fine-tuning ResNet18's last stages on cached activations of its frozen part."""

import numpy as np
import pytest
import torch

from mfm.core.encoders import build_resnet18, normalize_images
from mfm.core.errors import MfmError
from mfm.core.image_tail import ResNetTail, resnet_prefix


def _images(n=6, size=64):
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, size, size, 3), generator=gen, dtype=torch.uint8)


@pytest.mark.parametrize("blocks", [1, 2])
def test_tail_on_the_cached_prefix_is_the_frozen_network(blocks):
    x = normalize_images(_images())
    with torch.no_grad():
        full = build_resnet18("none")(x)
        prefix = resnet_prefix("none", blocks)(x).half()  # as cached
        tail = ResNetTail("none", blocks).train()  # batch norms stay in eval mode
        out = tail(prefix.float())
    cos = torch.nn.functional.cosine_similarity(out, full, dim=1)
    assert cos.min() > 0.999
    assert not any(m.training for m in tail.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_blocks_are_checked():
    with pytest.raises(MfmError, match="finetune_blocks"):
        ResNetTail("none", 3)


def _sat(m, idx):
    return m.region_view(idx[: len(m.features)])


def _svi(m, idx):
    return m.group_views(idx[: m.num_groups])


def _polygon(m, idx):
    return m.poi_view(idx).emb


@pytest.mark.parametrize(
    ("module", "cls", "view"),
    [
        ("mfm.plugins.sat.modality", "SatModality", _sat),
        ("mfm.plugins.svi.modality", "SviModality", _svi),
        ("mfm.plugins.polygon.modality", "PolygonModality", _polygon),
    ],
)
def test_image_fine_tuning_starts_frozen_and_trains_the_last_stage(
    tiny_city, cache_dir, module, cls, view
):
    import importlib

    from mfm.core.bundle import City
    from mfm.core.cache import FeatureCache
    from mfm.core.config import make_config
    from mfm.core.modality import Context

    modality = getattr(importlib.import_module(module), cls)
    city = City.load(tiny_city)
    ctx = Context(city, make_config(city=tiny_city), FeatureCache(cache_dir), torch.device("cpu"),
                  32, quiet=True)  # fmt: skip
    frozen = modality(modality.Options(precision="fp32"))
    tuned = modality(modality.Options(finetune_blocks=1))
    torch.manual_seed(0)
    frozen.prepare(ctx)
    torch.manual_seed(0)
    tuned.prepare(ctx)
    idx = torch.arange(min(len(city.pois), 64))
    with torch.no_grad():
        a, b = view(frozen, idx), view(tuned, idx)
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-2)  # same start (fp16 cache)
    before = [p.detach().clone() for p in tuned.tail.parameters()]
    opt = torch.optim.SGD(tuned.parameters(), lr=0.1)
    view(tuned, idx).pow(2).mean().backward()
    opt.step()
    moved = [not torch.equal(p0, p) for p0, p in zip(before, tuned.tail.parameters(), strict=True)]
    assert any(moved)
    assert torch.equal(tuned.raw_features(), frozen.raw_features())  # raw stays the frozen one
