import torch

from mfm.core.bundle.city import City
from mfm.core.cache import FeatureCache
from mfm.core.config import RunConfig
from mfm.core.modality import Context
from mfm.core.model import UrbanModel
from mfm.plugins.osm.modality import OsmText, serialize_tags
from mfm.plugins.osm.objective import PoiRoadObjective


def test_serialize_tags():
    assert serialize_tags({"amenity": "cafe", "name": "Roast"}) == "amenity: cafe, name: Roast"


def _model(tiny_city, cache_dir):
    city = City.load(tiny_city)
    ctx = Context(city, RunConfig(city=tiny_city), FeatureCache(cache_dir), torch.device("cpu"), 32)
    text = OsmText()
    text.prepare(ctx)
    obj = PoiRoadObjective()
    model = UrbanModel([text], [obj], 32)
    obj.prepare(ctx)
    return model, obj, text


def test_features_are_cached(tiny_city, tmp_path):
    cache = FeatureCache(tmp_path)
    city = City.load(tiny_city)
    ctx = Context(city, RunConfig(city=tiny_city), cache, torch.device("cpu"), 16)
    a, b = OsmText(), OsmText()
    a.prepare(ctx)
    b.prepare(ctx)
    assert cache.misses == 1 and cache.hits == 1
    assert torch.equal(a.features, b.features) and a.features.shape == (len(city.pois), 384)


def test_road_groups_and_positive_beats_shuffled(tiny_city, cache_dir):
    _, obj, text = _model(tiny_city, cache_dir)
    counts = obj.ptr[obj.roads + 1] - obj.ptr[obj.roads]
    assert obj.num_items() > 2 and bool((counts >= 2).all())
    # a POI is closer (in the frozen text space, before training) to its own road mean
    feats = torch.nn.functional.normalize(text.features, dim=-1)
    roads = obj.roads
    means = torch.stack([feats[obj.members[obj.ptr[r] : obj.ptr[r + 1]]].mean(0) for r in roads])
    first = feats[obj.members[obj.ptr[roads]]]
    own = (first * torch.nn.functional.normalize(means, dim=-1)).sum(-1).mean()
    other = (first * torch.nn.functional.normalize(means.roll(1, 0), dim=-1)).sum(-1).mean()
    assert own > other


def test_training_step_changes_head_and_lowers_loss(tiny_city, cache_dir):
    model, obj, _text = _model(tiny_city, cache_dir)
    params = [p for m in obj.trainable() for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3)
    idx = torch.arange(obj.num_items())
    before = [p.detach().clone() for p in params]
    first = None
    for _ in range(30):
        loss = model("poi", idx, torch.Generator().manual_seed(0))
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
        opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, params, strict=True))
    assert loss.item() < first


def test_finetuning_trains_only_the_last_layers(tiny_city, cache_dir):
    from mfm.core.modality import is_frozen
    from mfm.plugins.osm.modality import OsmOptions

    city = City.load(tiny_city)
    ctx = Context(city, RunConfig(city=tiny_city), FeatureCache(cache_dir), torch.device("cpu"), 16)
    text = OsmText(OsmOptions(finetune_layers=1, max_length=32))
    text.prepare(ctx)
    trainable = [n for n, p in text.named_parameters() if not is_frozen(p)]
    assert any(n.startswith("encoder.encoder.layer.5.") for n in trainable)
    assert not any(n.startswith("encoder.encoder.layer.4.") for n in trainable)
    view = text.poi_view(torch.arange(8))
    view.emb.sum().backward()
    last = text.encoder.encoder.layer[5].output.dense.weight
    assert last.grad is not None and last.grad.abs().sum() > 0
    assert text.encoder.encoder.layer[0].output.dense.weight.grad is None
    # at init the fine-tuned path reproduces the frozen cached features
    frozen = OsmText(OsmOptions(max_length=32, precision="fp32"))
    frozen.prepare(ctx)
    frozen.head = text.head
    torch.testing.assert_close(frozen.poi_view(torch.arange(8)).emb, view.emb, atol=1e-4, rtol=1e-4)
