"""Objectives contrast through their own head; the exported embeddings come from before it."""

import numpy as np
import pytest
import torch

from mfm.core.bundle.city import City
from mfm.core.export import export_embeddings
from mfm.core.heads import ContrastHead
from mfm.core.losses import info_nce
from tests.conftest import osm_road_config


@pytest.fixture(scope="module")
def run_with_heads(osm_road_run):
    return osm_road_run


def test_contrast_is_info_nce_through_the_head(run_with_heads):
    obj = run_with_heads.model.objectives["global"]
    assert isinstance(obj.contrast_head, ContrastHead)
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 32, generator=gen), torch.randn(8, 32, generator=gen)
    with torch.no_grad():
        expected = info_nce(obj.contrast_head(a), obj.contrast_head(b), obj.options.tau)
        assert obj.contrast(a, b) == pytest.approx(float(expected))
        assert obj.contrast(a, b) != pytest.approx(float(info_nce(a, b, obj.options.tau)))
    assert obj.contrast_head in obj.stage_modules()


def test_every_stage_trains_its_head(run_with_heads, tiny_city, cache_dir, tmp_path):
    from mfm.core.cache import FeatureCache
    from mfm.core.pipeline import build_model, plan_run
    from mfm.core.plugins import load_registry
    from mfm.core.trainer import init_runtime

    trained = run_with_heads.model
    config = osm_road_config(tiny_city, tmp_path / "x", cache_dir)
    city = City.load(tiny_city)
    plan = plan_run(config, city, load_registry())
    init, _ = build_model(plan, city, config, FeatureCache(cache_dir), init_runtime("cpu"), True)
    for name, obj in trained.objectives.items():
        before = init.objectives[name].contrast_head[0].weight
        assert not torch.equal(obj.contrast_head[0].weight, before), f"{name}'s head did not train"


def test_exported_embeddings_do_not_pass_through_the_head(run_with_heads, tiny_city):
    model = run_with_heads.model
    objectives = list(model.objectives.values())
    city = City.load(tiny_city)
    cpu = torch.device("cpu")
    poi, _, region = export_embeddings(model, objectives, city, cpu)
    with torch.no_grad():
        for obj in objectives:
            for p in obj.contrast_head.parameters():
                p.add_(1.0)
    poi2, _, region2 = export_embeddings(model, objectives, city, cpu)
    np.testing.assert_array_equal(poi, poi2)
    np.testing.assert_array_equal(region, region2)


def test_contrast_head_off_leaves_the_objectives_without_one(tiny_city, cache_dir, tmp_path):
    from mfm.core.config import make_config
    from mfm.core.pipeline import run

    config = make_config(
        city=tiny_city,
        out=tmp_path / "run",
        epochs=1,
        dim=32,
        quiet=True,
        cache_dir=cache_dir,
        plugins=["osm"],
        scales="micro,global",
        contrast_head=False,
    )
    result = run(config)
    assert not any("contrast_head" in k for k in result.model.state_dict())
