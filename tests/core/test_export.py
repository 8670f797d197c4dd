"""The exported region embedding depends on every selected modality."""

import numpy as np
import pytest
import torch

from mfm.core.city import City
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
    assert set(model.modalities) == {"osm", "polygon", "svi", "sat", "trajectory"}
    gen = torch.Generator().manual_seed(0)
    for name, mod in model.modalities.items():
        saved = mod.features.clone()
        mod.features.copy_(saved[torch.randperm(len(saved), generator=gen)])  # across items
        try:
            _, _, region = export_embeddings(model, objectives, city, cpu)
        finally:
            mod.features.copy_(saved)
        assert np.abs(region - base).max() > 1e-4, f"region embedding ignores {name}"
