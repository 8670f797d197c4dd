"""Text-encoder fine-tuning in bounded memory: micro-batches, checkpointing, cached prefix."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor

from mfm.core.bundle.city import City
from mfm.core.cache import FeatureCache
from mfm.core.config import RunConfig, make_config, plugin_options
from mfm.core.encoders import load_text_encoder, pool
from mfm.core.errors import ConfigError
from mfm.core.losses import info_nce
from mfm.core.modality import Context, PoiView
from mfm.core.model import UrbanModel
from mfm.plugins.osm.finetune import length_mask, micro_batches
from mfm.plugins.osm.modality import OsmOptions, OsmText
from mfm.plugins.osm.objective import PoiRoadObjective


def _setup(tiny_city, cache_dir, **opts) -> tuple[UrbanModel, PoiRoadObjective, OsmText]:
    city = City.load(tiny_city)
    cfg = RunConfig(city=tiny_city)
    ctx = Context(city, cfg, FeatureCache(cache_dir), torch.device("cpu"), 16, quiet=True)
    torch.manual_seed(0)
    text = OsmText(OsmOptions(max_length=32, **opts))
    text.prepare(ctx)
    obj = PoiRoadObjective()
    model = UrbanModel([text], [obj], 16)
    obj.prepare(ctx)
    return model, obj, text


def _plain_view(text: OsmText, idx: Tensor, query: Tensor | None = None) -> PoiView:
    """The unbounded reference: the whole encoder on the whole batch, every activation kept."""
    lengths = text.lengths[idx]
    mask = length_mask(lengths, int(lengths.max()))
    ids = text.input_ids[idx, : mask.shape[1]]
    hidden = text.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    emb = text.head(pool(hidden, mask, text.options.pooling))
    return PoiView(emb, torch.ones(len(idx), dtype=torch.bool))


def _loss_and_grads(model, obj, params) -> tuple[Tensor, list[Tensor]]:
    idx = torch.arange(obj.num_items())
    loss = model("poi", idx, torch.Generator().manual_seed(3))
    return loss.detach(), list(torch.autograd.grad(loss, params))


def _assert_grads_close(got: list[Tensor], want: list[Tensor]) -> None:
    scale = max(float(w.abs().max()) for w in want)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("layers", [1, 6])
def test_bounded_path_has_the_plain_loss_and_gradients(tiny_city, cache_dir, layers):
    model, obj, text = _setup(tiny_city, cache_dir, finetune_layers=layers, micro_batch=4)
    assert text._split and hasattr(text, "prefix") == (layers < 6)  # the path under test
    model.eval()  # no dropout: both paths compute the same function
    params = [p for p in text.parameters() if p.requires_grad]
    assert any(p is text.encoder.encoder.layer[5].output.dense.weight for p in params)
    loss, grads = _loss_and_grads(model, obj, params)
    text.poi_view = lambda idx, query=None: _plain_view(text, idx, query)  # type: ignore[method-assign]
    ref_loss, ref_grads = _loss_and_grads(model, obj, params)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    _assert_grads_close(grads, ref_grads)


def test_checkpointed_recompute_replays_dropout(tiny_city, cache_dir):
    _, _, text = _setup(tiny_city, cache_dir, finetune_layers=2, micro_batch=8)
    text.train()
    assert not text.encoder.embeddings.training and text.encoder.encoder.layer[5].training
    params = [p for p in text.parameters() if p.requires_grad]
    idx = torch.arange(40)
    weights = torch.randn(40, 16, generator=torch.Generator().manual_seed(1))

    def grads(view: Tensor) -> list[Tensor]:
        return list(torch.autograd.grad((view * weights).sum(), params))

    torch.manual_seed(5)
    got = grads(text.poi_view(idx).emb)  # checkpointed: recomputed in the backward
    torch.manual_seed(5)
    chunks, restore = micro_batches(text.lengths[idx], 8)
    feats = torch.cat([text._encode_rows(idx[c]) for c in chunks])[restore]
    want = grads(text.head(feats))  # the same micro-batches, activations kept
    _assert_grads_close(got, want)
    with torch.no_grad():
        eval_feats = text.eval().poi_view(idx).emb
    assert not torch.allclose(eval_feats, text.head(feats))  # dropout was on


def _saved_bytes(fn) -> int:
    """Bytes of the tensors autograd keeps for the backward while ``fn`` runs (outside
    checkpointed regions, which keep their own)."""
    total = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def test_kept_activations_do_not_grow_with_the_encoder(tiny_city, cache_dir):
    _, _, text = _setup(tiny_city, cache_dir, finetune_layers=6, micro_batch=8)
    idx = torch.arange(96)
    bounded = _saved_bytes(lambda: text.poi_view(idx))
    plain = _saved_bytes(lambda: _plain_view(text, idx))
    hidden = text.encoder.config.hidden_size
    # bounded: the head's inputs and the pooled features, a few rows of width hidden per POI
    assert bounded < 8 * len(idx) * hidden * 4
    assert plain > 20 * bounded  # every layer's activations of every token


def test_frozen_prefix_is_cached_and_matches_the_encoder(tiny_city, tmp_path):
    cache = FeatureCache(tmp_path)
    city = City.load(tiny_city)
    ctx = Context(city, RunConfig(city=tiny_city), cache, torch.device("cpu"), 16, quiet=True)
    a, b = OsmText(OsmOptions(finetune_layers=2)), OsmText(OsmOptions(finetune_layers=2))
    a.prepare(ctx)
    hits = cache.hits
    b.prepare(ctx)
    assert cache.hits == hits + 2  # the text features and the prefix
    assert torch.equal(a.prefix, b.prefix) and len(a.prefix) == int(a.lengths.sum())
    # the packed prefix of POI 3 is what the first 4 layers make of its tokens
    _, encoder = load_text_encoder(a.options.model)
    n = int(a.lengths[3])
    with torch.no_grad():
        out = encoder(input_ids=a.input_ids[3:4, :n], output_hidden_states=True)
    start = int(a.offsets[3])
    torch.testing.assert_close(a.prefix[start : start + n], out.hidden_states[4][0])


def test_poi_loss_encodes_each_poi_once(tiny_city, cache_dir):
    model, obj, text = _setup(tiny_city, cache_dir)
    seen: list[int] = []
    view = text.poi_view

    def counting(idx: Tensor, query: Tensor | None = None) -> PoiView:
        seen.append(len(idx))
        return view(idx, query)

    text.poi_view = counting  # type: ignore[method-assign]
    idx = torch.arange(obj.num_items())
    loss = model("poi", idx, torch.Generator().manual_seed(0))
    roads = obj.roads[idx]
    assert seen == [int((obj.ptr[roads + 1] - obj.ptr[roads]).sum())]
    # the anchor is its road's row: the loss of encoding the anchors apart (frozen encoder)
    rng = torch.Generator().manual_seed(0)
    start, count = obj.ptr[roads], obj.ptr[roads + 1] - obj.ptr[roads]
    pick = start + (torch.rand(len(roads), generator=rng) * count).long()
    rows = [obj.members[s : s + c] for s, c in zip(start, count, strict=True)]
    means = torch.stack([view(r).emb.mean(0) for r in rows])
    ref = info_nce(view(obj.members[pick]).emb, means, obj.options.tau)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)


def test_micro_batch_option_validates():
    assert OsmOptions().micro_batch == 64
    assert OsmOptions(micro_batch=0).micro_batch == 0
    for bad in (-1, "many", 2.5):
        cfg = make_config(plugin={"osm": {"finetune_layers": 2, "micro_batch": bad}})
        with pytest.raises(ConfigError, match=r"\[plugin.osm\] option 'micro_batch'"):
            plugin_options(cfg, "plugin", "osm", OsmOptions)


def test_short_finetuning_run(tiny_city, tmp_path):
    from mfm.core.pipeline import run

    config = RunConfig(
        city=tiny_city,
        out=tmp_path / "run",
        plugins=["osm"],
        scales=["micro"],
        device="cpu",
        epochs=1,
        batch_size=8,
        max_steps_per_epoch=2,
        lr=1e-2,
        quiet=True,
        cache_dir=tmp_path / "cache",
        plugin={"osm": {"finetune_layers": 2, "micro_batch": 16, "max_length": 32}},
    )
    result = run(config)
    manifest = json.loads(result.manifest.read_text())
    (stage,) = manifest["stages"]
    assert stage["name"] == "poi" and stage["steps"] == 2
    assert all(torch.isfinite(torch.tensor(stage["losses"])))
    state = load_file(tmp_path / "run" / "model.safetensors")
    _, pretrained = load_text_encoder("all-MiniLM-L6-v2")
    ref = dict(pretrained.named_parameters())
    name = "encoder.layer.5.output.dense.weight"
    assert not torch.allclose(state[f"modalities.osm.encoder.{name}"].float(), ref[name])
    name = "encoder.layer.3.output.dense.weight"  # frozen: only rounded to float16
    torch.testing.assert_close(
        state[f"modalities.osm.encoder.{name}"].float(), ref[name], atol=1e-3, rtol=1e-3
    )
