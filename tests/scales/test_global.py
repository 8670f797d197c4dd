"""L_global (Eq. 23-27): region star graphs, macro graph G vs. micro-swapped graph G+."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mfm.core.errors import MfmError
from mfm.core.losses import info_nce
from mfm.core.model import UrbanModel
from mfm.core.plugins import LOAD_ENV, load_registry
from mfm.plugins.osm.modality import OsmText
from mfm.scales.fusion import AttentiveFusion, GatedFusion, fold_views
from mfm.scales.global_ import GlobalObjective, GlobalOptions
from mfm.scales.graph_encoder import star_graphs
from tests.scales.fakes import (
    DIM,
    FakePoiView,
    FakeRegionView,
    FakeRegionView2,
    PoiMeanRegionView,
    fresh_text,
)


def _build(ctx, mods, **options):
    for m in mods:
        if not isinstance(m, OsmText):
            m.prepare(ctx)
    obj = GlobalObjective(GlobalOptions(**options))
    model = UrbanModel(mods, [obj], ctx.dim)
    assert obj.skip_reason(model, ctx) is None
    obj.prepare(model, ctx)
    return model, obj


def test_adjacency_graph(ctx, text):
    _, obj = _build(ctx, [fresh_text(ctx, text), FakeRegionView()], max_neighbours=3)
    geoms = ctx.city.regions.geometry.to_crs(ctx.city.crs)
    xy = ctx.city.xy("regions")
    for r in range(len(geoms)):
        got = obj.nbr[r][obj.nbr_mask[r]].numpy()
        touching = np.flatnonzero(geoms.distance(geoms.iloc[r]).to_numpy() <= 1.0)
        touching = touching[touching != r]
        assert len(got) == min(3, len(touching)) and set(got) <= set(touching)
        dist = np.linalg.norm(xy[got] - xy[r], axis=1)
        assert np.all(np.diff(dist) >= -1e-6)  # nearest centroids first
        assert np.all(
            dist <= np.sort(np.linalg.norm(xy[touching] - xy[r], axis=1))[len(got) - 1] + 1e-6
        )
    counts = np.bincount(ctx.city.poi_region(), minlength=len(geoms))
    assert obj.items.tolist() == np.flatnonzero(counts > 0).tolist()


def test_aligned_micro_macro_beats_shuffled(ctx, text):
    """With macro == micro (mean text view of the region's POIs), G+ == G exactly."""
    torch.manual_seed(0)  # the margin below depends on the random init of head and GAT
    fresh = fresh_text(ctx, text)
    mean_view = PoiMeanRegionView(fresh)
    model, obj = _build(ctx, [fresh, mean_view], max_pois_per_region=10_000, tau=0.02)
    idx = torch.arange(obj.num_items())
    aligned = model("global", idx, torch.Generator().manual_seed(0))
    nodes, mask, weight = obj._graph_nodes(obj.items[idx])
    uniq, inv = torch.unique(nodes[mask], return_inverse=True)
    e_g = obj.gat(obj.macro(model, uniq)[inv], star_graphs(mask, weight))
    assert torch.allclose(aligned, info_nce(e_g, e_g, 0.02), atol=1e-3)
    n = len(ctx.city.regions)
    mean_view.perm = torch.roll(torch.arange(n), 1)  # each region gets another's POI mean
    shuffled = model("global", idx, torch.Generator().manual_seed(0))
    assert aligned < shuffled - 0.05


def test_micro_samples_at_most_m_pois_without_replacement(ctx, text):
    fresh = fresh_text(ctx, text)
    model, obj = _build(ctx, [fresh, FakeRegionView()], max_pois_per_region=1)
    regions = obj.items
    with torch.no_grad():
        micro = obj.micro(model, regions, torch.Generator().manual_seed(0))
        emb = fresh.poi_view(torch.arange(len(ctx.city.pois))).emb
    for row, r in zip(micro, regions.tolist(), strict=True):
        members = obj.members[obj.ptr[r] : obj.ptr[r + 1]]
        assert torch.isclose(emb[members], row, atol=1e-5).all(1).any()  # exactly one POI
    obj.options.max_pois_per_region = 10_000
    with torch.no_grad():
        full = obj.micro(model, regions, torch.Generator().manual_seed(0))
    for row, r in zip(full, regions.tolist(), strict=True):
        members = obj.members[obj.ptr[r] : obj.ptr[r + 1]]
        assert torch.allclose(emb[members].mean(0), row, atol=1e-5)


def test_fold_keeps_e_where_a_view_is_missing():
    torch.manual_seed(0)
    a, b = torch.randn(6, DIM), torch.randn(6, DIM)
    fusers = torch.nn.ModuleDict({"b": AttentiveFusion(DIM, heads=4)})
    mask = torch.tensor([True, False, True, False, False, True])
    out, have = fold_views([("a", a, None), ("b", b, mask)], fusers)
    assert have.all() and torch.equal(out[~mask], a[~mask])
    assert not torch.isclose(out[mask], a[mask]).all(1).any()
    # a POI without the first view starts from the next one, unfused; none at all: not had
    first = torch.tensor([False, True, True, False, True, True])
    out, have = fold_views([("a", a * first[:, None], first), ("b", b, mask)], fusers)
    assert have.tolist() == (first | mask).tolist()
    assert torch.equal(out[0], b[0]) and torch.equal(out[1], a[1])


def test_gated_fusion_is_eq_24_25():
    torch.manual_seed(0)
    a, b = torch.randn(6, DIM), torch.randn(6, DIM)
    gate = GatedFusion(DIM)
    g = torch.sigmoid(torch.relu(gate.gate(torch.cat([a, b], -1))))
    assert torch.allclose(gate(a, b), g * a + (1 - g) * b) and (g >= 0.5).all()


def test_one_step_trains_every_trainable_module(ctx, text):
    fresh = fresh_text(ctx, text)
    mods = [fresh, FakePoiView(), FakeRegionView(), FakeRegionView2()]
    model, obj = _build(ctx, mods, max_pois_per_region=4)
    trainable = obj.trainable(model)
    assert {id(m) for m in trainable} == {
        id(obj.gat),
        id(obj.poi_fusion),
        id(obj.macro_fusion),
        *(id(m) for m in mods),
    }
    assert list(obj.poi_fusion) == ["fakepoi"] and list(obj.macro_fusion) == ["fakeregion2"]
    params = [p for m in trainable for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-2)
    before = [p.detach().clone() for p in params]
    loss = model("global", torch.arange(obj.num_items()), torch.Generator().manual_seed(0))
    opt.zero_grad()
    loss.backward()
    for m in trainable:
        for name, p in m.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{type(m).__name__}.{name}"
    opt.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, params, strict=True))


