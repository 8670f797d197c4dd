"""L_global (Eq. 23-27): region star graphs, macro graph G vs. micro-swapped graph G+."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mfm.core.errors import MfmError
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
    assert obj.skip_reason(ctx.city) is None
    obj.prepare(ctx)
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


def test_loss_is_near_chance_when_macro_and_micro_are_shuffled_across_regions(ctx, text):
    """Trained, the pair is matched through the macro/micro alignment alone: shuffle the
    macro views across regions and the loss goes back to chance (no shortcut left)."""
    torch.manual_seed(0)
    fresh = fresh_text(ctx, text)
    macro = PoiMeanRegionView(fresh)  # the region's POI mean: alignable with micro
    model, obj = _build(ctx, [fresh, macro], max_pois_per_region=10_000)
    params = [p for m in obj.trainable() for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=3e-3)
    idx = torch.arange(obj.num_items())
    for step in range(150):
        loss = model("global", idx, torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    chance = float(np.log(len(idx)))
    with torch.no_grad():
        aligned = float(model("global", idx, torch.Generator().manual_seed(999)))
        macro.perm = torch.roll(torch.arange(len(ctx.city.regions)), 3)
        shuffled = float(model("global", idx, torch.Generator().manual_seed(999)))
    assert aligned < 0.6 * chance, (aligned, chance)
    assert shuffled > 0.9 * chance, (shuffled, chance)


def test_micro_samples_at_most_m_pois_without_replacement(ctx, text):
    fresh = fresh_text(ctx, text)
    _model, obj = _build(ctx, [fresh, FakeRegionView()], max_pois_per_region=1)
    torch.nn.init.zeros_(obj.size.weight)  # no count term: the micro view is the POI mean
    torch.nn.init.zeros_(obj.size.bias)
    regions = obj.items
    with torch.no_grad():
        micro = obj.micro(regions, torch.Generator().manual_seed(0))
        emb = fresh.poi_view(torch.arange(len(ctx.city.pois))).emb
    for row, r in zip(micro, regions.tolist(), strict=True):
        members = obj.members[obj.ptr[r] : obj.ptr[r + 1]]
        assert torch.isclose(emb[members], row, atol=1e-5).all(1).any()  # exactly one POI
    obj.options.max_pois_per_region = 10_000
    with torch.no_grad():
        full = obj.micro(regions, torch.Generator().manual_seed(0))
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
    trainable = obj.trainable()
    assert {id(m) for m in trainable} == {
        id(obj.gat),
        id(obj.size),
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


@pytest.mark.parametrize("swap_prob", [0.0, 0.5, 1.0])
def test_no_node_carries_the_same_view_in_both_graphs(ctx, text, swap_prob):
    fresh = fresh_text(ctx, text)
    model, obj = _build(ctx, [fresh, FakeRegionView()], swap_prob=swap_prob)
    calls = []
    node_views = obj._node_views

    def spy(nodes, micro_at, rng, share=1.0):
        calls.append((nodes, micro_at))
        return node_views(nodes, micro_at, rng, share)

    obj._node_views = spy
    idx = torch.arange(obj.num_items())
    a = model("global", idx, torch.Generator().manual_seed(1))
    (nodes, micro_g), (same, micro_pos) = calls
    assert torch.equal(nodes, same)
    has_micro = obj.counts[nodes] > 0
    assert torch.equal(micro_g ^ micro_pos, has_micro)  # the other view wherever there is one
    _, mask, _ = obj._graph_nodes(obj.items[idx])
    centre = torch.zeros_like(mask)
    centre[:, 0] = True
    assert not micro_g[centre[mask]].any() and micro_pos[centre[mask]].all()
    share = micro_g[~centre[mask] & has_micro].float().mean()
    assert abs(float(share) - swap_prob) < 0.2
    b = model("global", idx, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_region_embeddings_cover_every_region(ctx, text):
    fresh = fresh_text(ctx, text)
    _model, obj = _build(ctx, [fresh, FakeRegionView()], chunk=5)
    emb = obj.region_embeddings()
    assert emb.shape == (len(ctx.city.regions), 2 * DIM) and torch.isfinite(emb).all()
    nodes, mask, weight = obj._graph_nodes(torch.arange(3))
    uniq, inv = torch.unique(nodes[mask], return_inverse=True)
    with torch.no_grad():
        direct = obj.gat(obj.macro(uniq)[inv], star_graphs(mask, weight))
    unit = torch.nn.functional.normalize(direct, dim=1)
    assert torch.allclose(emb[:3, :DIM], unit, atol=1e-5)  # the macro graph's E_G first


@pytest.mark.parametrize("variant", ["micro/micro", "macro/macro"])
def test_one_view_variants_train(ctx, text, variant):
    fresh = fresh_text(ctx, text)
    mods = [fresh, FakePoiView()] if variant == "micro/micro" else [FakeRegionView()]
    model, obj = _build(ctx, mods)
    assert obj.variant == variant and variant in obj.plan_note(ctx.city)
    idx = torch.arange(obj.num_items())
    loss = model("global", idx, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    loss.backward()
    assert obj.gat.parameters().__next__().grad is not None
    emb = obj.region_embeddings()
    assert emb.shape == (len(ctx.city.regions), DIM) and torch.isfinite(emb).all()


def test_prepare_rejects_heads_that_do_not_divide_dim(ctx, text):
    fresh = fresh_text(ctx, text)
    with pytest.raises(MfmError, match="rmha_heads"):
        _build(ctx, [fresh, FakeRegionView()], rmha_heads=5)


def _skip(mods, city):
    obj = GlobalObjective()
    UrbanModel(mods, [obj], DIM)  # composing the model binds the objective to the views
    return obj.skip_reason(city)


def test_skip_reasons(ctx):
    assert _skip([OsmText(), FakePoiView()], ctx.city) is None  # micro/micro
    assert _skip([FakeRegionView()], ctx.city) is None  # macro/macro
    assert "needs a POI view" in _skip([], ctx.city)
    no_regions = SimpleNamespace(has=lambda layer: layer != "regions")
    assert "regions layer" in _skip([OsmText(), FakeRegionView()], no_regions)
    assert _skip([OsmText(), FakeRegionView()], ctx.city) is None


def test_registered_as_an_always_on_objective_plugin(monkeypatch):
    monkeypatch.setenv(LOAD_ENV, "none")
    reg = load_registry(extra={"scale-global": "mfm.scales.global_"})
    info = reg.plugins["scale-global"]
    assert info.objectives == {"global": GlobalObjective} and not info.is_modality_plugin


def test_neighbours_can_be_kept_out_of_the_negatives(ctx, text):
    fresh = fresh_text(ctx, text)
    model, obj = _build(ctx, [fresh, FakeRegionView()], exclude_neighbours=True)
    regions = obj.items
    adjacent = obj._adjacent(regions)
    for i, r in enumerate(regions.tolist()):
        nbrs = set(obj.nbr[r][obj.nbr_mask[r]].tolist())
        assert {regions[j].item() for j in torch.nonzero(adjacent[i]).flatten()} == (
            nbrs & set(regions.tolist())
        )
    n = obj.num_items()
    assert obj.candidates(n) < n  # the chance level counts only real negatives
    loss = model("global", torch.arange(n), torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)


def test_size_code_is_the_standardized_region_size(ctx, text):
    from mfm.core.export import standardized

    _model, obj = _build(ctx, [fresh_text(ctx, text)])
    expected = standardized(ctx.city.region_size())
    np.testing.assert_allclose(obj.size_inputs.numpy(), expected, atol=1e-6)
    assert obj.size_inputs.shape == (len(ctx.city.regions), 3)


@pytest.mark.parametrize("residual", [True, False])
def test_residual_option_reaches_the_gat(ctx, text, residual):
    """`residual` (default on) gives E_G a skip term of the region's own view."""
    options = {} if residual else {"residual": False}
    _, obj = _build(ctx, [fresh_text(ctx, text), FakeRegionView()], **options)
    assert all((conv.res is not None) == residual for conv in obj.gat.convs)
