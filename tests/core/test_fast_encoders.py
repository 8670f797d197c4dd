"""The fast (bf16) extraction paths: close to fp32 per item, keyed apart in the cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from mfm.core import encoders
from mfm.core.bundle.city import City
from mfm.core.cache import FeatureCache
from mfm.core.constants import SVI_DIRECTIONS
from mfm.core.encoders import ImageFiles, encode_images, encode_texts, resolve_precision
from mfm.core.errors import ConfigError
from mfm.core.text import TextOptions, poi_text_features, serialize_tags, text_cache_key

EXTRA_TEXTS = [
    "amenity: cafe, name: Roast",
    "shop: bakery, name: Bäckerei Müller, addr:street: Hauptstraße, addr:housenumber: 12",
    "tourism: artwork",
    "leisure: park, name: Tiergarten",
    "amenity: school, name: Gymnasium am Wald, operator: Land Berlin",
    "highway: bus_stop, name: S Bahnhof, shelter: yes, bench: yes",
]


def _per_item(fast: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row cosine, raw and centred on the fp32 mean (features that share a large common
    direction, like random-init ResNet ones, have raw cosine ~0.99 even between items)."""
    cos = torch.nn.functional.cosine_similarity
    mean = ref.mean(0)
    return cos(fast, ref, dim=1), cos(fast - mean, ref - mean, dim=1)


def test_bf16_texts_match_fp32_per_item(tiny_city: Path) -> None:
    texts = [serialize_tags(t) for t in City.load(tiny_city).poi_tags()][:42] + EXTRA_TEXTS
    assert len(texts) >= 36
    ref = encode_texts(texts, quiet=True, precision="fp32")
    fast = encode_texts(texts, quiet=True, precision="bf16")
    assert fast.dtype == torch.float32 and fast.shape == ref.shape
    assert not torch.equal(fast, ref)  # bf16 really ran
    raw, centred = _per_item(fast, ref)
    assert raw.min() >= 0.99, raw.min()
    assert centred.min() >= 0.99, centred.min()


def test_bf16_images_match_fp32_per_item(tiny_city: Path) -> None:
    city = City.load(tiny_city)
    rel = city.layer("svi")[list(SVI_DIRECTIONS)].to_numpy().reshape(-1)[:48]
    images = ImageFiles([city.path(p) for p in rel], 64)
    ref = encode_images(images, batch_size=16, quiet=True, precision="fp32")
    fast = encode_images(images, batch_size=16, quiet=True, precision="bf16")
    assert fast.shape == ref.shape == (len(rel), encoders.RESNET_DIM)
    assert not torch.equal(fast, ref)
    raw, centred = _per_item(fast, ref)
    assert raw.min() >= 0.99, raw.min()
    assert centred.min() >= 0.95, centred.min()


def test_precision_is_part_of_the_text_cache_key(
    tiny_city: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    city = City.load(tiny_city)
    fp32 = text_cache_key(city, TextOptions(precision="fp32"))
    bf16 = text_cache_key(city, TextOptions(precision="bf16"))
    assert fp32 != bf16
    assert {k: v for k, v in fp32.items() if k != "precision"} == {
        k: v for k, v in bf16.items() if k != "precision"
    }
    for native, expected in ((False, fp32), (True, bf16)):  # auto: resolved, then keyed
        monkeypatch.setattr(encoders, "native_bf16", lambda device, n=native: n)
        assert text_cache_key(city, TextOptions(precision="auto")) == expected


def test_auto_is_fp32_when_fine_tuning(tiny_city: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mfm.plugins.osm.modality import OsmOptions

    city = City.load(tiny_city)
    monkeypatch.setattr(encoders, "native_bf16", lambda device: True)
    assert text_cache_key(city, OsmOptions())["precision"] == "bf16"
    assert text_cache_key(city, OsmOptions(finetune_layers=1))["precision"] == "fp32"
    assert (
        text_cache_key(city, OsmOptions(finetune_layers=1, precision="bf16"))["precision"] == "bf16"
    )


def test_cached_fp32_features_are_not_served_to_bf16(tiny_city: Path, tmp_path: Path) -> None:
    city = City.load(tiny_city)
    cache = FeatureCache(tmp_path / "cache")
    fp32 = poi_text_features(city, TextOptions(precision="fp32"), cache, quiet=True)
    bf16 = poi_text_features(city, TextOptions(precision="bf16"), cache, quiet=True)
    assert cache.misses == 2 and cache.hits == 0
    assert not torch.equal(fp32, bf16)
    again = poi_text_features(city, TextOptions(precision="fp32"), cache, quiet=True)
    assert cache.hits == 1 and torch.equal(again, fp32)


def test_precision_validates() -> None:
    assert TextOptions().precision == "auto"
    assert TextOptions(precision="bf16").precision == "bf16"
    for bad in ("int8", "fp16", "BF16"):
        with pytest.raises(ValidationError):
            TextOptions(precision=bad)  # type: ignore[arg-type]
    assert resolve_precision("fp32") == "fp32"
    assert resolve_precision("auto") in ("fp32", "bf16")
    with pytest.raises(ConfigError, match=r"precision .int8."):
        resolve_precision("int8")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"precision .int8."):
        encode_texts(["amenity: cafe"], quiet=True, precision="int8")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="image precision"):
        encode_images(ImageFiles([], 64), quiet=True, precision="int8")  # type: ignore[arg-type]


def test_auto_precision_follows_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    assert encoders.native_bf16("meta") is False
    assert encoders.native_bf16("cpu") in (True, False)
    for native, expected in ((False, "fp32"), (True, "bf16")):
        monkeypatch.setattr(encoders, "native_bf16", lambda device, n=native: n)
        assert resolve_precision("auto", "cpu") == expected
