"""L_local (Eq. 15-16): local star graphs, text graph G vs. multi-view graph G+."""

from __future__ import annotations

import numpy as np
import torch

from mfm.core.losses import info_nce
from mfm.core.model import UrbanModel
from mfm.core.plugins import LOAD_ENV, load_registry
from mfm.plugins.osm.modality import OsmText
from mfm.scales.graph_encoder import star_graphs
from mfm.scales.local import LocalObjective, LocalOptions
from tests.scales.fakes import (
    DIM,
    AbsentPoiView,
    FakePoiView,
    MirrorView,
    fresh_text,
)


def _build(ctx, text, others, **options):
    """A model of (a fresh copy of) the text view plus ``others``, the objective prepared."""
    fresh = fresh_text(ctx, text)
    for m in others:
        m.prepare(ctx)
    obj = LocalObjective(LocalOptions(**options))
    model = UrbanModel([fresh, *others], [obj], ctx.dim)
    assert obj.skip_reason(ctx.city) is None
    obj.prepare(ctx)
    return model, obj


def test_neighbours_within_radius_capped_and_without_self(ctx, text):
    _, obj = _build(ctx, text, [FakePoiView()], max_dist=150.0, max_neighbours=4)
    xy = ctx.city.xy("pois")
    full = np.linalg.norm(xy[:, None] - xy[None], axis=-1)  # brute force: the city is tiny
    np.fill_diagonal(full, np.inf)
    for i in range(len(xy)):
        got = obj.nbr[i][obj.nbr_mask[i]].numpy()
        within = np.flatnonzero(full[i] <= 150.0)
        assert len(got) == min(4, len(within)) and i not in got
        assert set(got) <= set(within)
        if len(got):  # the nearest ones
            assert np.all(full[i, got] <= np.sort(full[i, within])[len(got) - 1] + 1e-6)
        w = obj.nbr_weight[i][obj.nbr_mask[i]]
        if len(got):
            assert w[0] == 1.0 and torch.all(w[1:] <= w[:-1] + 1e-6)  # nearest weighs most
    assert obj.nbr_mask.sum(1).min() < 4  # the radius, not only the cap, limits some POIs


def test_aligned_positive_graph_beats_shuffled(ctx, text):
    """G+ built from a view equal to the text (G+ == G) scores lower than misaligned views."""
    idx = torch.arange(0, 150, 5)
    model, obj = _build(
        ctx, text, [MirrorView(shuffle=False)], drop_prob=0.0, max_neighbours=2, tau=0.05
    )
    aligned = model("local", idx, torch.Generator().manual_seed(0))
    nodes, mask, weight = obj._graph_nodes(idx)
    uniq, inv = torch.unique(nodes[mask], return_inverse=True)
    e_g = obj.gat(model.modalities["osm"].poi_view(uniq).emb[inv], star_graphs(mask, weight))
    assert torch.allclose(aligned, info_nce(e_g, e_g, 0.05), atol=1e-4)  # G+ is exactly G
    model.modalities["mirror"].shuffle = True
    shuffled = model("local", idx, torch.Generator().manual_seed(0))
    assert aligned < shuffled - 0.1


def test_positive_never_uses_a_view_the_poi_lacks(ctx, text):
    idx = torch.arange(0, 150, 5)
    model, _ = _build(ctx, text, [MirrorView(), AbsentPoiView()], drop_prob=0.0)
    with_absent = model("local", idx, torch.Generator().manual_seed(0))
    model_ref, _ = _build(ctx, text, [MirrorView()], drop_prob=0.0)
    reference = model_ref("local", idx, torch.Generator().manual_seed(0))
    assert torch.allclose(with_absent, reference, atol=1e-5)


def test_node_dropping_changes_the_positive_and_keeps_the_centre(ctx, text):
    idx = torch.arange(0, 150, 5)
    model, _ = _build(ctx, text, [MirrorView()], drop_prob=0.0)
    base = model("local", idx, torch.Generator().manual_seed(0))
    model.objectives["local"].options.drop_prob = 0.9
    dropped = model("local", idx, torch.Generator().manual_seed(0))
    # G+ lost nodes, so it no longer equals G; the centre is kept, so the loss stays finite
    assert torch.isfinite(dropped) and not torch.isclose(dropped, base, atol=1e-5)


def test_one_step_trains_every_trainable_module(ctx, text):
    model, obj = _build(ctx, text, [FakePoiView()])
    mods = obj.trainable()
    assert {id(m) for m in mods} == {id(obj.gat), *(id(m) for m in model.modalities.values())}
    params = [p for m in mods for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-2)
    before = [p.detach().clone() for p in params]
    loss = model("local", torch.arange(0, 150, 3), torch.Generator().manual_seed(0))
    opt.zero_grad()
    loss.backward()
    for m in mods:
        for name, p in m.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{type(m).__name__}.{name}"
    opt.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, params, strict=True))


def test_loss_is_deterministic_for_a_seed(ctx, text):
    model, _ = _build(ctx, text, [FakePoiView()])
    a = model("local", torch.arange(40), torch.Generator().manual_seed(3))
    b = model("local", torch.arange(40), torch.Generator().manual_seed(3))
    c = model("local", torch.arange(40), torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_poi_embeddings_are_the_text_graph_output(ctx, text):
    model, obj = _build(ctx, text, [FakePoiView()], chunk=64)
    emb = obj.poi_embeddings()
    assert emb.shape == (len(ctx.city.pois), DIM) and torch.isfinite(emb).all()
    nodes, mask, weight = obj._graph_nodes(torch.arange(5))
    uniq, inv = torch.unique(nodes[mask], return_inverse=True)
    with torch.no_grad():
        direct = obj.gat(model.modalities["osm"].poi_view(uniq).emb[inv], star_graphs(mask, weight))
    assert torch.allclose(emb[:5], direct, atol=1e-5)


def _skip(mods, city):
    obj = LocalObjective()
    UrbanModel(mods, [obj], DIM)  # composing the model binds the objective to the views
    return obj.skip_reason(city)


def test_skip_reasons(ctx):
    assert _skip([OsmText()], ctx.city) is None  # text/text: dropout copies
    assert "add osm" in _skip([FakePoiView()], ctx.city)
    assert "add osm" in _skip([], None)
    assert _skip([OsmText(), FakePoiView()], ctx.city) is None


def test_registered_as_an_always_on_objective_plugin(monkeypatch):
    monkeypatch.setenv(LOAD_ENV, "none")  # no entry points: only the module given here
    reg = load_registry(extra={"scale-local": "mfm.scales.local"})
    info = reg.plugins["scale-local"]
    assert info.objectives == {"local": LocalObjective} and not info.is_modality_plugin
    assert info in reg.select([])


def test_text_only_runs_on_dropout_copies(ctx, text):
    obj = LocalObjective()
    model = UrbanModel([fresh_text(ctx, text)], [obj], ctx.dim)
    assert obj.skip_reason(ctx.city) is None and "text/text" in obj.plan_note(ctx.city)
    obj.prepare(ctx)
    idx = torch.arange(32)
    a = model("local", idx, torch.Generator().manual_seed(0))
    b = model("local", idx, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and 0 < float(a.detach()) < np.log(32) + 1
    a.backward()
    assert all(p.grad is not None for p in obj.gat.parameters())
