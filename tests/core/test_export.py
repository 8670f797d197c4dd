"""The exported region embedding depends on every selected modality."""

import numpy as np
import pytest
import torch

from mfm.core.bundle.city import City
from mfm.core.export import export_embeddings


@pytest.fixture(scope="module")
def trained(tiny_city, cache_dir, tmp_path_factory):
    from mfm.core.config import make_config
    from mfm.core.pipeline import run

    out = tmp_path_factory.mktemp("export") / "run"
    config = make_config(city=tiny_city, out=out, epochs=1, dim=32, quiet=True, cache_dir=cache_dir)
    return run(config)


def test_region_embedding_depends_on_every_modality(trained, tiny_city):
    model = trained.model
    objectives = list(model.objectives.values())
    city = City.load(tiny_city)
    cpu = torch.device("cpu")
    _, _, base = export_embeddings(model, objectives, city, cpu)
    np.testing.assert_allclose(base, trained.region, atol=1e-6)  # what the run wrote
    assert set(model.modalities) == {"osm", "polygon", "road", "svi", "sat", "trajectory", "flows"}
    gen = torch.Generator().manual_seed(0)
    for name, mod in model.modalities.items():
        saved = mod.features.clone()
        mod.features.copy_(saved[torch.randperm(len(saved), generator=gen)])  # across items
        try:
            _, _, region = export_embeddings(model, objectives, city, cpu)
        finally:
            mod.features.copy_(saved)
        assert np.abs(region - base).max() > 1e-4, f"region embedding ignores {name}"


def test_region_embedding_blocks_say_what_is_there_and_how_much(tiny_city):
    from mfm.core.export import region_embedding

    city = City.load(tiny_city)
    rng = np.random.default_rng(0)
    poi = rng.standard_normal((len(city.pois), 8)).astype(np.float32)
    graph = rng.standard_normal((len(city.regions), 5)).astype(np.float32)
    emb = region_embedding(city, poi, graph)
    assert emb.shape == (len(city.regions), 5 + 8 + 8 + 3)
    np.testing.assert_allclose(np.linalg.norm(emb[:, :5], axis=1), 1.0, atol=1e-5)
    mean, amount, size = emb[:, 5:13], emb[:, 13:21], emb[:, 21:]
    count = city.poi_counts()
    r = int(np.argmax(count))
    owner = city.poi_region()
    expected = poi[owner == r].mean(axis=0)
    np.testing.assert_allclose(mean[r], expected / np.linalg.norm(expected), atol=1e-5)
    np.testing.assert_allclose(amount[r], mean[r] * count[r] / count.mean(), rtol=1e-5)
    np.testing.assert_allclose(size.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(size.std(axis=0), 1 / np.sqrt(3), rtol=1e-4)
    assert np.corrcoef(size[:, 0], np.log1p(count))[0, 1] > 0.999
