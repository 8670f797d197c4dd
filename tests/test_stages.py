"""Every stage of the full model trains what it is meant to train (all five plugins)."""

import pytest
import torch

from mfm.core.bundle.city import City
from mfm.core.cache import FeatureCache
from mfm.core.config import make_config, plugin_options
from mfm.core.modality import Context
from mfm.core.model import UrbanModel
from mfm.core.pipeline import plan_run


@pytest.fixture(scope="module")
def full_model(tiny_city, cache_dir):
    config = make_config(
        city=tiny_city,
        dim=32,
        plugin={
            "svi": {"image_size": 32},
            "sat": {"image_size": 32},
            "polygon": {"image_size": 32},
        },
    )
    city = City.load(tiny_city)
    plan = plan_run(config, city)
    assert plan.objectives == ["poi", "svi", "local", "sate", "flow", "global"]
    ctx = Context(city, config, FeatureCache(cache_dir), torch.device("cpu"), 32, quiet=True)
    for mod in plan.modalities:
        mod.prepare(ctx)
    by_name = {n: c for p in plan.plugins for n, c in p.objectives.items()}
    objectives = [
        by_name[n](plugin_options(config, "objective", n, by_name[n].Options))
        for n in plan.objectives
    ]
    model = UrbanModel(plan.modalities, objectives, 32)
    torch.manual_seed(0)
    for obj in objectives:
        obj.prepare(ctx)
    return model, objectives


@pytest.mark.parametrize("stage", ["poi", "svi", "local", "sate", "flow", "global"])
def test_stage_trains_its_modules(full_model, stage):
    model, objectives = full_model
    obj = next(o for o in objectives if o.name == stage)
    modules = obj.trainable()
    assert modules, f"{stage} trains nothing"
    params = {id(p): p for m in modules for p in m.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in params)
    before = {k: p.detach().clone() for k, p in params.items()}
    opt = torch.optim.AdamW(list(params.values()), lr=1e-2)
    idx = torch.arange(min(obj.num_items(), 32))
    loss = model(stage, idx, torch.Generator().manual_seed(1))
    opt.zero_grad()
    loss.backward()
    names = {id(p): n for n, p in model.named_parameters()}
    no_grad = [names[k] for k, p in params.items() if p.grad is None or p.grad.abs().sum() == 0]
    assert not no_grad, f"{stage}: no gradient reaches {no_grad}"
    opt.step()
    unchanged = [names[k] for k, p in params.items() if torch.equal(before[k], p.detach())]
    assert not unchanged, f"{stage}: not updated {unchanged}"