def test_swap_rate_and_determinism(ctx, text):
    fresh = fresh_text(ctx, text)
    model, obj = _build(ctx, [fresh, FakeRegionView()], swap_prob=0.0, swap_centre=False)
    idx = torch.arange(obj.num_items())
    nothing = model("global", idx, torch.Generator().manual_seed(0))
    nodes, mask, weight = obj._graph_nodes(obj.items[idx])
    uniq, inv = torch.unique(nodes[mask], return_inverse=True)
    e_g = obj.gat(obj.macro(model, uniq)[inv], star_graphs(mask, weight))
    assert torch.allclose(nothing, info_nce(e_g, e_g), atol=1e-5)  # nothing swapped: G+ == G
    obj.options.swap_centre = True
    a = model("global", idx, torch.Generator().manual_seed(1))
    b = model("global", idx, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a > nothing


def test_region_embeddings_cover_every_region(ctx, text):
    fresh = fresh_text(ctx, text)
    model, obj = _build(ctx, [fresh, FakeRegionView()], chunk=5)
    emb = obj.region_embeddings(model)
    assert emb.shape == (len(ctx.city.regions), DIM) and torch.isfinite(emb).all()
    nodes, mask, weight = obj._graph_nodes(torch.arange(3))
    uniq, inv = torch.unique(nodes[mask], return_inverse=True)
    with torch.no_grad():
        direct = obj.gat(obj.macro(model, uniq)[inv], star_graphs(mask, weight))
    assert torch.allclose(emb[:3], direct, atol=1e-5)


def test_prepare_rejects_heads_that_do_not_divide_dim(ctx, text):
    fresh = fresh_text(ctx, text)
    with pytest.raises(MfmError, match="rmha_heads"):
        _build(ctx, [fresh, FakeRegionView()], rmha_heads=5)


def test_skip_reasons(ctx):
    obj = GlobalObjective()
    no_region_view = UrbanModel([OsmText(), FakePoiView()], [], DIM)
    assert obj.skip_reason(no_region_view, ctx) == "needs a macro view: add sat or trajectory"
    no_poi_view = UrbanModel([FakeRegionView()], [], DIM)
    assert "add osm" in obj.skip_reason(no_poi_view, ctx)
    no_regions = SimpleNamespace(city=SimpleNamespace(has=lambda layer: layer != "regions"))
    both = UrbanModel([OsmText(), FakeRegionView()], [], DIM)
    assert "regions layer" in obj.skip_reason(both, no_regions)
    assert obj.skip_reason(both, ctx) is None


def test_registered_as_an_always_on_objective_plugin(monkeypatch):
    monkeypatch.setenv(LOAD_ENV, "none")
    reg = load_registry(extra={"scale-global": "mfm.scales.global_"})
    info = reg.plugins["scale-global"]
    assert info.objectives == {"global": GlobalObjective} and not info.is_modality_plugin
